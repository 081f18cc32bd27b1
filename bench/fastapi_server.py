"""The baseline: the common Python way to serve an ONNX model, FastAPI + onnxruntime, speaking the Open
Inference Protocol v2's JSON infer request, so the same load generator and request drive it.

  MODEL=path/to/model.onnx MODEL_NAME=iris uvicorn fastapi_server:app --workers 2
"""
import os
from typing import Any, List, Optional

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}

session = ort.InferenceSession(os.environ["MODEL"], providers=["CPUExecutionProvider"])
model_name = os.environ.get("MODEL_NAME", "model")
app = FastAPI()


class Input(BaseModel):
    name: str
    shape: List[int]
    datatype: str
    data: Any


class RequestedOutput(BaseModel):
    name: str


class InferRequest(BaseModel):
    id: Optional[str] = None
    inputs: List[Input]
    outputs: Optional[List[RequestedOutput]] = None


@app.get("/v2/health/ready")
def ready():
    return {}


@app.post("/v2/models/{name}/infer")
def infer(name: str, request: InferRequest):
    if name != model_name:
        raise HTTPException(status_code=404, detail=f"unknown model {name}")
    feeds = {i.name: np.asarray(i.data, dtype=DTYPES[i.datatype]).reshape(i.shape) for i in request.inputs}
    wanted = [o.name for o in request.outputs] if request.outputs else None
    results = session.run(wanted, feeds)
    names = wanted or [o.name for o in session.get_outputs()]
    return {
        "model_name": model_name,
        "id": request.id,
        "outputs": [
            {"name": n, "datatype": NAMES[r.dtype], "shape": list(r.shape), "data": r.reshape(-1).tolist()}
            for n, r in zip(names, results)
        ],
    }
