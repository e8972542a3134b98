"""MLServer runtimes for registry models: `MLflowRuntime` answers requests the model rejects with
400 instead of 500; `RegistryAliasRuntime` (below) serves the version a registry alias points at.

The stock `mlserver_mlflow.MLflowRuntime` (1.7.1) lets decoding errors and MLflow's schema
enforcement errors escape its V2 `predict`, so a request with a missing column or a string where
the signature wants a number comes back as a 500: the client is told the server broke, and the
5xx-ratio alert pages someone for a caller's mistake. Its own `/invocations` handler already maps
schema errors to a 400; this does the same for V2. Selected with MLSERVER_MODEL_IMPLEMENTATION
(the stack sets it on every registry model served from the project's MLServer image).
It also answers the common request (all-numeric, the signature's columns in its order) with less
work for the same answer: `_numeric_frame` and `_DirectPredict` (benchmarks/serving_overhead.py).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import inspect
import json
import multiprocessing
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ErrorCode, INVALID_PARAMETER_VALUE
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.types import DataType
from mlserver.codecs import NumpyCodec, PandasCodec
from mlserver.codecs.numpy import to_dtype
from mlserver.errors import InferenceError, MLServerError
from mlserver.logging import logger
from mlserver.types import InferenceRequest, InferenceResponse, MetadataModelResponse, Parameters
from mlserver_mlflow import MLflowRuntime as StockMLflowRuntime
from mlserver_mlflow.codecs import TensorDictCodec
from prometheus_client import Counter, Gauge

CLIENT_ERRORS = {ErrorCode.Name(INVALID_PARAMETER_VALUE)}


# column types whose MLflow enforcement returns a column of this NumPy dtype as it is
NO_OP_DTYPES = {t: np.dtype(t.to_numpy()) for t in (DataType.double, DataType.float, DataType.long,
                                                    DataType.integer, DataType.boolean)}


@dataclass(frozen=True)
class _DirectPredict:
    """The scikit-learn model's predict for frames MLflow's schema enforcement would hand it as they
    are (1.3-2 ms of a one-row NEO request, rebuilding the same DataFrame column by column): the
    signature's columns, in its order, none optional, all of one numeric type, in the dtype that
    type enforces to, and no params schema (so no params). `PyFuncModel._predict` then calls
    `_predict_fn(frame, params=None)`, which is what this calls. Only for the `mlflow.sklearn`
    flavour, whose predict reads nothing else of pyfunc's (no prediction context)."""

    pyfunc: Any
    columns: tuple[str, ...]
    index: pd.Index  # the columns as the frame's labels, made once: a str Index costs ~35 µs per frame
    dtype: np.dtype
    takes_params: bool

    @classmethod
    def of(cls, pyfunc: Any) -> _DirectPredict | None:
        meta, schema = pyfunc.metadata, pyfunc.metadata.get_input_schema()
        if (pyfunc.loader_module != "mlflow.sklearn" or schema is None or schema.is_tensor_spec()
                or not schema.has_input_names() or schema.optional_input_names() or meta.get_params_schema()
                or meta._is_signature_from_type_hint() or meta._is_type_hint_from_example()):
            return None
        types = set(schema.input_types())
        if len(types) != 1 or next(iter(types)) not in NO_OP_DTYPES:
            return None
        columns = tuple(schema.input_names())
        if len(set(columns)) != len(columns):
            return None
        params = inspect.signature(pyfunc._predict_fn).parameters.get("params")
        return cls(pyfunc, columns, pd.Index(columns), NO_OP_DTYPES[next(iter(types))],
                   params is not None and params.kind != inspect.Parameter.VAR_KEYWORD)

    def takes(self, frame: pd.DataFrame) -> bool:
        return ((frame.columns is self.index or tuple(frame.columns) == self.columns)
                and all(d == self.dtype for d in frame.dtypes))

    def predict(self, frame: pd.DataFrame) -> Any:
        return self.pyfunc._predict_fn(frame, params=None) if self.takes_params else self.pyfunc._predict_fn(frame)


