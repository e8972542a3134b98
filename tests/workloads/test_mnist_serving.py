"""The Seldon model class, called directly as the wrapper calls it: Seldon-protocol and V2 bodies
carrying 28x28 images, or PNG pictures of digits (Seldon `binData`, V2 `BYTES`), get digit +
probabilities; bad bodies get a 400-class error naming the problem, and the class keeps answering
afterwards."""

from __future__ import annotations

import base64
import io

import mlflow.pyfunc
import numpy as np
import pytest
from PIL import Image

from workloads.mnist import data, model, pyfunc
from workloads.mnist.serving import (
    MAX_BATCH,
    MAX_PNG_BATCH,
    MAX_PNG_BYTES,
    MAX_PNG_SIDE,
    MnistClassifier,
    PayloadError,
    png_to_image,
)


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
        ({"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "STRING", "data": [0.0] * 784}]}, "datatype"),
        ({"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "BYTES", "data": [0.0] * 784}]},
         "shape \\[N\\]"),  # BYTES: base64 PNGs, not pixels
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


# ---- PNG pictures of digits (what the drawing page sends) ----

def drawn(image: np.ndarray, rng: np.random.Generator, side: int = 280) -> bytes:
    """An MNIST digit as a person draws it on the page: black ink on white, a 280x280 PNG, the
    digit 150-250 px tall somewhere on the canvas (not centred, not the 20/28 MNIST box)."""
    ink = image[image.any(axis=1)][:, image.any(axis=0)]  # the digit's own bounding box
    scale = min(rng.uniform(150, 250) / ink.shape[0], (side - 20) / ink.shape[1])
    width, height = (max(1, round(n * scale)) for n in (ink.shape[1], ink.shape[0]))
    stroke = Image.fromarray(((1 - ink) * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (side, side), 255)
    canvas.paste(stroke, (int(rng.integers(0, side - width + 1)), int(rng.integers(0, side - height + 1))))
    return png(canvas)


def png(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_a_drawn_digit_becomes_an_mnist_digit(sample):
    """Inverted, cropped to its ink, scaled to 20 px, centred by mass: the original comes back."""
    rng = np.random.default_rng(1)
    for image in sample.X[1::2][:20]:
        restored = png_to_image(b64(drawn(image, rng)))
        assert restored.shape == (28, 28) and restored.dtype == np.float32 and restored.max() == 1
        assert 19 <= max(np.ptp(np.nonzero(restored > 0.1), axis=1)) + 1 <= 21  # the 20-px box
        ys, xs = np.indices(restored.shape)
        mass = restored.sum()
        assert abs((ys * restored).sum() / mass - 14) < 1 and abs((xs * restored).sum() / mass - 14) < 1
        assert np.corrcoef(restored.ravel(), image.ravel())[0, 1] > 0.8


def test_drawn_pngs_are_recognised_through_both_protocols(classifier, sample):
    rng = np.random.default_rng(0)
    images, labels = sample.X[1::2][:100], sample.y[1::2][:100]
    pictures = [b64(drawn(image, rng)) for image in images]
    seldon = [classifier.predict_raw({"binData": p})["jsonData"] for p in pictures]
    digits = np.array([answer["digits"][0] for answer in seldon])
    assert all(len(answer["probabilities"][0]) == 10 for answer in seldon)
    assert np.mean(digits == labels) > 0.8  # the same images as 28x28 arrays: > 0.85 (test above)
    v2 = classifier.predict_raw({"inputs": [{"name": "image", "shape": [MAX_PNG_BATCH], "datatype": "BYTES",
                                             "data": pictures[:MAX_PNG_BATCH]}]})
    digit, probs = v2["outputs"]
    assert digit["data"] == digits[:MAX_PNG_BATCH].tolist() and probs["shape"] == [MAX_PNG_BATCH, 10]


def test_transparent_and_light_on_dark_pictures_read_the_same(classifier, sample):
    rng = np.random.default_rng(2)
    black_on_white = Image.open(io.BytesIO(drawn(sample.X[7], rng)))
    ink = Image.eval(black_on_white, lambda v: 255 - v)
    on_transparent = Image.new("RGBA", ink.size, (0, 0, 0, 0))
    on_transparent.putalpha(ink)  # black strokes, transparent paper (an unfilled canvas)
    expected = png_to_image(b64(png(black_on_white)))
    assert np.allclose(png_to_image(b64(png(ink))), expected, atol=1e-5)  # white on black, like MNIST
    assert np.allclose(png_to_image(b64(png(on_transparent))), expected, atol=1e-2)


def _too_many_pixels() -> str:
    return b64(png(Image.new("L", (MAX_PNG_SIDE + 1, 8), 255)))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"binData": b64(b"GIF89a not a png at all")}, "not a PNG"),
        ({"binData": b64(png(Image.new("L", (28, 28), 0)).replace(b"IDAT", b"IDAX"))}, "cannot be decoded"),
        ({"binData": ""}, "non-empty base64"),
        ({"binData": 42}, "non-empty base64"),
        ({"binData": "not base64!"}, "not valid base64"),
        ({"binData": "A" * (MAX_PNG_BYTES // 3 * 4 + 8)}, f"larger than {MAX_PNG_BYTES} bytes"),
        ({"binData": _too_many_pixels()}, f"at most {MAX_PNG_SIDE}x{MAX_PNG_SIDE}"),
        ({"binData": b64(png(Image.new("L", (280, 280), 255)))}, "no ink"),  # an empty canvas
        ({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["x"]}]}, "shape \\[N\\]"),
        ({"inputs": [{"name": "image", "shape": [MAX_PNG_BATCH + 1], "datatype": "BYTES",
                      "data": ["x"] * (MAX_PNG_BATCH + 1)}]}, f"at most {MAX_PNG_BATCH}"),
    ],
)
def test_bad_pngs_are_client_errors_with_the_reason(classifier, sample, body, message):
    with pytest.raises(PayloadError, match=message) as error:
        classifier.predict_raw(body)
    assert error.value.status_code == 400
    rng = np.random.default_rng(3)
    assert len(classifier.predict_raw({"binData": b64(drawn(sample.X[0], rng))})["jsonData"]["digits"]) == 1
