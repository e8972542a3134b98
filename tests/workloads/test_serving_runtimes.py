"""The demo models in their real serving runtimes, over HTTP with the real protocols.

- neo: the saved MLflow model in MLServer's MLflow runtime (what Seldon serves registry models
  with), V2 protocol with the pandas content type the payload builder writes;
- mnist: the model class in Seldon Core's Python wrapper (the custom image's entry point), with a
  Seldon-protocol body and a V2 body on the same endpoint.

Bad payloads (wrong shape, wrong type, missing field, oversized) get a 4xx naming the problem,
and the server answers correctly afterwards.
"""

from __future__ import annotations

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pytest
import requests

from tests.runtimes import mlserver, seldon_wrapper
from workloads.mnist import data as mnist_data
from workloads.mnist import model as mnist_model
from workloads.mnist import pyfunc as mnist_pyfunc
from workloads.mnist.serving import MAX_BATCH
from workloads.neo import data as neo_data
from workloads.neo import model as neo_model
from workloads.neo import payload
from workloads.neo.train import flavor_options

pytestmark = pytest.mark.integration


def _is_clear_4xx(response: requests.Response, *words: str) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    text = response.text.lower()
    assert any(word.lower() in text for word in words), response.text[:500]


# ---- neo on MLServer (V2) ----

@pytest.fixture(scope="module")
def neo(tmp_path_factory):
    prepared = neo_data.preprocess(neo_data.load(neo_data.default_source()))
    result = neo_model.train_and_select(prepared)
    path = tmp_path_factory.mktemp("neo") / "model"
    mlflow.sklearn.save_model(result.model, path, **flavor_options(result.model, result.X_test.head(3)))
    with mlserver(path, "neo") as url:
        yield url, result


def test_neo_v2_answers_as_the_model_does(neo):
    url, result = neo
    rows = result.X_test.head(25)
    response = requests.post(f"{url}/v2/models/neo/infer", json=payload.v2(rows), timeout=30)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    predictions = np.asarray(outputs[0]["data"]).reshape(outputs[0]["shape"]).ravel()
    assert predictions.tolist() == result.model.predict(rows).tolist()
    assert set(predictions) <= {0, 1}


def test_neo_metadata_describes_the_signature(neo):
    url, result = neo
    metadata = requests.get(f"{url}/v2/models/neo", timeout=10).json()
    assert [i["name"] for i in metadata["inputs"]] == list(result.X_test.columns)


def test_neo_bad_payloads_get_4xx_and_the_server_keeps_serving(neo):
    url, result = neo
    infer = f"{url}/v2/models/neo/infer"
    good = payload.v2(result.X_test.head(2))
    missing_column = {**good, "inputs": good["inputs"][1:]}
    wrong_type = {**good, "inputs": [{**good["inputs"][0], "data": ["far", "away"]}, *good["inputs"][1:]]}
    wrong_shape = {**good, "inputs": [{**good["inputs"][0], "shape": [3]}, *good["inputs"][1:]]}
    no_inputs = {"parameters": {"content_type": "pd"}}
    _is_clear_4xx(requests.post(infer, json=missing_column, timeout=30), good["inputs"][0]["name"], "missing")
    _is_clear_4xx(requests.post(infer, json=wrong_type, timeout=30), "far", "float", "type")
    _is_clear_4xx(requests.post(infer, json=wrong_shape, timeout=30), "shape", "length", "size")
    _is_clear_4xx(requests.post(infer, json=no_inputs, timeout=30), "inputs", "field required", "missing")
    _is_clear_4xx(requests.post(infer, data=b"{not json", timeout=30,
                                headers={"Content-Type": "application/json"}), "json", "decode")
    answer = requests.post(infer, json=good, timeout=30)
    assert answer.status_code == 200 and len(answer.json()["outputs"][0]["data"]) == 2


# ---- mnist in Seldon's Python wrapper (Seldon protocol, V2 body) ----

@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    sample = mnist_data.sample()
    net, _ = mnist_model.train(sample.X[::2], sample.y[::2], mnist_model.TrainConfig(epochs=2))
    path = tmp_path_factory.mktemp("mnist") / "model"
    with mnist_pyfunc.weights_file(net) as weights, mnist_pyfunc.code_package() as code:
        mlflow.pyfunc.save_model(path, python_model=mnist_pyfunc.DigitModel(),
                                 artifacts={mnist_pyfunc.WEIGHTS: weights}, code_paths=[code],
                                 signature=mnist_pyfunc.SIGNATURE)
    expected = mlflow.pyfunc.load_model(str(path))
    with seldon_wrapper("workloads.mnist.serving.MnistClassifier", {"MODEL_URI": str(path)}) as url:
        yield f"{url}/api/v1.0/predictions", sample.X[1::2][:8], expected