class MLflowRuntime(StockMLflowRuntime):
    _direct: tuple[Any, _DirectPredict | None] = (None, None)  # (the pyfunc it was made for, it)

    def decode_request(self, inference_request: InferenceRequest, default_codec: Any = None) -> Any:
        try:
            frame = self._numeric_frame(inference_request)
            return frame if frame is not None else super().decode_request(inference_request, default_codec)
        except (ValueError, TypeError) as err:  # e.g. "could not convert string to float: 'far'"
            raise InferenceError(f"the request does not decode into the model's inputs: {err}") from None

    def direct_predict(self, decoded: Any, params: dict | None) -> _DirectPredict | None:
        """The direct predict for this decoded request, or None (then pyfunc's predict enforces the
        schema and the params)."""
        direct = self._direct_of_model()
        takes = direct is not None and params is None and isinstance(decoded, pd.DataFrame) and direct.takes(decoded)
        return direct if takes else None

    def _direct_of_model(self) -> _DirectPredict | None:
        """Made once per loaded model (an alias swaps `_model`)."""
        made_for, direct = self._direct
        if made_for is not self._model:
            direct = _DirectPredict.of(self._model)
            self._direct = (self._model, direct)
        return direct

    def _numeric_frame(self, request: InferenceRequest) -> pd.DataFrame | None:
        """The DataFrame MLServer's `pd` codec would build, from one 2-D array instead of a NumPy
        array and a Series per column (1.5 of the 5.5 ms a one-row NEO request spends in the runtime,
        22 columns; benchmarks/serving_overhead.py). Only where that is the same frame: the request
        decodes as `pd`, every input is a flat tensor of one non-BYTES datatype, of one length, with
        no parameters of its own and the signature's `np` codec, names unique. Else None, and the
        stock path decodes it (and raises what a caller is told): MLflow still enforces the schema."""
        params, settings = request.parameters, self._settings.parameters
        content_type = (params and params.content_type) or (settings and settings.content_type)
        inputs = request.inputs
        if content_type != PandasCodec.ContentType or not inputs or inputs[0].datatype == "BYTES":
            return None
        names, rows = [i.name for i in inputs], inputs[0].shape[0] if inputs[0].shape else -1
        columns = []
        for i in inputs:
            meta = self._inputs_index.get(i.name)
            data = getattr(i.data, "root", i.data)
            if (i.datatype != inputs[0].datatype or i.parameters is not None or i.shape not in ([rows], [rows, 1])
                    or meta is None or not meta.parameters or meta.parameters.content_type != NumpyCodec.ContentType
                    or not isinstance(data, list) or len(data) != rows):
                return None
            columns.append(data)
        if len(set(names)) != len(names):
            return None
        try:
            values = np.array(columns, dtype=to_dtype(inputs[0]))  # the conversion NumpyCodec makes per column
        except (ValueError, TypeError):
            return None
        if values.shape != (len(names), rows):
            return None
        direct = self._direct_of_model()
        in_order = direct is not None and tuple(names) == direct.columns
        return pd.DataFrame(values.T, columns=direct.index if in_order else names)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """The stock predict (mlserver_mlflow 1.7.1), with the direct predict where it applies. No
        await between decoding and predicting: a request sees one version of the model."""
        try:
            decoded = self.decode_request(payload)
            params = payload.parameters.model_extra if payload.parameters and payload.parameters.model_extra else None
            direct = self.direct_predict(decoded, params)
            output = direct.predict(decoded) if direct is not None else self._model.predict(decoded, params=params)
            return self.encode_response(output, default_codec=TensorDictCodec)
        except MlflowException as err:
            if err.error_code in CLIENT_ERRORS:  # the input does not match the model's signature
                raise InferenceError(err.message) from None
            raise


# ---- serving a registry alias, following it as it moves (docs/decisions/0006-serve-by-alias.md) ----

