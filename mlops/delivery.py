"""`mlops delivery`: the four delivery (DORA) metrics of each registered model, printed and pushed.

    python -m mlops.delivery [--model M ...] [--window-days 30] [--prometheus URL] [--push URL]

The data-lifecycle thesis measures delivery the DORA way; here the events are the model version
tags the pipeline writes (workloads/common), read with MLflow's client (MLFLOW_TRACKING_*):

    lineage.git.commit_time  the trained commit's time (lineage.provenance, at registration)
    promoted_at              when `champion` moved to the version (promotion.promote)
    rolled_back_at           when a rollback moved `champion` off it (promotion.rollback)
    smoke_failed_at          when a smoke test of it failed (hooks.run)

Per model, over the window [now - N days, now]:

    lead time             promoted_at - commit time of each promotion in the window: last, median
    deployment frequency  promotions in the window / N days
    change failure rate   promotions rolled back, or failing a smoke test, after promotion / promotions
    time to restore       with --prometheus: how long each episode of a quality alert
                          (ModelQualityDegraded) fired that resolved in the window, from the raw
                          samples of Prometheus' ALERTS series (to one rule evaluation interval);
                          without: promoted_at → rolled_back_at of the rolled-back promotions (DORA's
                          "failed deployment recovery time"); the `source` label says which

A version promoted again after a rollback counts once, at its last promotion (one tag per event).
Versions promoted before these tags existed have no `promoted_at` and are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mlflow is imported where it is used: `mlops --help` must not wait for it
    from mlflow import MlflowClient

PUSH_JOB = "mlops-delivery"
QUALITY_ALERTS = ("ModelQualityDegraded",)
EPISODE_GAP_SECONDS = 300.0  # samples further apart than this belong to separate firing episodes
ALERTS_SOURCE, ROLLBACKS_SOURCE = "alerts", "rollbacks"
# workloads/common/lineage.py COMMIT_TIME_TAG (not imported: its numpy/pandas data code is not in the image)
COMMIT_TIME_TAG = "lineage.git.commit_time"


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 tag value as an aware datetime (naive: UTC); None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Promotion:
    version: str
    promoted_at: datetime
    committed_at: datetime | None
    rolled_back_at: datetime | None
    smoke_failed_at: datetime | None

    @property
    def failed(self) -> bool:
        """Rolled back, or failing a smoke test, after this promotion (a challenger's failed smoke
        test before it is not a failure of the change in production)."""
        return any(t is not None and t >= self.promoted_at for t in (self.rolled_back_at, self.smoke_failed_at))

    @property
    def lead_time(self) -> float | None:
        return (self.promoted_at - self.committed_at).total_seconds() if self.committed_at else None

    @property
    def recovery_time(self) -> float | None:
        if self.rolled_back_at is None or self.rolled_back_at < self.promoted_at:
            return None
        return (self.rolled_back_at - self.promoted_at).total_seconds()


def promotions(client: MlflowClient, model: str) -> list[Promotion]:
    """Every version of `model` with a `promoted_at` tag, oldest promotion first."""
    from workloads.common import promotion

    found, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{model}'", page_token=token)
        for v in page:
            tags = v.tags or {}
            promoted = parse_time(tags.get(promotion.PROMOTED_TAG))
            if promoted is not None:
                found.append(Promotion(str(v.version), promoted, parse_time(tags.get(COMMIT_TIME_TAG)),
                                       parse_time(tags.get(promotion.ROLLED_BACK_TAG)),
                                       parse_time(tags.get(promotion.SMOKE_FAILED_TAG))))
        token = page.token
        if not token:
            return sorted(found, key=lambda p: p.promoted_at)


def firing_episodes(timestamps: Iterable[float], gap: float = EPISODE_GAP_SECONDS) -> list[tuple[float, float]]:
    """(first, last) sample time of each run of samples no more than `gap` s apart."""
    episodes: list[tuple[float, float]] = []
    for t in sorted(set(timestamps)):
        if episodes and t - episodes[-1][1] <= gap:
            episodes[-1] = (episodes[-1][0], t)
        else:
            episodes.append((t, t))
    return episodes


def restored_durations(timestamps: Iterable[float], start: float, end: float,
                       gap: float = EPISODE_GAP_SECONDS) -> list[float]:
    """Durations of the episodes that began and resolved inside [start, end]: one still firing
    at `end` (a sample within `gap` of it) is not restored, one firing at `start` began before."""
    return [last - first for first, last in firing_episodes(timestamps, gap)
            if first - start > gap and end - last > gap]


def alert_samples(prometheus: str, alerts: Sequence[str], start: float, end: float,
                  timeout: float = 30.0) -> dict[str, list[float]]:
    """model → times of the raw samples of ALERTS{alertname in alerts, alertstate="firing"} in
    [start, end] (an instant query of a range selector: raw samples, no lookback smearing)."""
    names = "|".join(alerts)
    query = f'ALERTS{{alertname=~"{names}", alertstate="firing"}}[{int(end - start)}s]'
    url = f"{prometheus.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": query, "time": f"{end:.3f}"})
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the stack's Prometheus
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus {prometheus}: {body.get('error') or body}")
    samples: dict[str, list[float]] = {}
    for series in body["data"]["result"]:
        model = series["metric"].get("model")
        if model:
            samples.setdefault(model, []).extend(float(t) for t, _ in series["values"])
    return samples


@dataclass(frozen=True)
class Delivery:
    model: str
    window_days: float
    promotions: tuple[Promotion, ...]  # promoted inside the window, oldest first
    restore_seconds: tuple[float, ...]
    restore_source: str

    @property
    def deployments(self) -> int:
        return len(self.promotions)

    @property
    def per_day(self) -> float:
        return self.deployments / self.window_days

    @property
    def lead_times(self) -> list[float]:
        return [p.lead_time for p in self.promotions if p.lead_time is not None]

    @property
    def lead_time_last(self) -> float | None:
        return self.lead_times[-1] if self.lead_times else None

    @property
    def lead_time_median(self) -> float | None:
        return statistics.median(self.lead_times) if self.lead_times else None

    @property
    def failures(self) -> int:
        return sum(p.failed for p in self.promotions)

    @property
    def change_failure_ratio(self) -> float | None:
        return self.failures / self.deployments if self.deployments else None

    @property
    def time_to_restore_median(self) -> float | None:
        return statistics.median(self.restore_seconds) if self.restore_seconds else None


def measure(client: MlflowClient, model: str, now: datetime, window_days: float,
            alert_times: Mapping[str, Sequence[float]] | None = None) -> Delivery:
    """The metrics of `model` over the window ending `now`; `alert_times` (model → ALERTS sample
    times, from `alert_samples`) make time to restore the quality alerts', else the rollbacks'."""
    start = now - timedelta(days=window_days)
    inside = tuple(p for p in promotions(client, model) if start <= p.promoted_at <= now)
    if alert_times is not None:
        restore = restored_durations(alert_times.get(model, ()), start.timestamp(), now.timestamp())
        source = ALERTS_SOURCE
    else:
        restore = [p.recovery_time for p in inside if p.recovery_time is not None]
        source = ROLLBACKS_SOURCE
    return Delivery(model, window_days, inside, tuple(restore), source)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 60:.0f}m" if seconds >= 60 else f"{seconds:.0f}s"


def render(deliveries: Sequence[Delivery]) -> str:
    header = ["model", "deploys", "per day", "lead time last", "lead time median", "change failure",
              "time to restore (median)"]
    rows = [[d.model, str(d.deployments), f"{d.per_day:.2f}", duration(d.lead_time_last),
             duration(d.lead_time_median),
             f"{d.change_failure_ratio:.0%} ({d.failures}/{d.deployments})" if d.deployments else "-",
             f"{duration(d.time_to_restore_median)} ({len(d.restore_seconds)} from {d.restore_source})"]
            for d in deliveries]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    window = f"{deliveries[0].window_days:g} days" if deliveries else "-"
    return "\n".join([*lines, f"window: the last {window}"])


def prometheus_registry(d: Delivery, when: float) -> Any:
    """The gauges of one model (a group of its own on the Pushgateway); a figure without data
    (no promotion, no lead time, nothing restored) is left out rather than pushed as 0."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float | None, **labels: str) -> None:
        if value is not None:
            Gauge(name, doc, ["model", *labels], registry=registry).labels(model=d.model, **labels).set(value)

    gauge("mlops_delivery_deployments", "promotions of the model to champion in the window", d.deployments)
    gauge("mlops_delivery_deployments_per_day", "promotions per day over the window", d.per_day)
    gauge("mlops_delivery_window_days", "length of the window the delivery metrics cover", d.window_days)
    lead = Gauge("mlops_delivery_lead_time_seconds", "commit to champion, per promotion in the window",
                 ["model", "stat"], registry=registry)
    for stat, value in (("last", d.lead_time_last), ("median", d.lead_time_median)):
        if value is not None:
            lead.labels(model=d.model, stat=stat).set(value)
    gauge("mlops_delivery_change_failure_ratio", "promotions rolled back or failing a smoke test / promotions",
          d.change_failure_ratio)
    gauge("mlops_delivery_time_to_restore_seconds", "median time to restore in the window",
          d.time_to_restore_median, source=d.restore_source)
    gauge("mlops_delivery_timestamp_seconds", "when the delivery metrics were computed", when)
    return registry


