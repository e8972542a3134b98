"""The model server class: Seldon Core v1's Python wrapper convention, for both protocols.

    python -m workloads.common.seldon_serve workloads.mnist.serving.MnistClassifier --service-type MODEL

The class loads the registered pyfunc from $MODEL_URI (default `/mnt/models`, where Seldon's
storage initializer puts the artifacts of `modelUri`; `models:/mnist@champion` works with a
tracking URI). A registry alias is followed as it moves, as the MLServer runtime of alias models
does (modules/serving/mlserver-image/mlops_mlserver.py, docs/decisions/0006-serve-by-alias.md):
every $MODEL_POLL_SECONDS (default 30; 0: never) a thread in the wrapper's worker looks the alias
up, loads a new version beside the served one and swaps it in; a failed look-up or load keeps the
served version and is retried with backoff. Replies from a registry version carry it: V2
`model_version`, Seldon `meta.tags.model_version`. It answers

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

import atexit
import base64
import binascii
import datetime
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
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
POLL_ENV = "MODEL_POLL_SECONDS"
MAX_RETRY_SECONDS = 600.0
ALIAS_URI = re.compile(r"models:/(?P<model>[^/@]+)@(?P<alias>[\w-]+)")
log = logging.getLogger(__name__)


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


# ---- a sample of served requests, as the MLServer runtime keeps it (docs/decisions/0017-drift-monitoring.md,
# 0018-label-feedback.md): same env, same ids, same object layout; images are kept as two numbers each ----

LOG_URI_ENV, LOG_RATE_ENV, LOG_FLUSH_ENV = ("MLOPS_INFERENCE_LOG_URI", "MLOPS_INFERENCE_LOG_RATE",
                                            "MLOPS_INFERENCE_LOG_FLUSH_SECONDS")
MAX_PENDING_LINES = 10_000  # held while the store is unreachable; the oldest go first beyond it


def image_features(images: np.ndarray) -> dict[str, list[float]]:
    """What the sample keeps of each (28, 28) image in [0, 1], and what the training reference holds
    (workloads/mnist/train.py): its mean intensity and its share of ink pixels. 784 pixels per image
    would be 6 KB of JSON and a PSI per pixel says little; these two move when the pictures change
    (thicker or thinner strokes, other scanners, inverted or cropped drawings)."""
    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    return {"mean_intensity": np.round(flat.mean(axis=1), 5).tolist(),
            "ink_share": np.round((flat > INK).mean(axis=1), 5).tolist()}


def request_id() -> str:
    """The request's id, as the MLServer runtime picks it: Istio's x-request-id (Seldon 1.17.1's executor
    passes every request header but Content-Type on to the model container), else the executor's
    Seldon-Puid, else the V2 body's id; a new one outside a request or without any. Kept per request
    (flask.g), so the reply names the id its sample and labels go by."""
    try:
        from flask import g, request

        if "mlops_request_id" not in g:
            body = request.get_json(silent=True)
            g.mlops_request_id = str(request.headers.get("x-request-id") or request.headers.get("Seldon-Puid")
                                     or (body.get("id") if isinstance(body, dict) else None) or uuid.uuid4())
        return g.mlops_request_id
    except (ImportError, RuntimeError):  # outside a request (in-process use)
        return str(uuid.uuid4())


class Sampler:
    """Keeps `rate` of the requests (by a hash of the request id, as the MLServer runtime: a champion and
    its shadow keep the same ones) and writes them every `flush_seconds` from a thread of the worker, to
    `<uri>/<model>/<alias>/<YYYY-MM-DD>/<HHMMSS>-<id>.jsonl`. A failed write keeps the lines for the next."""

    def __init__(self, uri: str, rate: float, flush_seconds: float, model: str, alias: str) -> None:
        self.uri, self.rate, self.flush_seconds, self.model, self.alias = uri, rate, flush_seconds, model, alias
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._pid: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], alias: tuple[str, str] | None) -> Sampler | None:
        uri, rate = env.get(LOG_URI_ENV, "").rstrip("/"), float(env.get(LOG_RATE_ENV) or 0)
        if not (uri and rate > 0):
            return None
        if not 0 < rate <= 1:
            raise ValueError(f"{LOG_RATE_ENV}={rate}: a share between 0 and 1 is allowed")
        if alias is None:
            raise ValueError(f"{LOG_URI_ENV} is set but MODEL_URI is no models:/<model>@<alias>: the sample is "
                             "kept per registry alias (its drift job compares it with that alias's reference)")
        return cls(uri, rate, float(env.get(LOG_FLUSH_ENV) or 60), *alias)

    def wants(self, rid: str) -> bool:
        return int.from_bytes(hashlib.sha256(rid.encode()).digest()[:8], "big") < self.rate * 2 ** 64

    def record(self, rid: str, images: np.ndarray, probs: np.ndarray, version: str | None) -> None:
        line = json.dumps({"time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                           "request_id": rid, "model": self.model, "alias": self.alias, "version": version,
                           "inputs": image_features(images),
                           "outputs": {"digit": probs.argmax(axis=1).tolist(),
                                       "probability": np.round(probs.max(axis=1), 5).tolist()}},
                          separators=(",", ":"))
        with self._lock:
            self._lines.append(line)
            del self._lines[:-MAX_PENDING_LINES]

    def start(self) -> None:
        """In each worker process (after the wrapper's fork), once; the last lines are written at exit."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        threading.Thread(target=self._flush_every, name="inference-log", daemon=True).start()
        atexit.register(self.flush)

    def _flush_every(self) -> None:
        while True:
            time.sleep(self.flush_seconds)
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        if not lines:
            return
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        now = datetime.datetime.now(datetime.UTC)
        try:
            with tempfile.TemporaryDirectory(prefix="mlops-samples-") as tmp:
                path = Path(tmp) / f"{now:%H%M%S}-{uuid.uuid4().hex[:12]}.jsonl"
                path.write_text("\n".join(lines) + "\n")
                get_artifact_repository(self.uri).log_artifact(str(path), f"{self.model}/{self.alias}/{now:%Y-%m-%d}")
        except Exception as err:  # store unreachable, credentials revoked: serving goes on
            with self._lock:
                self._lines[:0] = lines
                del self._lines[:-MAX_PENDING_LINES]
            log.error("writing %d samples to %s failed, kept for the next try: %r", len(lines), self.uri, err)


@dataclass(frozen=True)
class Served:
    """The loaded model and its registry version (None: a path or pinned URI), swapped as one."""

    model: Any
    version: str | None


class MnistClassifier:
    def __init__(self, model_uri: str | None = None) -> None:
        self.model_uri = model_uri or os.environ.get("MODEL_URI", "/mnt/models")
        alias = ALIAS_URI.fullmatch(self.model_uri)
        self.alias = (alias["model"], alias["alias"]) if alias else None
        self.poll_seconds = float(os.environ.get(POLL_ENV) or 30)
        self._served = self._load(self._resolve() if self.alias else None)
        self._follower: tuple[int, threading.Thread] | None = None  # (pid, thread): one per worker process
        self.sampler = Sampler.from_env(os.environ, self.alias)

    @property
    def model(self) -> Any:
        return self._served.model

    @property
    def version(self) -> str | None:
        return self._served.version

    def _resolve(self) -> str:
        from mlflow import MlflowClient

        return str(MlflowClient().get_model_version_by_alias(*self.alias).version)

    def _load(self, version: str | None) -> Served:
        import mlflow.pyfunc

        uri = f"models:/{self.alias[0]}/{version}" if version else self.model_uri
        return Served(mlflow.pyfunc.load_model(uri), version)

    def load(self) -> None:
        """The wrapper calls this in each worker process after the fork: start following the alias
        there (a thread started in `__init__` would stay behind in the parent)."""
        if self.sampler is not None:
            self.sampler.start()
        if self.alias is None or self.poll_seconds <= 0:
            return
        if self._follower is not None and self._follower[0] == os.getpid():
            return
        thread = threading.Thread(target=self._follow, name="alias-follower", daemon=True)
        self._follower = (os.getpid(), thread)
        thread.start()

    def _follow(self) -> None:
        failed: dict[str, tuple[int, float]] = {}  # version -> (attempts, next retry time)
        while True:
            time.sleep(self.poll_seconds)
            self.refresh(failed)

    def refresh(self, failed: dict[str, tuple[int, float]]) -> None:
        """One look-up of the alias; a moved alias is loaded and swapped in, a failure logged and
        retried after `poll_seconds` * 2^attempts (at most MAX_RETRY_SECONDS)."""
        model, alias = self.alias
        try:
            version = self._resolve()
        except Exception as err:  # MLflow unreachable, alias deleted, credentials revoked
            log.error("cannot resolve models:/%s@%s, still serving version %s: %s", model, alias, self.version, err)
            return
        attempts, retry_at = failed.get(version, (0, 0.0))
        if version == self.version or time.monotonic() < retry_at:
            return
        try:
            loaded = self._load(version)
        except Exception as err:  # missing or corrupt artifacts
            delay = min(self.poll_seconds * 2 ** attempts, MAX_RETRY_SECONDS)
            failed[version] = (attempts + 1, time.monotonic() + delay)
            log.error("loading models:/%s/%s (alias %s) failed, still serving version %s; retry in %.0f s: %r",
                      model, version, alias, self.version, delay, err)
            return
        failed.pop(version, None)
        self._served = loaded  # one reference: a request reads the old or the new model, never a mix
        log.warning("serving models:/%s/%s (alias %s)", model, version, alias)

    def class_names(self) -> Iterable[str]:
        return CLASS_NAMES

    def predict(self, X: Any, features_names: Iterable[str] | None = None, meta: dict | None = None) -> np.ndarray:
        return self._predict(self._served, X)

    def _predict(self, served: Served, X: Any) -> np.ndarray:
        images = as_images(X)
        probs = np.asarray(served.model.predict(images))
        if self.sampler is not None:
            rid = request_id()
            if self.sampler.wants(rid):
                self.sampler.record(rid, images, probs, served.version)
        return probs

    def predict_raw(self, request: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise PayloadError("the request body must be a JSON object")
        served = self._served  # the version this request is answered by, from start to end
        if "inputs" in request:
            reply = self._v2(served, request)
            return self._with_id(reply if served.version is None else {**reply, "model_version": served.version})
        if "data" in request:
            reply = self._seldon(served, request)
        elif "binData" in request:
            reply = self._answer(self._predict(served, png_to_image(request["binData"])[None]))
        else:
            raise PayloadError('expected a Seldon body {"data": {"ndarray": ...}} or {"binData": "<base64 PNG>"}, '
                               'or a V2 body {"inputs": [...]}')
        return self._with_id(reply if served.version is None else
                             {**reply, "meta": {"tags": {"model_version": served.version}}})

    def _with_id(self, reply: dict[str, Any]) -> dict[str, Any]:
        """With a sample, the reply names the request id it is kept under (V2 `parameters.request_id`,
        Seldon `meta.tags.request_id`): the id labels are sent back for (mlops feedback send)."""
        if self.sampler is None:
            return reply
        if "outputs" in reply:
            return {**reply, "parameters": {**reply.get("parameters", {}), "request_id": request_id()}}
        meta = reply.get("meta", {})
        return {**reply, "meta": {**meta, "tags": {**meta.get("tags", {}), "request_id": request_id()}}}

    def _seldon(self, served: Served, request: dict[str, Any]) -> dict[str, Any]:
        data = request["data"]
        if not isinstance(data, dict):
            raise PayloadError('"data" must be an object with "ndarray" or "tensor"')
        if "ndarray" in data:
            values = data["ndarray"]
        elif isinstance(data.get("tensor"), dict) and {"shape", "values"} <= set(data["tensor"]):
            values = _reshaped(data["tensor"]["values"], data["tensor"]["shape"])
        else:
            raise PayloadError('"data" needs "ndarray" (nested lists) or "tensor" ({"shape", "values"})')
        return self._answer(self._predict(served, values))

    @staticmethod
    def _answer(probs: np.ndarray) -> dict[str, Any]:
        return {"jsonData": {"digits": probs.argmax(axis=1).tolist(), "probabilities": probs.tolist()}}

    def _v2(self, served: Served, request: dict[str, Any]) -> dict[str, Any]:
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
        probs = self._predict(served, images)
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
