"""`mlops drift`: label-free monitoring of a served model — served traffic against its training reference.

    mlops drift --model NEOs --log-uri s3://<bucket>/inference-log [--alias champion] [--shadow challenger]
                [--window-hours 24] [--retention-days 7] [--min-samples 100] [--pushgateway URL]
    python -m mlops.drift …   (the same, in the evaluation image, from the drift CronJob)

Reads the last `--window-hours` of the sample the serving runtime writes
(modules/serving/mlserver-image/mlops_mlserver.py, `InferenceSampler`:
`<log-uri>/<model>/<alias>/<YYYY-MM-DD>/*.jsonl`) and the reference the alias's training run
logged (`reference/reference.json`: a sample of the training features and the model's class shares
on it, workloads/neo/train.py). Per feature: the population stability index on ten quantile bins
of the reference (`model_drift_score`: < 0.1 stable, 0.1–0.25 moderate, > 0.25 a shift) and the
two-sample Kolmogorov–Smirnov p-value (scipy); the served class shares beside the reference's; and,
when the shadow's sample is there too, the share of paired requests (same request id) on which
shadow and champion answered the same (`model_shadow_agreement`). Below `--min-samples` requests no
score is pushed (a handful of rows says nothing). Pushes to the Pushgateway (job `model-drift`,
one group per model; a push replaces the group); rules in modules/monitoring/rules/drift.yaml.
Deletes the sample's days older than `--retention-days` (the retention the stack promises).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas and scipy are imported where used: `mlops` builds this parser for every command
    import pandas as pd

PUSH_JOB = "model-drift"
REFERENCE_PATH = "reference/reference.json"  # workloads/neo/train.py REFERENCE_PATH
BINS = 10
EPSILON = 1e-4  # floor of a bin's share, so an empty bin does not make the PSI infinite


@dataclass(frozen=True)
class Reference:
    version: str
    features: pd.DataFrame
    prediction_shares: Mapping[str, float]


@dataclass(frozen=True)
class Sample:
    """Served requests of one alias: one row per request row, and the answer for each."""

    features: pd.DataFrame
    predictions: pd.Series
    answers: Mapping[str, list[Any]]  # request id -> the outputs of that request (for shadow pairing)
    requests: int


@dataclass(frozen=True)
class FeatureDrift:
    psi: float
    ks_p_value: float


@dataclass(frozen=True)
class DriftReport:
    model: str
    alias: str
    version: str
    samples: int  # rows in the window
    features: Mapping[str, FeatureDrift] = field(default_factory=dict)  # empty below min_samples
    prediction_shares: Mapping[str, float] = field(default_factory=dict)
    reference_shares: Mapping[str, float] = field(default_factory=dict)
    shadow_agreement: float | None = None
    shadow_pairs: int = 0


# ------------------------------------------------------------------------------------ statistics

def psi(reference: np.ndarray, current: np.ndarray, bins: int = BINS) -> float:
    """Population stability index of `current` against `reference` on the reference's quantile bins."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1) / len(reference)
    cur = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1) / len(current)
    ref, cur = np.clip(ref, EPSILON, None), np.clip(cur, EPSILON, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, FeatureDrift]:
    missing = sorted(set(reference.columns) - set(current.columns))
    if missing:
        raise ValueError(f"the served requests have no column {missing}: not the model the reference belongs to")
    from scipy import stats

    out = {}
    for column in reference.columns:
        ref = reference[column].dropna().to_numpy(float)
        cur = current[column].dropna().to_numpy(float)
        out[column] = FeatureDrift(psi(ref, cur), float(stats.ks_2samp(ref, cur).pvalue))
    return out


def shares(predictions: pd.Series) -> dict[str, float]:
    return {_label(k): float(v) for k, v in predictions.value_counts(normalize=True).items()}