def push(deliveries: Sequence[Delivery], gateway: str, when: float) -> None:
    """One group per model (job, model): a push replaces only that model's figures."""
    from prometheus_client import push_to_gateway

    for d in deliveries:
        push_to_gateway(gateway, job=PUSH_JOB, registry=prometheus_registry(d, when),
                        grouping_key={"model": d.model}, timeout=30)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append",
                        help="registered model (repeatable; default: every registered model the login may read)")
    parser.add_argument("--window-days", type=float, default=30.0, help="days back from now (default: 30)")
    parser.add_argument("--prometheus", default=os.environ.get("PROMETHEUS_URL"),
                        help="Prometheus URL: time to restore from the quality alerts (default: $PROMETHEUS_URL; "
                             "unset: from the rollbacks)")
    parser.add_argument("--alert", action="append", help=f"alert names of a quality incident (repeatable; "
                                                         f"default: {', '.join(QUALITY_ALERTS)})")
    parser.add_argument("--push", default=os.environ.get("PUSHGATEWAY_URL"),
                        help="push the gauges to this Pushgateway (default: $PUSHGATEWAY_URL)")


def registered_models(client: MlflowClient) -> list[str]:
    names, token = [], None
    while True:
        page = client.search_registered_models(page_token=token)
        names += [m.name for m in page]
        token = page.token
        if not token:
            return sorted(names)


