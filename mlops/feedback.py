"""`mlops feedback`: a live quality signal for served classifiers from labels fed back by request id.

    mlops feedback send --model NEOs --log-uri s3://<bucket>/inference-log --request-id R --labels 1 0 …
    mlops feedback send --model NEOs --log-uri … --file labels.jsonl   # lines {"request_id": R, "labels": [...]}
    mlops feedback evaluate --model NEOs --log-uri … --metric f1 [--positive-class 1] [--alias champion]
                            [--window-hours 24] [--min-labels 50] [--retention-days 7] [--pushgateway URL]
    python -m mlops.feedback …   (the same, in the evaluation image, from the feedback CronJob)

Labels are stored beside the request sample the serving runtime keeps (mlops/drift.py reads it):
`<log-uri>/<model>/feedback/<YYYY-MM-DD>/<HHMMSS>-<id>.jsonl`, one line per labelled request
(`time`, `request_id`, `labels`: one true class per row of the request, in row order). `evaluate`
joins the sampled requests of `--alias` answered in the last `--window-hours` with the labels sent
for them (the latest label of a request wins; labels of unsampled requests are left out: only the
sample holds what was answered) and computes accuracy or the F1 score of `--positive-class`
(docs/decisions/0018-label-feedback.md). It pushes `model_quality_<metric>{model, alias}` and
`model_quality_evaluation_timestamp_seconds{model}`, the names modules/monitoring/rules/quality.yaml
reads (ModelQualityDegraded, ModelQualityStale), to the Pushgateway (job `model-feedback`, one group
per model). Below `--min-labels` labelled rows it only updates the row count and the run time, so
the last computed quality and its timestamp stay and ModelQualityStale fires once labels stop coming.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlops.drift import _label, _positive, _repository, prune, read_lines

PUSH_JOB = "model-feedback"
LABELS = "feedback"  # the directory beside the aliases' samples: an alias may not be called so
METRICS = ("accuracy", "f1")


@dataclass(frozen=True)
class Joined:
    """Served predictions paired with their true labels, row by row."""

    predictions: list[str]
    labels: list[str]
    requests: int  # labelled requests found in the sample
    mismatched: int  # labelled requests whose label count differs from their rows (left out)


@dataclass(frozen=True)
class QualityReport:
    model: str
    alias: str
    metric: str
    rows: int
    value: float | None  # None below min_labels
    requests: int = 0
    mismatched: int = 0


# ------------------------------------------------------------------------------------- labels in

def label_line(request_id: str, labels: Sequence[Any], when: dt.datetime) -> str:
    if not request_id:
        raise ValueError("a label needs the request id the answer was served for")
    if not labels:
        raise ValueError(f"request {request_id!r}: no labels (one per row of the request)")
    return json.dumps({"time": when.isoformat(timespec="seconds"), "request_id": request_id,
                       "labels": [_label(v) for v in labels]}, separators=(",", ":"))


def send(uri: str, model: str, labels: Mapping[str, Sequence[Any]], now: dt.datetime | None = None) -> str:
    """Write one object of labels (request id -> one label per row); returns its path under `uri`."""
    now = now or dt.datetime.now(dt.UTC)
    lines = [label_line(rid, values, now) for rid, values in labels.items()]
    directory = f"{model}/{LABELS}/{now:%Y-%m-%d}"
    name = f"{now:%H%M%S}-{uuid.uuid4().hex[:12]}.jsonl"
    with tempfile.TemporaryDirectory(prefix="mlops-feedback-") as tmp:
        path = Path(tmp) / name
        path.write_text("\n".join(lines) + "\n")
        _repository(uri).log_artifact(str(path), directory)
    return f"{directory}/{name}"


def labels_from(lines: Iterable[str]) -> dict[str, list[Any]]:
    """A JSON-lines file of `{"request_id": …, "labels": [...]}` as send() takes it."""
    out = {}
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            out[str(line["request_id"])] = list(line["labels"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"line {number}: expected {{\"request_id\": ..., \"labels\": [...]}} ({err!r})") from None
    return out


# ------------------------------------------------------------------------------------ the join

def join(sampled: Iterable[Mapping[str, Any]], labelled: Iterable[Mapping[str, Any]]) -> Joined:
    """Pair each sampled request's predictions (its first output, as the drift job reads them) with
    the latest labels sent for its id."""
    latest: dict[str, tuple[str, list[str]]] = {}
    for line in labelled:
        rid, when = line["request_id"], line["time"]
        if rid not in latest or when >= latest[rid][0]:
            latest[rid] = (when, [_label(v) for v in line["labels"]])
    predictions, labels, requests, mismatched = [], [], 0, 0
    for line in sampled:
        if line["request_id"] not in latest:
            continue
        served = [_label(v) for v in np.ravel(next(iter(line["outputs"].values()), [])).tolist()]
        truth = latest[line["request_id"]][1]
        if len(served) != len(truth):
            mismatched += 1
            continue
        requests += 1
        predictions += served
        labels += truth
    return Joined(predictions, labels, requests, mismatched)


def accuracy(predictions: Sequence[str], labels: Sequence[str]) -> float:
    return sum(p == t for p, t in zip(predictions, labels, strict=True)) / len(labels)


def f1(predictions: Sequence[str], labels: Sequence[str], positive: str) -> float:
    """F1 of the positive class; 0 when it was neither predicted nor true (as sklearn's zero_division=0)."""
    pairs = list(zip(predictions, labels, strict=True))
    tp = sum(p == positive and t == positive for p, t in pairs)
    fp = sum(p == positive and t != positive for p, t in pairs)
    fn = sum(p != positive and t == positive for p, t in pairs)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def score(metric: str, joined: Joined, positive: str) -> float:
    if metric == "accuracy":
        return accuracy(joined.predictions, joined.labels)
    return f1(joined.predictions, joined.labels, positive)


# ---------------------------------------------------------------------------------------- the job

def report(model: str, alias: str, metric: str, joined: Joined, min_labels: int, positive: str) -> QualityReport:
    rows = len(joined.labels)
    value = score(metric, joined, positive) if rows >= min_labels else None
    return QualityReport(model, alias, metric, rows, value, joined.requests, joined.mismatched)


def registry_of(r: QualityReport, now: float):
    """The gauges of one run: with a value, the quality gauges the rules read; without, the counts only."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    Gauge("model_feedback_labels", "Labelled served rows in the feedback window", ["model"],
          registry=registry).labels(r.model).set(r.rows)
    Gauge("model_feedback_last_run_timestamp_seconds", "When the feedback job last ran", ["model"],
          registry=registry).labels(r.model).set(now)
    if r.value is not None:
        Gauge(f"model_quality_{r.metric}", f"{r.metric} of the served model on labels fed back",
              ["model", "alias"], registry=registry).labels(r.model, r.alias).set(r.value)
        Gauge("model_quality_evaluation_timestamp_seconds", "When the quality metric was computed", ["model"],
              registry=registry).labels(r.model).set(now)
    return registry


def evaluate(args: argparse.Namespace, now: dt.datetime | None = None) -> QualityReport:
    now = now or dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(hours=args.window_hours)
    sampled = read_lines(args.log_uri, args.model, args.alias, since, now)
    labelled = read_lines(args.log_uri, args.model, LABELS, since, now)
    result = report(args.model, args.alias, args.metric, join(sampled, labelled), args.min_labels,
                    args.positive_class)
    if args.pushgateway:
        from prometheus_client import push_to_gateway, pushadd_to_gateway

        # a full push replaces the group; below min_labels only the counts are replaced (POST)
        push = push_to_gateway if result.value is not None else pushadd_to_gateway
        push(args.pushgateway, job=PUSH_JOB, registry=registry_of(result, now.timestamp()),
             grouping_key={"model": args.model}, timeout=30)
    if args.retention_days:
        prune(args.log_uri, args.model, LABELS, args.retention_days, now.date())
    return result


def print_report(r: QualityReport) -> None:
    value = f"{r.metric}={r.value:.4f}" if r.value is not None else f"{r.metric} not computed (too few labels)"
    print(f"{r.model}@{r.alias}: {r.rows} labelled rows from {r.requests} requests "
          f"({r.mismatched} with a label count unlike their rows): {value}")


# ------------------------------------------------------------------------------------------ CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", required=True)
    send_p = actions.add_parser("send", help="store true labels for served request ids")
    evaluate_p = actions.add_parser("evaluate", help="accuracy/F1 of the sampled answers against their labels")
    for sub in (send_p, evaluate_p):
        sub.add_argument("--model", required=True, help="registered model name (the alert's `model` label)")
        sub.add_argument("--log-uri", required=True,
                         help="the serving runtime's sample, e.g. s3://<bucket>/inference-log")
    send_p.add_argument("--request-id", help="the served request's id (x-request-id, or the V2 request id)")
    send_p.add_argument("--labels", nargs="+", help="the true class of each row of that request")
    send_p.add_argument("--file", type=argparse.FileType(), help='JSON lines {"request_id": …, "labels": [...]}')
    evaluate_p.add_argument("--metric", required=True, choices=METRICS)
    evaluate_p.add_argument("--positive-class", default="1", help="the class F1 is computed for")
    evaluate_p.add_argument("--alias", default="champion", help="the served alias whose answers are scored")
    evaluate_p.add_argument("--window-hours", type=_positive(float), default=24.0)
    evaluate_p.add_argument("--min-labels", type=_positive(int), default=50,
                            help="labelled rows below which no quality is pushed")
    evaluate_p.add_argument("--retention-days", type=int, default=0, help="delete label days this old (0: keep)")
    evaluate_p.add_argument("--pushgateway", help="Pushgateway URL (default: print only)")


def run(args: argparse.Namespace) -> int:
    if args.action == "evaluate":
        print_report(evaluate(args))
        return 0
    if args.file is not None:
        labels = labels_from(args.file)
    elif args.request_id and args.labels:
        labels = {args.request_id: args.labels}
    else:
        raise SystemExit("mlops feedback send: give --request-id with --labels, or --file")
    print(send(args.log_uri, args.model, labels))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlops feedback", description=__doc__.splitlines()[0])
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