ALIAS_RUNTIME_NAME = "mlops_mlserver.RegistryAliasRuntime"
MAX_RETRY_SECONDS = 600.0


@dataclass(frozen=True)
class AliasSettings:
    """`parameters.extra` of the model (env MLSERVER_MODEL_EXTRA): which alias to follow."""

    model: str
    alias: str
    poll_seconds: float
    # a shared server (many models, one process) starts even when this alias does not resolve or
    # load yet (MLServer 1.7.1 shuts the whole server down when one model fails at startup): the
    # model counts as loaded, so the server can turn ready, and answers 503 until a version loads
    start_unready: bool = False

    @classmethod
    def parse(cls, name: str, extra: Mapping[str, Any] | None) -> AliasSettings:
        extra = extra or {}
        missing = [key for key in ("registry_model", "alias") if not extra.get(key)]
        if missing:
            raise InferenceError(f"model {name!r}: parameters.extra (MLSERVER_MODEL_EXTRA) needs {missing}, "
                                 'e.g. {"registry_model": "NEOs", "alias": "champion", "poll_seconds": 30}')
        poll = float(extra.get("poll_seconds", 30))
        if poll <= 0:
            raise InferenceError(f"model {name!r}: parameters.extra.poll_seconds {poll} must be positive")
        return cls(str(extra["registry_model"]), str(extra["alias"]), poll, bool(extra.get("start_unready", False)))


@dataclass(frozen=True)
class LoadedVersion:
    """Everything a request reads from the runtime, for one registry version, swapped as one."""

    version: str
    run_id: str | None
    pyfunc: Any
    directory: str


class _Metrics:
    """Gauge of the served version and counter of failed loads, in prometheus_client's default
    registry: with MLSERVER_PARALLEL_WORKERS=0 that is the one MLServer's metrics endpoint serves
    (mlserver.metrics.register only makes histograms, exported in multi-process mode only)."""

    def __init__(self) -> None:
        self.version_info = Gauge("mlops_model_version_info", "Registry version a model server serves (1)",
                                  ["model", "alias", "version"])
        self.load_failures = Counter("mlops_model_load_failures_total",
                                     "Failed look-ups or loads of the version an alias points at; the "
                                     "previous version keeps serving", ["model", "alias", "stage"])
        self.samples = Counter("mlops_inference_samples_total", "Requests written to the inference log",
                               ["model", "alias"])
        self.sample_failures = Counter("mlops_inference_log_failures_total",
                                       "Failed writes of the inference log (the lines are kept for the next)",
                                       ["model", "alias"])


# MLServer re-imports (importlib.reload) this module for each model it reads from a model-settings.json
# (a shared server's repository): the series registered by the first import must survive that
_METRICS: _Metrics | None = globals().get("_METRICS")


def _metrics() -> _Metrics:
    global _METRICS
    if _METRICS is None:  # once per process: MLServer may instantiate the runtime again on reload
        _METRICS = _Metrics()
    return _METRICS


def _download_and_load(model: str, version: ModelVersion) -> LoadedVersion:
    """Blocking: download the version's artifacts through the tracking server (its mlflow-artifacts:/
    URIs are proxied, so only MLflow credentials are needed) and load them. Runs in a thread."""
    directory = tempfile.mkdtemp(prefix=f"mlops-{model}-{version.version}-")
    try:
        pyfunc = mlflow.pyfunc.load_model(f"models:/{model}/{version.version}", dst_path=directory)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return LoadedVersion(str(version.version), version.run_id, pyfunc, directory)


# ---- a sample of served requests and responses, for drift monitoring (docs/decisions/0017-drift-monitoring.md) ----

LOG_URI_ENV, LOG_RATE_ENV, LOG_FLUSH_ENV = ("MLOPS_INFERENCE_LOG_URI", "MLOPS_INFERENCE_LOG_RATE",
                                            "MLOPS_INFERENCE_LOG_FLUSH_SECONDS")
# what the sampler holds while the store is unreachable (of the pod's memory); the oldest go first beyond it
MAX_PENDING_CHARS = 32 * 2 ** 20


