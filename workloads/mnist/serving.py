"""The model server class: Seldon Core v1's Python wrapper convention, for both protocols.

    seldon-core-microservice workloads.mnist.serving.MnistClassifier --service-type MODEL

The class loads the registered pyfunc from $MODEL_URI (default `/mnt/models`, where Seldon's
storage initializer puts the artifacts of `modelUri`; `models:/mnist@champion` works with a
tracking URI). It answers

- `predict(X, features_names)`: the wrapper's hook, X an (N, 28, 28) or (N, 784) array →
  (N, 10) probabilities, columns named by `class_names()`;
- `predict_raw(request)`: what the wrapper calls instead when present, so one class speaks both
  request shapes and returns digit + probabilities:
  - Seldon: `{"data": {"ndarray": [<28x28 image>, ...]}}` (or `tensor` with `shape`/`values`) →
    `{"jsonData": {"digits": [...], "probabilities": [[10 floats], ...]}}`;
  - Seldon `{"binData": "<base64 PNG>"}`: one picture of a digit (the drawing page sends this);
  - V2: `{"inputs": [{"name": "image", "shape": [N, 28, 28], "datatype": "FP32", "data": [...]}]}`
    → `{"model_name": "mnist", "outputs": [{"name": "digit", ...}, {"name": "probabilities", ...}]}`;
    datatype `BYTES` with shape `[N]` carries N base64 PNGs instead.

Pixels are floats in [0, 1]; images with values up to 255 are taken as raw MNIST bytes and scaled.
A PNG of any size and polarity is turned into an MNIST digit first (`png_to_image`). Bad payloads
raise `PayloadError` (HTTP 400 in the Seldon wrapper) naming what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

try:  # the wrapper maps this exception's status_code to the HTTP status; absent outside the image
    from seldon_core.flask_utils import SeldonMicroserviceException as _ServingError
except ImportError:  # pragma: no cover - exercised only without seldon-core
    class _ServingError(Exception):  # type: ignore[no-redef]
        def __init__(self, message: str, status_code: int = 400, reason: str = "MICROSERVICE_BAD_DATA"):
            super().__init__(message)
            self.message, self.status_code, self.reason = message, status_code, reason

MAX_BATCH = 256  # images per request: bounds the memory one request can take
CLASS_NAMES = [str(d) for d in range(10)]
V2_DATATYPES = {"FP32", "FP64", "INT32", "INT64", "UINT8"}
# PNG input: the wrapper has parsed the whole body before the class sees it, so these bound the
# decoding work (a few KB for a 280x280 drawing); the pixel bound is checked before decompressing.
MAX_PNG_BYTES = 1 << 20
MAX_PNG_SIDE = 1024
MAX_PNG_BATCH = 16
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INK = 0.1  # a pixel darker (on light paper) or lighter (on dark) than this by 10 % is ink


class PayloadError(_ServingError):
    def __init__(self, message: str):
        super().__init__(message, status_code=400, reason="MICROSERVICE_BAD_DATA")


def as_images(values: Any) -> np.ndarray:
    """Any array of N images of 28x28 pixels (or one image) → (N, 28, 28) float32 in [0, 1]."""
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise PayloadError(f"pixels must be numbers ({err})") from None
    if array.size == 0 or array.size % 784:
        raise PayloadError(f"expected 28x28 images (784 values each), got shape {list(array.shape)}")
    if array.shape[-2:] != (28, 28) and array.shape[-1] != 784:
        raise PayloadError(f"expected [N, 28, 28] or [N, 784], got shape {list(array.shape)}")
    images = array.reshape(-1, 28, 28)
    if len(images) > MAX_BATCH:
        raise PayloadError(f"{len(images)} images in one request; at most {MAX_BATCH}")
    if not np.isfinite(images).all() or images.min() < 0 or images.max() > 255:
        raise PayloadError("pixels must be finite, in [0, 1] (or raw bytes 0-255)")
    return images / 255.0 if images.max() > 1 else images


def decode_png(encoded: Any) -> np.ndarray:
    """A base64 PNG → its grey levels, (H, W) float32 in [0, 1], transparency composited on white."""
    if not isinstance(encoded, str) or not encoded:
        raise PayloadError("a PNG must be a non-empty base64 string")
    if len(encoded) > (MAX_PNG_BYTES + 2) // 3 * 4:
        raise PayloadError(f"PNG larger than {MAX_PNG_BYTES} bytes; send a smaller picture (280x280 is plenty)")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as err:
        raise PayloadError(f"PNG is not valid base64 ({err})") from None
    if not raw.startswith(PNG_SIGNATURE):
        raise PayloadError("not a PNG file (it lacks the PNG signature)")
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as picture:
            if max(picture.size) > MAX_PNG_SIDE:
                raise PayloadError(f"PNG of {picture.size[0]}x{picture.size[1]} pixels; at most "
                                   f"{MAX_PNG_SIDE}x{MAX_PNG_SIDE}")
            rgba = picture.convert("RGBA")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
        raise PayloadError(f"PNG cannot be decoded ({err})") from None
    paper = Image.new("RGBA", rgba.size, "white")
    return np.asarray(Image.alpha_composite(paper, rgba).convert("L"), dtype=np.float32) / 255.0


def to_mnist(grey: np.ndarray) -> np.ndarray:
    """Any picture of one digit → a 28x28 MNIST digit, as MNIST's own were made: light ink on
    black, the ink's bounding box scaled to fit 20x20 (aspect kept, anti-aliased), placed in
    28x28 with its centre of mass at the centre."""
    ink = 1.0 - grey if np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])) > 0.5 else grey
    rows, cols = np.nonzero(ink > INK)
    if rows.size == 0:
        raise PayloadError("the picture has no ink: draw a digit")
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    scale = 20 / max(ink.shape)
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    digit = np.asarray(Image.fromarray(ink.astype(np.float32)).resize(size, Image.Resampling.LANCZOS))
    digit = np.clip(digit, 0, None) / max(float(digit.max()), 1e-6)  # Lanczos rings slightly below 0
    ys, xs = np.indices(digit.shape)
    top = 14 - round(float((ys * digit).sum() / digit.sum()))
    left = 14 - round(float((xs * digit).sum() / digit.sum()))
    margin = 28  # the centre of mass may put part of the box outside 28x28: paste with room, then cut
    sheet = np.zeros((28 + 2 * margin, 28 + 2 * margin), dtype=np.float32)
    sheet[margin + top:margin + top + digit.shape[0], margin + left:margin + left + digit.shape[1]] = digit
    return sheet[margin:margin + 28, margin:margin + 28]


def png_to_image(encoded: Any) -> np.ndarray:
    """A base64 PNG of a digit → the (28, 28) image the model reads."""
    return to_mnist(decode_png(encoded))


class MnistClassifier:
    def __init__(self, model_uri: str | None = None) -> None:
        import mlflow.pyfunc

        self.model_uri = model_uri or os.environ.get("MODEL_URI", "/mnt/models")
        self.model = mlflow.pyfunc.load_model(self.model_uri)

    def class_names(self) -> Iterable[str]:
        return CLASS_NAMES

    def predict(self, X: Any, features_names: Iterable[str] | None = None, meta: dict | None = None) -> np.ndarray:
        return np.asarray(self.model.predict(as_images(X)))

    def predict_raw(self, request: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise PayloadError("the request body must be a JSON object")
        if "inputs" in request:
            return self._v2(request)
        if "data" in request:
            return self._seldon(request)
        if "binData" in request:
            return self._answer(self.predict(png_to_image(request["binData"])[None]))
        raise PayloadError('expected a Seldon body {"data": {"ndarray": ...}} or {"binData": "<base64 PNG>"}, '
                           'or a V2 body {"inputs": [...]}')

    def _seldon(self, request: dict[str, Any]) -> dict[str, Any]:
        data = request["data"]
        if not isinstance(data, dict):
            raise PayloadError('"data" must be an object with "ndarray" or "tensor"')
        if "ndarray" in data:
            values = data["ndarray"]
        elif isinstance(data.get("tensor"), dict) and {"shape", "values"} <= set(data["tensor"]):
            values = _reshaped(data["tensor"]["values"], data["tensor"]["shape"])
        else:
            raise PayloadError('"data" needs "ndarray" (nested lists) or "tensor" ({"shape", "values"})')
        return self._answer(self.predict(values))

    @staticmethod
    def _answer(probs: np.ndarray) -> dict[str, Any]:
        return {"jsonData": {"digits": probs.argmax(axis=1).tolist(), "probabilities": probs.tolist()}}

    def _v2(self, request: dict[str, Any]) -> dict[str, Any]:
        inputs = request["inputs"]
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise PayloadError('"inputs" must hold exactly one tensor: the images')
        tensor = inputs[0]
        missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
        if missing:
            raise PayloadError(f"input tensor lacks {missing}")
        if tensor["datatype"] == "BYTES":
            images = _pngs(tensor["data"], tensor["shape"])
        elif tensor["datatype"] in V2_DATATYPES:
            images = _reshaped(tensor["data"], tensor["shape"])
        else:
            raise PayloadError(f"datatype {tensor['datatype']!r}; allowed: {sorted(V2_DATATYPES | {'BYTES'})} "
                               "(BYTES: base64 PNGs)")
        probs = self.predict(images)
        n = len(probs)
        return {
            "model_name": "mnist",
            "outputs": [
                {"name": "digit", "shape": [n], "datatype": "INT64", "data": probs.argmax(axis=1).tolist()},
                {"name": "probabilities", "shape": [n, 10], "datatype": "FP32", "data": probs.ravel().tolist()},
            ],
        }


def _reshaped(values: Any, shape: Any) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float32).reshape([int(s) for s in shape])
    except (TypeError, ValueError) as err:
        raise PayloadError(f"data does not fit shape {shape} ({err})") from None


def _pngs(data: Any, shape: Any) -> np.ndarray:
    """A V2 BYTES tensor of shape [N]: N base64 PNGs → (N, 28, 28)."""
    if not isinstance(data, list) or shape != [len(data)] or not data:
        raise PayloadError(f"a BYTES tensor holds base64 PNGs with shape [N] = [len(data)]; got shape {shape}")
    if len(data) > MAX_PNG_BATCH:
        raise PayloadError(f"{len(data)} PNGs in one request; at most {MAX_PNG_BATCH}")
    return np.stack([png_to_image(item) for item in data])
