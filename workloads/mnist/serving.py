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
  - V2: `{"inputs": [{"name": "image", "shape": [N, 28, 28], "datatype": "FP32", "data": [...]}]}`
    → `{"model_name": "mnist", "outputs": [{"name": "digit", ...}, {"name": "probabilities", ...}]}`.

Pixels are floats in [0, 1]; images with values up to 255 are taken as raw MNIST bytes and scaled.
Bad payloads raise `PayloadError` (HTTP 400 in the Seldon wrapper) naming what is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

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
        raise PayloadError('expected a Seldon body {"data": {"ndarray": ...}} or a V2 body {"inputs": [...]}')

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
        probs = self.predict(values)
        return {"jsonData": {"digits": probs.argmax(axis=1).tolist(), "probabilities": probs.tolist()}}

    def _v2(self, request: dict[str, Any]) -> dict[str, Any]:
        inputs = request["inputs"]
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise PayloadError('"inputs" must hold exactly one tensor: the images')
        tensor = inputs[0]
        missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
        if missing:
            raise PayloadError(f"input tensor lacks {missing}")
        if tensor["datatype"] not in V2_DATATYPES:
            raise PayloadError(f"datatype {tensor['datatype']!r}; allowed: {sorted(V2_DATATYPES)}")
        probs = self.predict(_reshaped(tensor["data"], tensor["shape"]))
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