@dataclass(frozen=True)
class SampleSettings:
    """Where samples go (`<uri>/<model>/<alias>/<YYYY-MM-DD>/<time>-<id>.jsonl`; an artifact URI
    MLflow writes: s3:// with boto3, in the image, or a local path; gs:// would need
    google-cloud-storage) and which share of requests is kept. Off unless both env vars are set: a
    sample holds what callers sent, so keeping it is an explicit choice."""

    uri: str
    rate: float
    flush_seconds: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SampleSettings | None:
        uri, rate = env.get(LOG_URI_ENV, "").rstrip("/"), float(env.get(LOG_RATE_ENV) or 0)
        if not 0 <= rate <= 1:
            raise InferenceError(f"{LOG_RATE_ENV}={rate}: a share between 0 and 1 is allowed")
        flush = float(env.get(LOG_FLUSH_ENV) or 60)
        if flush <= 0:
            raise InferenceError(f"{LOG_FLUSH_ENV}={flush} must be positive")
        return cls(uri, rate, flush) if uri and rate > 0 else None


def request_id(payload: InferenceRequest) -> str:
    """Istio's x-request-id when the request came through the mesh: a shadow predictor receives the
    same header (Istio mirrors it), so champion and challenger samples pair up; else the V2 id."""
    headers = (payload.parameters and payload.parameters.headers) or {}
    return str(headers.get("x-request-id") or payload.id or uuid.uuid4())


class InferenceSampler:
    """Keeps `rate` of the requests (decided by a hash of the request id, so the champion and its
    shadow keep the same ones) with their outputs, and writes them as one JSON-lines object per
    flush. Writing is blocking (run it in a thread); a failed write keeps the lines for the next one."""

    def __init__(self, settings: SampleSettings, model: str, alias: str) -> None:
        self.settings, self.model, self.alias = settings, model, alias
        self._pending: list[str] = []
        self._chars = 0

    def wants(self, rid: str) -> bool:
        digest = int.from_bytes(hashlib.sha256(rid.encode()).digest()[:8], "big")
        return digest < self.settings.rate * 2 ** 64

    def record(self, rid: str, payload: InferenceRequest, response: InferenceResponse, version: str) -> None:
        line = {"time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "request_id": rid,
                "model": self.model, "alias": self.alias, "version": version,
                "inputs": {i.name: _values(i.data) for i in payload.inputs},
                "outputs": {o.name: _values(o.data) for o in response.outputs}}
        text = json.dumps(line, separators=(",", ":"))
        self._pending.append(text)
        self._chars += len(text)
        self._trim()

    def take(self) -> list[str]:
        """The pending lines, handed over on the event loop (no request appends meanwhile)."""
        lines, self._pending, self._chars = self._pending, [], 0
        return lines

    def keep(self, lines: list[str]) -> None:
        """Lines a write failed on, put back before the newer ones."""
        self._pending[:0] = lines
        self._chars += sum(map(len, lines))
        self._trim()

    def _trim(self) -> None:
        dropped = 0
        while self._chars > MAX_PENDING_CHARS and len(self._pending) > dropped + 1:
            self._chars -= len(self._pending[dropped])
            dropped += 1
        del self._pending[:dropped]

    def write(self, lines: list[str]) -> str:
        """Blocking: one object of `lines`; returns its path under the URI."""
        now = datetime.datetime.now(datetime.UTC)
        directory = f"{self.model}/{self.alias}/{now:%Y-%m-%d}"
        name = f"{now:%H%M%S}-{uuid.uuid4().hex[:12]}.jsonl"
        with tempfile.TemporaryDirectory(prefix="mlops-samples-") as tmp:
            path = Path(tmp) / name
            path.write_text("\n".join(lines) + "\n")
            get_artifact_repository(self.settings.uri).log_artifact(str(path), directory)
        return f"{directory}/{name}"


