"""The Seldon model class, called directly as the wrapper calls it: Seldon-protocol and V2 bodies
carrying 28x28 images get digit + probabilities; bad bodies get a 400-class error naming the
problem, and the class keeps answering afterwards."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pytest

from workloads.mnist import data, model, pyfunc
from workloads.mnist.serving import MAX_BATCH, MnistClassifier, PayloadError


@pytest.fixture(scope="module")
def sample() -> data.Split:
    return data.sample()


@pytest.fixture(scope="module")
def classifier(sample, tmp_path_factory) -> MnistClassifier:
    """A briefly trained network saved as the registry stores it, loaded the way the server does."""
    net, _ = model.train(sample.X[::2], sample.y[::2], model.TrainConfig(epochs=2))
    path = tmp_path_factory.mktemp("model") / "mnist"
    with pyfunc.weights_file(net) as weights, pyfunc.code_package() as code:
        mlflow.pyfunc.save_model(path, python_model=pyfunc.DigitModel(), artifacts={pyfunc.WEIGHTS: weights},
                                 code_paths=[code], signature=pyfunc.SIGNATURE)
    return MnistClassifier(str(path))


def test_predict_follows_the_wrapper_signature(classifier, sample):
    probs = classifier.predict(sample.X[1::2][:200], features_names=None)
    assert probs.shape == (200, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert np.mean(probs.argmax(axis=1) == sample.y[1::2][:200]) > 0.85  # unseen images
    assert list(classifier.class_names()) == [str(d) for d in range(10)]


def test_seldon_ndarray_of_one_image_returns_digit_and_probabilities(classifier, sample):
    image = sample.X[1]
    answer = classifier.predict_raw({"data": {"ndarray": [image.tolist()]}})["jsonData"]
    assert len(answer["digits"]) == 1 and len(answer["probabilities"][0]) == 10
    assert answer["digits"][0] == int(np.argmax(answer["probabilities"][0]))
    flat = classifier.predict_raw({"data": {"tensor": {"shape": [1, 784], "values": image.ravel().tolist()}}})
    assert flat["jsonData"]["digits"] == answer["digits"]
    raw_bytes = classifier.predict_raw({"data": {"ndarray": (image * 255).round().tolist()}})  # one bare image
    assert raw_bytes["jsonData"]["digits"] == answer["digits"]


def test_v2_body_returns_digit_and_probabilities_tensors(classifier, sample):
    images = sample.X[[3, 600, 1200]]
    body = {"inputs": [{"name": "image", "shape": [3, 28, 28], "datatype": "FP32", "data": images.ravel().tolist()}]}
    answer = classifier.predict_raw(body)
    digit, probs = answer["outputs"]
    assert digit["name"] == "digit" and digit["shape"] == [3]
    assert probs["shape"] == [3, 10] and len(probs["data"]) == 30
    expected = classifier.predict(images)
    assert digit["data"] == expected.argmax(axis=1).tolist()
    assert np.allclose(np.reshape(probs["data"], (3, 10)), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"data": {"ndarray": [[0.0] * 27] * 28}}, "28x28 images"),  # wrong shape
        ({"data": {"ndarray": [["a"] * 28] * 28}}, "pixels must be numbers"),  # wrong type
        ({"data": {"ndarray": [[-1.0] * 28] * 28}}, "in \\[0, 1\\]"),
        ({"data": {"names": ["x"]}}, '"data" needs "ndarray"'),  # missing field
        ({"inputs": [{"name": "image", "shape": [1, 28, 28], "data": [0.0] * 784}]}, "lacks \\['datatype'\\]"),
        ({"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "BYTES", "data": [0.0] * 784}]}, "datatype"),
        ({"inputs": [{"name": "image", "shape": [2, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]}, "does not fit"),
        ({"data": {"ndarray": np.zeros((MAX_BATCH + 1, 28, 28)).tolist()}}, f"at most {MAX_BATCH}"),  # oversized
        ({"instances": []}, "expected a Seldon body"),
    ],
)
def test_bad_payloads_are_client_errors_with_a_clear_message(classifier, sample, body, message):
    with pytest.raises(PayloadError, match=message) as error:
        classifier.predict_raw(body)
    assert error.value.status_code == 400
    assert len(classifier.predict_raw({"data": {"ndarray": [sample.X[0].tolist()]}})["jsonData"]["digits"]) == 1