def test_mnist_seldon_protocol_returns_digit_and_probabilities(mnist):
    url, images, expected = mnist
    response = requests.post(url, json={"data": {"ndarray": images.tolist()}}, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()["jsonData"]
    probabilities = np.asarray(answer["probabilities"])
    assert probabilities.shape == (8, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(probabilities, expected.predict(images), atol=1e-5)
    assert answer["digits"] == probabilities.argmax(axis=1).tolist()


def test_mnist_v2_body_returns_digit_and_probabilities_tensors(mnist):
    url, images, expected = mnist
    body = {"inputs": [{"name": "image", "shape": [2, 28, 28], "datatype": "FP32",
                        "data": images[:2].ravel().tolist()}]}
    response = requests.post(url, json=body, timeout=30)
    assert response.status_code == 200, response.text
    digit, probabilities = response.json()["outputs"]
    assert digit["data"] == expected.predict(images[:2]).argmax(axis=1).tolist()
    assert probabilities["shape"] == [2, 10]


def test_mnist_bad_payloads_get_4xx_and_the_server_keeps_serving(mnist):
    url, images, _ = mnist
    image = images[0].tolist()
    cases = [
        ({"data": {"ndarray": [[0.5] * 27] * 28}}, "28x28"),                               # wrong shape
        ({"data": {"ndarray": [[["white"] * 28] * 28]}}, "numbers"),                       # wrong type
        ({"inputs": [{"name": "image", "shape": [1, 28, 28], "data": image}]}, "datatype"),  # missing field
        ({"data": {"ndarray": [image] * (MAX_BATCH + 1)}}, f"at most {MAX_BATCH}"),         # oversized
        ({"meta": {}}, "expected a seldon body"),                                          # neither protocol
    ]
    for body, words in cases:
        _is_clear_4xx(requests.post(url, json=body, timeout=60), words)
    answer = requests.post(url, json={"data": {"ndarray": [image]}}, timeout=30)
    assert answer.status_code == 200 and len(answer.json()["jsonData"]["digits"]) == 1


# run by the wrapper's interpreter: the same updates through Seldon's own SeldonMetrics.update and
# through the images' entrypoint's, on two instances; what each exposes, and what each stored
METRICS_CHECK = r"""
import json
from seldon_core.metrics import SeldonMetrics
from workloads.common.seldon_serve import skip_empty_updates

def exposed(metrics):
    return sorted((m.name, [(s.name, sorted(s.labels.items()), s.value) for s in m.samples]) for m in metrics.collect())
out = {}
for case, updates in {"no metrics": [[]], "a counter, then none": [[{"type": "COUNTER", "key": "answers", "value": 2}], []],
                      "a gauge and a timer": [[{"type": "GAUGE", "key": "g", "value": 0.5},
                                               {"type": "TIMER", "key": "t", "value": 12.0}]]}.items():
    seldon, ours = SeldonMetrics(worker_id_func=lambda: 7), SeldonMetrics(worker_id_func=lambda: 7)
    for metrics in updates:
        SeldonMetrics.update(seldon, [dict(m) for m in metrics], "predict")
        skip_empty_updates(SeldonMetrics.update)(ours, [dict(m) for m in metrics], "predict")
    out[case] = {"same": exposed(seldon) == exposed(ours), "series": len(exposed(ours)),
                 "stored": [len(seldon.data), len(ours.data)]}
print(json.dumps(out))
"""


def test_the_seldon_entrypoint_skips_only_updates_that_change_nothing():
    """workloads/common/seldon_serve.py: an update without metrics makes no round trip to the Manager
    (nothing stored), and every update exposes what Seldon's own update exposes."""
    import json
    import subprocess

    from tests.runtimes import ROOT, seldon_serve

    run = subprocess.run([seldon_serve()[0], "-c", METRICS_CHECK], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["no metrics"] == {"same": True, "series": 0, "stored": [1, 0]}, result
    assert result["a counter, then none"] == {"same": True, "series": 1, "stored": [1, 1]}, result
    assert result["a gauge and a timer"]["same"] and result["a gauge and a timer"]["series"] == 2, result