def _values(data: Any) -> list[Any]:
    values = data.root if hasattr(data, "root") else data  # TensorData in MLServer 1.7.1
    return [v.decode() if isinstance(v, bytes) else v for v in values]


class RegistryAliasRuntime(MLflowRuntime):
    """Serves `models:/<registry_model>@<alias>` and follows the alias without a restart.

    Every `poll_seconds` it looks the alias up; a new version is downloaded and loaded in a thread
    while the current one keeps answering, then swapped in on the event loop between two requests
    (the stock predict has no await between decoding and predicting, so a request sees one version
    from start to end). A failed look-up or load keeps the current version, counts
    `mlops_model_load_failures_total` and is retried with backoff. Needs MLSERVER_PARALLEL_WORKERS=0:
    with inference workers each worker would poll on its own and the main process caches metadata.
    Credentials: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME/PASSWORD (a READ-only user).
    With MLOPS_INFERENCE_LOG_URI and MLOPS_INFERENCE_LOG_RATE set it also keeps a sample of the
    requests it answered (`InferenceSampler`), written every MLOPS_INFERENCE_LOG_FLUSH_SECONDS and at
    unload, with the store's own credentials (AWS_* / MLFLOW_S3_ENDPOINT_URL, or workload identity).
    """

    _poller: asyncio.Task | None = None
    _flusher: asyncio.Task | None = None
    _sampler: InferenceSampler | None = None
    _current: LoadedVersion | None = None

    async def load(self) -> bool:
        if multiprocessing.parent_process() is not None:
            raise InferenceError(f"{ALIAS_RUNTIME_NAME} runs in MLServer's main process only: "
                                 "set MLSERVER_PARALLEL_WORKERS=0")
        self._alias = AliasSettings.parse(self.name, self._settings.parameters and self._settings.parameters.extra)
        self._failed: dict[str, tuple[int, float]] = {}  # version -> (attempts, next retry time)
        metrics = _metrics()
        for stage in ("resolve", "load"):  # 0-valued series, so increase() sees the first failure
            metrics.load_failures.labels(self._alias.model, self._alias.alias, stage)
        stage = "resolve"
        try:  # a failure here fails the start (nothing to keep serving), unless start_unready
            version = await asyncio.to_thread(self._resolve)
            stage = "load"
            self._apply(await asyncio.to_thread(_download_and_load, self._alias.model, version))
        except Exception as err:
            if not self._alias.start_unready:
                raise
            metrics.load_failures.labels(self._alias.model, self._alias.alias, stage).inc()
            logger.error(f"model {self.name!r}: models:/{self._alias.model}@{self._alias.alias} is not servable "
                         f"yet, answering 503 until it is (retried every {self._alias.poll_seconds:g} s): {err!r}")
        self._poller = asyncio.get_running_loop().create_task(self._follow())
        sampling = SampleSettings.from_env(os.environ)
        if sampling is not None:
            self._sampler = InferenceSampler(sampling, self._alias.model, self._alias.alias)
            for counter in (metrics.samples, metrics.sample_failures):
                counter.labels(self._alias.model, self._alias.alias)
            self._flusher = asyncio.get_running_loop().create_task(self._flush_every(sampling.flush_seconds))
        return True

    async def unload(self) -> bool:
        for task in (self._poller, self._flusher):
            if task is not None:
                task.cancel()
        if self._sampler is not None:
            await self.flush_samples()
        if self._current is not None:
            shutil.rmtree(self._current.directory, ignore_errors=True)
        return True

    def _resolve(self) -> ModelVersion:
        return MlflowClient().get_model_version_by_alias(self._alias.model, self._alias.alias)

    def _apply(self, loaded: LoadedVersion) -> None:
        """Swap in a loaded version: synchronous, so no request interleaves with it."""
        previous = self._current
        self._model = loaded.pyfunc
        self._input_schema = loaded.pyfunc.metadata.get_input_schema()
        self._signature = loaded.pyfunc.metadata.signature
        self._sync_metadata()
        self._current = loaded
        a, gauge = self._alias, _metrics().version_info
        gauge.labels(a.model, a.alias, loaded.version).set(1)
        if previous is not None:
            if previous.version != loaded.version:
                gauge.remove(a.model, a.alias, previous.version)
            shutil.rmtree(previous.directory, ignore_errors=True)
        logger.info(f"model {self.name!r}: serving models:/{a.model}/{loaded.version} (alias {a.alias!r})")

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self._alias.poll_seconds)
            try:
                await self.refresh()
            except Exception:  # keep following: one bad round must not stop the poller for good
                logger.exception(f"model {self.name!r}: following models:/{self._alias.model}@{self._alias.alias}")

    async def _flush_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self.flush_samples()

    async def flush_samples(self) -> None:
        """Write the pending samples in a thread; a failure is logged and counted, never raised."""
        a, metrics = self._alias, _metrics()
        lines = self._sampler.take()
        if not lines:
            return
        try:
            await asyncio.to_thread(self._sampler.write, lines)
        except Exception as err:  # store unreachable, credentials revoked: serving goes on
            self._sampler.keep(lines)
            metrics.sample_failures.labels(a.model, a.alias).inc()
            logger.error(f"model {self.name!r}: writing {len(lines)} samples to {self._sampler.settings.uri} "
                         f"failed, kept for the next try: {err!r}")
            return
        metrics.samples.labels(a.model, a.alias).inc(len(lines))

    async def refresh(self) -> None:
        """One look-up of the alias, and a load + swap if it moved to a version not failed recently."""
        a, served = self._alias, (self._current.version if self._current else None)
        try:
            version = await asyncio.to_thread(self._resolve)
        except Exception as err:  # MLflow unreachable, alias deleted, credentials revoked
            _metrics().load_failures.labels(a.model, a.alias, "resolve").inc()
            logger.error(f"model {self.name!r}: cannot resolve models:/{a.model}@{a.alias}, still serving "
                         f"version {served}: {err}")
            return
        if str(version.version) == served:
            self._failed.clear()
            return
        attempts, retry_at = self._failed.get(str(version.version), (0, 0.0))
        if time.monotonic() < retry_at:
            return
        try:
            loaded = await asyncio.to_thread(_download_and_load, a.model, version)
        except Exception as err:  # missing or corrupt artifacts, incompatible flavour, ...
            delay = min(self._alias.poll_seconds * 2 ** attempts, MAX_RETRY_SECONDS)
            self._failed[str(version.version)] = (attempts + 1, time.monotonic() + delay)
            _metrics().load_failures.labels(a.model, a.alias, "load").inc()
            logger.error(f"model {self.name!r}: loading models:/{a.model}/{version.version} (alias {a.alias!r}) failed, "
                         f"still serving version {served}; retry in {delay:.0f} s: {err!r}")
            return
        self._apply(loaded)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        served = self._current
        if served is None:
            a = self._alias
            raise MLServerError(f"model {self.name!r}: no version of models:/{a.model}@{a.alias} is loaded yet",
                                status_code=503)
        response = await super().predict(payload)
        response.model_version = served.version
        if self._sampler is not None:
            rid = request_id(payload)
            # the id the sample keeps it under, for labels fed back (docs/decisions/0018-label-feedback.md):
            # the caller cannot know it when the mesh replaced its x-request-id
            parameters = response.parameters.model_dump() if response.parameters else {}
            response.parameters = Parameters(**{**parameters, "request_id": rid})
            if self._sampler.wants(rid):
                self._sampler.record(rid, payload, response, served.version)
        return response

    async def metadata(self) -> MetadataModelResponse:
        metadata = await super().metadata()
        served, a = self._current, self._alias
        if served is None:  # not servable yet (a shared server's model whose alias does not load)
            return metadata
        metadata.versions = [served.version]
        parameters = metadata.parameters.model_dump() if metadata.parameters else {}
        metadata.parameters = Parameters(**parameters, registry_model=a.model, alias=a.alias,
                                         version=served.version, run_id=served.run_id)
        return metadata
