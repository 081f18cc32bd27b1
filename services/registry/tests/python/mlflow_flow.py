"""Drives mizzen-registry with the real MLflow client (mlflow-skinny), as a user's notebook or CI script
would: a run with params, metrics, tags and an uploaded model directory, a registered model, versions, an
alias moved, a download of models:/NAME@ALIAS compared byte for byte, paging, renames, tags and every
error case. Run with MLFLOW_TRACKING_URI=URL.

  mlflow_flow.py flow WORKDIR            the whole flow; prints a JSON summary
  mlflow_flow.py after-restart WORKDIR   what the flow left, read back after the registry restarted
"""
import hashlib
import json
import os
import sys
import time

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

mode, work = sys.argv[1], sys.argv[2]
url = os.environ["MLFLOW_TRACKING_URI"]
c = MlflowClient(tracking_uri=url, registry_uri=url)


def expect(call, code, what):
    try:
        call()
    except MlflowException as e:
        assert e.error_code == code, f"{what}: {e.error_code} {e.message}"
        return e.message
    raise AssertionError(f"{what}: no error")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def download(uri, into):
    dst = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=os.path.join(work, into))
    return sha256(os.path.join(dst, "model.onnx"))


if mode == "flow":
    exp = c.create_experiment("iris-training", tags={"team": "ml"})
    assert c.get_experiment(exp).artifact_location == f"mlflow-artifacts:/{exp}"
    assert c.get_experiment_by_name("iris-training").experiment_id == exp
    assert c.get_experiment_by_name("no-such-experiment") is None
    run = c.create_run(exp, run_name="trial-0", tags={"mizzen.dev/trainingjob": "iris"})
    rid = run.info.run_id
    c.log_param(rid, "l2", "1.0")
    c.log_param(rid, "l2", "1.0")  # the same value again is fine
    c.log_metric(rid, "accuracy", 0.9, step=0)
    c.log_metric(rid, "accuracy", 0.93, step=1)
    now = int(time.time() * 1000)
    c.log_batch(rid, metrics=[Metric("f1", 0.91, now, 0)], params=[Param("hiddenLayers", "64")],
                tags=[RunTag("dataset", "s3://data/iris.csv")])
    model = os.path.join(work, "model")
    os.makedirs(model)
    with open(os.path.join(model, "model.onnx"), "wb") as f:
        f.write(os.urandom(3 << 20))
    with open(os.path.join(model, "model.json"), "w") as f:
        json.dump({"algorithm": "mlp"}, f)
    c.log_artifacts(rid, model, artifact_path="model")
    c.set_terminated(rid)
    r = c.get_run(rid)
    assert r.info.status == "FINISHED" and r.info.end_time, r.info
    assert r.info.run_name == "trial-0"
    assert r.data.metrics == {"accuracy": 0.93, "f1": 0.91}, r.data.metrics
    assert r.data.params == {"l2": "1.0", "hiddenLayers": "64"}, r.data.params
    assert r.data.tags["dataset"] == "s3://data/iris.csv"
    assert [a.path for a in c.list_artifacts(rid, "model")] == ["model/model.json", "model/model.onnx"]
    found = c.search_runs([exp], filter_string="metrics.accuracy > 0.92 and params.l2 = '1.0'")
    assert [x.info.run_id for x in found] == [rid], found

    c.create_registered_model("iris", tags={"owner": "ml"}, description="iris classifier")
    source = f"{run.info.artifact_uri}/model"
    v1 = c.create_model_version("iris", source, run_id=rid)
    assert (v1.version, v1.status, v1.source, v1.run_id) == ("1", "READY", source, rid), v1
    digest = sha256(os.path.join(model, "model.onnx"))
    assert v1.tags["mizzen.artifact.sha256"] == digest and v1.tags["mizzen.artifact.size"] == str(3 << 20)
    c.set_registered_model_alias("iris", "champion", "1")
    assert download("models:/iris@champion", "by-alias") == digest
    assert download("models:/iris/1", "by-version") == digest
    v2 = c.create_model_version("iris", source, run_id=rid, description="retrained")
    assert v2.version == "2"
    c.set_registered_model_alias("iris", "champion", "2")
    assert c.get_model_version_by_alias("iris", "champion").version == "2"
    assert c.get_registered_model("iris").aliases == {"champion": "2"}
    assert c.get_model_version("iris", "2").aliases == ["champion"]
    assert c.get_model_version_download_uri("iris", "2") == source
    assert [v.version for v in c.search_model_versions("name = 'iris'")] == ["2", "1"]
    assert [v.version for v in c.get_latest_versions("iris")] == ["2"]
    c.update_model_version("iris", "2", description="retrained on more rows")
    c.set_model_version_tag("iris", "2", "validated", "yes")
    c.delete_model_version_tag("iris", "2", "validated")
    assert "validated" not in c.get_model_version("iris", "2").tags

    for i in range(5):
        c.create_registered_model(f"m{i}")
    names, token = [], None
    while True:
        page = c.search_registered_models(max_results=2, page_token=token)
        assert len(page) <= 2
        names += [m.name for m in page]
        token = page.token
        if not token:
            break
    assert names == ["iris", "m0", "m1", "m2", "m3", "m4"], names
    assert [m.name for m in c.search_registered_models("name LIKE 'm%'")] == ["m0", "m1", "m2", "m3", "m4"]
    c.rename_registered_model("m0", "m0-renamed")
    c.update_registered_model("m0-renamed", description="renamed")
    c.set_registered_model_tag("m0-renamed", "stage", "dev")
    c.delete_registered_model_tag("m0-renamed", "stage")
    assert c.get_registered_model("m0-renamed").description == "renamed"
    c.delete_registered_model("m1")

    errors = {
        "duplicate model": expect(lambda: c.create_registered_model("iris"), "RESOURCE_ALREADY_EXISTS", "duplicate"),
        "unknown model": expect(lambda: c.get_registered_model("nope"), "RESOURCE_DOES_NOT_EXIST", "model"),
        "deleted model": expect(lambda: c.get_registered_model("m1"), "RESOURCE_DOES_NOT_EXIST", "deleted"),
        "old name": expect(lambda: c.get_registered_model("m0"), "RESOURCE_DOES_NOT_EXIST", "renamed"),
        "unknown version": expect(lambda: c.get_model_version("iris", "9"), "RESOURCE_DOES_NOT_EXIST", "version"),
        "alias to unknown version": expect(lambda: c.set_registered_model_alias("iris", "x", "9"),
                                           "RESOURCE_DOES_NOT_EXIST", "alias version"),
        "unknown alias": expect(lambda: c.get_model_version_by_alias("iris", "zz"), "INVALID_PARAMETER_VALUE", "alias"),
        "download unknown alias": expect(lambda: download("models:/iris@zz", "nothing"), "INVALID_PARAMETER_VALUE",
                                         "download alias"),
        "reserved alias": expect(lambda: c.set_registered_model_alias("iris", "latest", "1"),
                                 "INVALID_PARAMETER_VALUE", "latest"),
        "version not a number": expect(lambda: c.get_model_version("iris", "abc"), "INVALID_PARAMETER_VALUE", "abc"),
        "empty name": expect(lambda: c.create_registered_model(""), "INVALID_PARAMETER_VALUE", "empty"),
        "delete aliased version": expect(lambda: c.delete_model_version("iris", "2"), "INVALID_PARAMETER_VALUE",
                                         "aliased"),
        "source without artifacts": expect(
            lambda: c.create_model_version("iris", f"{run.info.artifact_uri}/nothing", run_id=rid),
            "INVALID_PARAMETER_VALUE", "empty source"),
        "version of unknown model": expect(lambda: c.create_model_version("nope", source),
                                           "RESOURCE_DOES_NOT_EXIST", "version of unknown model"),
        "changed param": expect(lambda: c.log_param(rid, "l2", "2.0"), "INVALID_PARAMETER_VALUE", "param"),
        "run in unknown experiment": expect(lambda: c.create_run("999"), "RESOURCE_DOES_NOT_EXIST", "experiment"),
        "unknown run": expect(lambda: c.get_run("0" * 32), "RESOURCE_DOES_NOT_EXIST", "run"),
        "bad filter": expect(lambda: c.search_model_versions("name ~ 'x'"), "INVALID_PARAMETER_VALUE", "filter"),
    }
    assert "champion" in errors["delete aliased version"], errors
    c.delete_model_version("iris", "1")
    print(json.dumps({"run_id": rid, "sha256": digest, "errors": errors}))
elif mode == "after-restart":
    assert c.get_model_version_by_alias("iris", "champion").version == "2"
    assert [v.version for v in c.search_model_versions("name = 'iris'")] == ["2"]
    digest = download("models:/iris@champion", "after-restart")
    runs = c.search_runs([c.get_experiment_by_name("iris-training").experiment_id])
    assert runs[0].data.metrics["accuracy"] == 0.93
    print(json.dumps({"sha256": digest}))
