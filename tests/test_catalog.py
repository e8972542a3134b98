"""`mlops models` and the Seldon-protocol side of `mlops evaluate`, against the real mnist server.

The mnist model class runs in Seldon Core's Python wrapper (seldon-core 1.17.1, what the custom
image runs) with the metadata a SeldonDeployment gives it (MODEL_METADATA); the catalog must read
its version and tensors from `/api/v1.0/metadata`, and the evaluation must score it over the
Seldon protocol exactly as the same model scores in-process. The V2 side (MLServer, the alias
runtime) is exercised in tests/test_evaluate.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pytest

from mlops import catalog
from tests.runtimes import seldon_wrapper
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[1]
ROWS = 120
METADATA = {"name": "mnist", "versions": ["7"], "platform": "pytorch",
            "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 28, 28]}],
            "outputs": [{"name": "digit", "datatype": "INT64", "shape": [-1]},
                        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]}


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    """A small digit model (one epoch on 1,000 images: quality is not the point), served."""
    from workloads.mnist import data as mnist_data
    from workloads.mnist import model as mnist_model
    from workloads.mnist import pyfunc as mnist_pyfunc

    sample = mnist_data.sample()
    net, _ = mnist_model.train(sample.X[::2][:1000], sample.y[::2][:1000], mnist_model.TrainConfig(epochs=1))
    path = tmp_path_factory.mktemp("mnist") / "model"
    with mnist_pyfunc.weights_file(net) as weights, mnist_pyfunc.code_package() as code:
        mlflow.pyfunc.save_model(path, python_model=mnist_pyfunc.DigitModel(),
                                 artifacts={mnist_pyfunc.WEIGHTS: weights}, code_paths=[code],
                                 signature=mnist_pyfunc.SIGNATURE)
    expected = mlflow.pyfunc.load_model(str(path)).predict(sample.X[1::2][:ROWS]).argmax(axis=1)
    env = {"MODEL_URI": str(path), "MODEL_METADATA": json.dumps(METADATA)}
    with seldon_wrapper("workloads.mnist.serving.MnistClassifier", env) as url:
        outputs = {"tenantModelUrls": {"hana": {"digits": f"{url}/api/v1.0/predictions"}},
                   "modelUrls": {"neo": f"http://127.0.0.1:{free_port()}/v2/models/model/infer"}}
        file = tmp_path_factory.mktemp("outputs") / "outputs.json"
        file.write_text(json.dumps(outputs))
        yield file, expected, sample.y[1::2][:ROWS]


def _mlops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlops", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.integration
def test_the_catalog_reads_the_seldon_model_metadata(mnist):
    file, _, _ = mnist
    result = _mlops("models", "--outputs", str(file), "--format", "json")
    assert result.returncode == 0, result.stderr
    entries = {(e["tenant"], e["model"]): e for e in json.loads(result.stdout)}
    hana = entries[("hana", "digits")]
    assert hana["status"] == "ok" and hana["protocol"] == "seldon"
    assert hana["version"] == "7" and hana["metadata"]["platform"] == "pytorch"
    assert hana["inputs"] == METADATA["inputs"] and hana["outputs"] == METADATA["outputs"]
    assert hana["metadata_url"].endswith("/api/v1.0/metadata") and hana["openapi_url"] is None
    assert entries[("platform", "neo")]["status"].startswith("unreachable")


@pytest.mark.integration
def test_the_catalog_table_filters_by_tenant(mnist):
    file, _, _ = mnist
    result = _mlops("models", "--outputs", str(file), "--tenant", "hana")
    assert result.returncode == 0, result.stderr
    header, row, summary = result.stdout.splitlines()
    assert header.split()[:5] == ["TENANT", "MODEL", "PROTOCOL", "VERSION", "STATUS"]
    assert row.split()[:5] == ["hana", "digits", "seldon", "7", "ok"] and "image:FP32" in row
    assert summary == "1/1 endpoints described themselves"
    unknown = _mlops("models", "--outputs", str(file), "--tenant", "nobody")
    assert unknown.returncode == 2 and "tenant(s) ['nobody'] have no model URL" in unknown.stderr


@pytest.mark.integration
def test_the_seldon_model_scores_as_it_does_in_process(mnist, tmp_path):
    file, expected, labels = mnist
    result = _mlops("evaluate", "--dataset", "mnist", "--outputs", str(file), "--tenants", "hana",
                    "--rows", str(ROWS), "--batch-size", "40", "--json", str(tmp_path / "r.json"), "--no-mlflow")
    assert result.returncode == 0, result.stderr
    (hana,) = json.loads((tmp_path / "r.json").read_text())
    assert hana["ok"] and hana["version"] == "7" and hana["requests"] == ROWS // 40
    assert hana["scores"]["accuracy"] == pytest.approx(float(np.mean(expected == labels)))


# ------------------------------------------------------------------ outputs and metadata shapes

def test_endpoints_come_from_stack_outputs_or_a_bare_map():
    stack = {"modelUrls": {"neo": "http://gw/seldon/serving/neo/v2/models/model/infer"},
             "tenantModelUrls": {"b": {"m": "http://gw/seldon/b/m/api/v1.0/predictions"}}, "mlflowUrl": "x"}
    assert [(e.tenant, e.model, e.protocol) for e in catalog.endpoints(stack)] == [
        ("b", "m", "seldon"), ("platform", "neo", "v2")]
    bare = {"a": {"m": "http://x/v2/models/m/infer"}, "n": "http://x/predict"}
    assert [(e.tenant, e.model, e.protocol) for e in catalog.endpoints(bare)] == [
        ("a", "m", "v2"), ("platform", "n", "unknown")]
    assert [e.tenant for e in catalog.endpoints(stack, ["b"])] == ["b"]
    with pytest.raises(ValueError, match=r"tenant\(s\) \['zed'\]"):
        catalog.endpoints(stack, ["zed"])


def _reply(body: object, status: int = 200) -> catalog.Get:
    return lambda url: catalog.Reply(status, json.dumps(body).encode() if not isinstance(body, bytes) else body)


def test_the_executor_graph_metadata_is_read_as_the_model_s():
    """Through Seldon's executor `/api/v1.0/metadata` is the graph's (executor/predictor/metadata.go
    GraphMetadata at v1.17.1: name, models, graphinputs, graphoutputs)."""
    graph = {"name": "digits", "models": {"model": {"name": "mnist", "platform": "pytorch", "versions": ["3"],
                                                    "inputs": [], "outputs": []}},
             "graphinputs": [{"name": "image", "datatype": "FP32", "shape": [1, 28, 28]}],
             "graphoutputs": [{"name": "digit", "datatype": "INT64", "shape": [1]}]}
    endpoint = catalog.Endpoint("t", "digits", "http://gw/seldon/t/digits/api/v1.0/predictions")
    entry = catalog.describe(endpoint, _reply(graph))
    assert (entry.status, entry.version, entry.inputs[0]["name"], entry.outputs[0]["name"]) == \
        ("ok", "3", "image", "digit")
    assert endpoint.metadata_url == "http://gw/seldon/t/digits/api/v1.0/metadata"


@pytest.mark.parametrize("get, status", [
    (_reply(b"<html>", 200), "malformed metadata (not JSON)"),
    (_reply([1, 2], 200), "malformed metadata (not a JSON object)"),
    (_reply({"error": "x"}, 503), "HTTP 503"),
])
def test_endpoints_that_cannot_describe_themselves_say_why(get, status):
    entry = catalog.describe(catalog.Endpoint("t", "m", "http://x/v2/models/m/infer"), get)
    assert entry.status.startswith(status) and entry.version is None


def test_the_alias_runtime_version_wins_over_the_versions_list():
    assert catalog.served_version({"versions": ["2"], "parameters": {"version": "5"}}) == "5"
    assert catalog.served_version({"versions": [""]}) is None
    assert catalog.served_version({"versions": "1"}) is None