def _label(value: Any) -> str:
    """A class as a label value: 1.0, 1 and True are the class `1`."""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def agreement(champion: Mapping[str, list[Any]], shadow: Mapping[str, list[Any]]) -> tuple[float | None, int]:
    """Share of the requests both sampled on which the two answered the same, and how many there were."""
    paired = sorted(set(champion) & set(shadow))
    if not paired:
        return None, 0
    return sum(champion[r] == shadow[r] for r in paired) / len(paired), len(paired)


# ----------------------------------------------------------------------------------------- inputs

def load_reference(model: str, alias: str, path: str = REFERENCE_PATH) -> Reference:
    """The reference the run behind `models:/<model>@<alias>` logged (credentials: MLFLOW_TRACKING_*)."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    version = MlflowClient().get_model_version_by_alias(model, alias)
    try:
        reference = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{path}")
    except Exception as err:
        raise ValueError(f"models:/{model}@{alias} (version {version.version}, run {version.run_id}) has no "
                         f"{path}: it was trained before references were logged; retrain it") from err
    return Reference(str(version.version), pd.DataFrame(reference["features"]), reference["prediction_shares"])


def _repository(uri: str):
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(uri)


def _days(repo, prefix: str) -> list[tuple[dt.date, str]]:
    days = []
    for entry in repo.list_artifacts(prefix):
        if entry.is_dir:
            try:
                days.append((dt.date.fromisoformat(Path(entry.path).name), entry.path))
            except ValueError:  # not a day of the sample: left alone
                continue
    return sorted(days)


def read_lines(uri: str, model: str, alias: str, since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
    """The sampled requests of `model`/`alias` answered from `since` to `until` (UTC)."""
    repo, lines = _repository(uri), []
    with tempfile.TemporaryDirectory(prefix="mlops-drift-") as tmp:
        for day, path in _days(repo, f"{model}/{alias}"):
            if not since.date() <= day <= until.date():
                continue
            for entry in repo.list_artifacts(path):
                if entry.is_dir or not entry.path.endswith(".jsonl"):
                    continue
                local = repo.download_artifacts(entry.path, tmp)
                for raw in Path(local).read_text().splitlines():
                    line = json.loads(raw)
                    if since <= dt.datetime.fromisoformat(line["time"]) <= until:
                        lines.append(line)
    return lines


def sample_of(lines: Iterable[Mapping[str, Any]]) -> Sample:
    """Rows of the V2 requests (one input per column, as MLServer's pandas codec reads them) and the
    first output as the prediction of each row."""
    import pandas as pd

    frames, predictions, answers, requests = [], [], {}, 0
    for line in lines:
        requests += 1
        frames.append(pd.DataFrame(line["inputs"]))
        output = next(iter(line["outputs"].values()), [])
        predictions.extend(np.ravel(output).tolist())
        answers[line["request_id"]] = line["outputs"]
    features = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return Sample(features, pd.Series(predictions), answers, requests)


def prune(uri: str, model: str, alias: str, keep_days: int, today: dt.date) -> list[str]:
    """Delete the sample's days older than `keep_days`; returns what was deleted."""
    repo, deleted = _repository(uri), []
    for day, path in _days(repo, f"{model}/{alias}"):
        if (today - day).days >= keep_days:
            repo.delete_artifacts(path)
            deleted.append(path)
    return deleted


# ---------------------------------------------------------------------------------------- the job

def report(model: str, alias: str, reference: Reference, sample: Sample, min_samples: int,
           shadow: Sample | None = None) -> DriftReport:
    rows = len(sample.features)
    pair = agreement(sample.answers, shadow.answers) if shadow is not None else (None, 0)
    if rows < min_samples:
        return DriftReport(model, alias, reference.version, rows, shadow_agreement=pair[0], shadow_pairs=pair[1])
    return DriftReport(model, alias, reference.version, rows, feature_drift(reference.features, sample.features),
                       shares(sample.predictions), dict(reference.prediction_shares), *pair)


def registry_of(r: DriftReport, now: float):
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    model = {"model": r.model}

    def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, doc, ["model", *labels], registry=registry)

    gauge("model_drift_last_run_timestamp_seconds", "When the drift job last ran").labels(**model).set(now)
    gauge("model_drift_samples", "Served rows in the drift window").labels(**model).set(r.samples)
    gauge("model_drift_reference_info", "Registry version whose reference was compared (1)",
          ["alias", "version"]).labels(r.model, r.alias, r.version).set(1)
    if r.features:
        score = gauge("model_drift_score", "Population stability index of a feature, served vs training",
                      ["feature"])
        p_value = gauge("model_drift_ks_p_value", "Kolmogorov-Smirnov p-value of a feature, served vs training",
                        ["feature"])
        for feature, d in r.features.items():
            score.labels(r.model, feature).set(d.psi)
            p_value.labels(r.model, feature).set(d.ks_p_value)
        share = gauge("model_prediction_share", "Share of served rows predicted as a class", ["class"])
        reference = gauge("model_reference_prediction_share", "Share of a class on the training reference",
                          ["class"])
        for cls in sorted({*r.prediction_shares, *r.reference_shares}):
            share.labels(r.model, cls).set(r.prediction_shares.get(cls, 0.0))
            reference.labels(r.model, cls).set(r.reference_shares.get(cls, 0.0))
    if r.shadow_agreement is not None:
        gauge("model_shadow_agreement", "Share of paired requests the shadow answered as the served model"
              ).labels(**model).set(r.shadow_agreement)
        gauge("model_shadow_pairs", "Requests sampled from both the served model and its shadow"
              ).labels(**model).set(r.shadow_pairs)
    return registry


