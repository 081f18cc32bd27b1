"""The KServe Python SDK, unchanged, against a running mizzen-serve over REST and gRPC. A process of its own:
KServe's and tritonclient's generated protobuf modules both define package `inference` and cannot be
imported into one process."""
import asyncio

from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from oip_reference import INPUTS, SERVERS, assert_same, reference


def test_kserve_sdk_rest_and_grpc():
    x = INPUTS["iris"]
    want = reference("iris", {"float_input": x})

    async def run():
        rest = InferenceRESTClient(RESTConfig(protocol="v2"))
        i = InferInput(name="float_input", shape=list(x.shape), datatype="FP32")
        i.set_data_from_numpy(x, binary_data=False)
        res = await rest.infer(f"http://{SERVERS['iris']['http']}", InferRequest(model_name="iris", infer_inputs=[i]), model_name="iris")
        await rest.close()
        grpc = InferenceGRPCClient(SERVERS["iris"]["grpc"])
        gi = InferInput(name="float_input", shape=list(x.shape), datatype="FP32")
        gi.set_data_from_numpy(x)
        gres = await grpc.infer(InferRequest(model_name="iris", infer_inputs=[gi]))
        await grpc.close()
        return res, gres

    res, gres = asyncio.run(run())
    for r in (res, gres):
        outputs = {o.name: o.as_numpy() for o in r.outputs}
        assert_same(outputs["label"], want["label"], "label")
        assert_same(outputs["probabilities"], want["probabilities"], "probabilities")
