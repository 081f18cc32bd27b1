"""tritonclient, unchanged, against a running mizzen-serve: HTTP with JSON tensors, HTTP with binary
tensors, and gRPC. Every answer is compared with onnxruntime in Python on the same model and inputs."""
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from oip_reference import INPUTS, SERVERS, assert_same, datatype, multi_feeds, reference
from tritonclient.utils import InferenceServerException


def infer_http(model, feeds, binary, compression=None):
    client = httpclient.InferenceServerClient(SERVERS[model]["http"])
    inputs = []
    for name, array in feeds.items():
        i = httpclient.InferInput(name, list(array.shape), datatype(array))
        # FP16 has no JSON form: it always travels binary.
        i.set_data_from_numpy(array, binary_data=binary or array.dtype == np.float16)
        inputs.append(i)
    want = reference(model, feeds)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary or want[n].dtype == np.float16) for n in want]
    result = client.infer(
        model,
        inputs,
        outputs=outputs,
        request_id="py-1",
        request_compression_algorithm=compression,
        response_compression_algorithm=compression,
    )
    assert result.get_response()["id"] == "py-1"
    return result, want


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("model", ["iris", "mlp", "multi"])
def test_tritonclient_http(model, binary):
    feeds = multi_feeds() if model == "multi" else {"float_input": INPUTS[model]}
    result, want = infer_http(model, feeds, binary)
    for name, array in want.items():
        assert_same(result.as_numpy(name), array, name)


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_http_compressed_requests(compression, binary):
    feeds = multi_feeds()
    result, want = infer_http("multi", feeds, binary, compression)
    for name, array in want.items():
        assert_same(result.as_numpy(name), array, name)


@pytest.mark.parametrize("model", ["iris", "mlp", "multi"])
def test_tritonclient_grpc(model):
    client = grpcclient.InferenceServerClient(SERVERS[model]["grpc"])
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(model)
    meta = client.get_model_metadata(model, as_json=True)
    assert meta["name"] == model
    feeds = multi_feeds() if model == "multi" else {"float_input": INPUTS[model]}
    inputs = []
    for name, array in feeds.items():
        i = grpcclient.InferInput(name, list(array.shape), datatype(array))
        i.set_data_from_numpy(array)
        inputs.append(i)
    result = client.infer(model, inputs)
    for name, array in reference(model, feeds).items():
        assert_same(result.as_numpy(name), array, name)


def test_tritonclient_http_metadata_and_health():
    client = httpclient.InferenceServerClient(SERVERS["iris"]["http"])
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("iris")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("iris")
    assert meta["inputs"] == [{"name": "float_input", "datatype": "FP32", "shape": [-1, 4]}]


def test_tritonclient_sees_errors_as_exceptions():
    http = httpclient.InferenceServerClient(SERVERS["iris"]["http"])
    bad = httpclient.InferInput("float_input", [1, 5], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 5), dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"shape \[1, 5\]"):
        http.infer("iris", [bad])
    with pytest.raises(InferenceServerException, match="unknown model"):
        http.infer("nope", [bad])
    grpc = grpcclient.InferenceServerClient(SERVERS["iris"]["grpc"])
    gbad = grpcclient.InferInput("float_input", [1, 5], "FP32")
    gbad.set_data_from_numpy(np.zeros((1, 5), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT"):
        grpc.infer("iris", [gbad])