def run(args: argparse.Namespace, now: dt.datetime | None = None) -> DriftReport:
    now = now or dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(hours=args.window_hours)
    reference = load_reference(args.model, args.alias)
    sample = sample_of(read_lines(args.log_uri, args.model, args.alias, since, now))
    shadow = sample_of(read_lines(args.log_uri, args.model, args.shadow, since, now)) if args.shadow else None
    result = report(args.model, args.alias, reference, sample, args.min_samples, shadow)
    if args.pushgateway:
        from prometheus_client import push_to_gateway

        push_to_gateway(args.pushgateway, job=PUSH_JOB, registry=registry_of(result, now.timestamp()),
                        grouping_key={"model": args.model}, timeout=30)
    if args.retention_days:
        for alias in filter(None, (args.alias, args.shadow)):
            prune(args.log_uri, args.model, alias, args.retention_days, now.date())
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlops drift", description=__doc__.splitlines()[0])
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registered model name (the alert's `model` label)")
    p.add_argument("--alias", default="champion", help="the served alias whose sample and reference are compared")
    p.add_argument("--shadow", help="the shadow's alias (e.g. challenger): its agreement with --alias")
    p.add_argument("--log-uri", required=True, help="where the runtime writes samples, e.g. s3://<bucket>/inference-log")
    p.add_argument("--window-hours", type=_positive(float), default=24.0)
    p.add_argument("--min-samples", type=_positive(int), default=100, help="rows below which no score is pushed")
    p.add_argument("--retention-days", type=int, default=0, help="delete sample days this old (0: keep)")
    p.add_argument("--pushgateway", help="Pushgateway URL (default: print only)")


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text}: a positive number is allowed")
        return value
    return parse


def print_report(r: DriftReport) -> None:
    print(f"{r.model}@{r.alias} (version {r.version}): {r.samples} rows in the window")
    for feature, d in sorted(r.features.items(), key=lambda kv: -kv[1].psi):
        print(f"  {feature:32s} psi={d.psi:.3f} ks_p={d.ks_p_value:.3g}")
    if r.features:
        print(f"  prediction shares {dict(r.prediction_shares)} (reference {dict(r.reference_shares)})")
    if r.shadow_agreement is not None:
        print(f"  shadow agreement {r.shadow_agreement:.3f} on {r.shadow_pairs} paired requests")


def main(argv: list[str] | None = None) -> None:
    print_report(run(parser().parse_args(argv)))


if __name__ == "__main__":
    main()