def run(args: argparse.Namespace, client: MlflowClient, names: Sequence[str] | None = None) -> int:
    """Measure, print, push; `names`: the models (default: --model, else every registered one)."""
    if args.window_days <= 0:
        print(f"mlops delivery: --window-days {args.window_days:g}: a positive number of days", file=sys.stderr)
        return 2
    models = list(names or args.model or registered_models(client))
    now = datetime.now(UTC)
    alert_times = None
    if args.prometheus:
        try:
            alert_times = alert_samples(args.prometheus, args.alert or QUALITY_ALERTS,
                                        (now - timedelta(days=args.window_days)).timestamp(), now.timestamp())
        except (OSError, ValueError, RuntimeError) as error:
            print(f"mlops delivery: {error}: time to restore from the rollbacks instead", file=sys.stderr)
    deliveries = [measure(client, m, now, args.window_days, alert_times) for m in models]
    print(render(deliveries))
    if args.push:
        try:
            push(deliveries, args.push, time.time())
        except OSError as error:
            print(f"mlops delivery: push to {args.push} failed: {error}", file=sys.stderr)
            return 1
        print(f"pushed to {args.push} (job={PUSH_JOB}, one group per model)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops.delivery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    from mlflow import MlflowClient

    return run(parser.parse_args(argv), MlflowClient())


if __name__ == "__main__":
    sys.exit(main())
