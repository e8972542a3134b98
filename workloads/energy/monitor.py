"""Daily quality check: yesterday's MAPE of each alias's predictions against the actual readings.

    python -m workloads.energy.monitor [--day YYYY-MM-DD] [--pair champion=energy_prod ...]
        [--pushgateway URL] [--database-url URL]

For each alias=table pair it joins the table's forecasts for the day with `energy_readings` and
publishes, per the platform's model-quality convention (modules/monitoring/README.md):

    model_quality_mape{model="energy-forecast", alias="champion"}   0.17   (a fraction, not %)
    model_quality_evaluation_timestamp_seconds{model=..., alias=...}

Why a Pushgateway: the check is a batch job that lives for seconds once a day, so Prometheus cannot
scrape it; the Pushgateway keeps the last value until the next run, which is exactly the
"service-level batch job" case it exists for. The push replaces the whole group (job, model), so
an alias that is no longer evaluated disappears instead of showing a stale number, and
`ModelQualityStale` fires from the timestamp if the CronJob stops. Without a Pushgateway the
metrics are printed in the exposition format.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import pandas as pd
from prometheus_client import CollectorRegistry, Gauge, generate_latest, push_to_gateway

from workloads.energy import data, model, store
from workloads.energy.train import MODEL_NAME

DEFAULT_PAIRS = {"champion": "energy_prod", "challenger": "energy_pre"}
PUSH_JOB = "energy-monitor"


@dataclass(frozen=True)
class Score:
    alias: str
    table: str
    mape: float | None  # fraction; None when the table has no forecast for the day
    hours: int


def yesterday(tz: str) -> pd.Timestamp:
    return pd.Timestamp.now(tz=ZoneInfo(tz)).tz_localize(None).normalize() - pd.Timedelta(days=1)


def score(conn, day: pd.Timestamp, pairs: dict[str, str]) -> list[Score]:
    """MAPE (fraction) of each table's forecasts for `day`, on hours `model.mape` counts."""
    end = day + pd.Timedelta(days=1)
    actual = store.read_readings(conn, day, end)
    if actual["kwh"].notna().sum() == 0:
        raise RuntimeError(f"no actual readings for {day.date()} in {store.READINGS}: nothing to score")
    scores = []
    for alias, table in pairs.items():
        predicted = store.read_predictions(conn, table, day, end)
        joined = actual.merge(predicted, on=["user_id", "timestamp"], suffixes=("_actual", "_predicted"))
        counted = joined["kwh_actual"].notna() & (joined["kwh_actual"] >= model.MIN_ACTUAL_KWH)
        if not counted.any():
            scores.append(Score(alias, table, None, 0))
            continue
        value = model.mape(joined.loc[counted, "kwh_actual"], joined.loc[counted, "kwh_predicted"]) / 100
        scores.append(Score(alias, table, value, int(counted.sum())))
    return scores


def registry_of(scores: list[Score], model_name: str, now: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    mape = Gauge("model_quality_mape", "MAPE (fraction) of yesterday's hourly forecasts against actual readings",
                 ["model", "alias"], registry=registry)
    when = Gauge("model_quality_evaluation_timestamp_seconds", "When the quality metric was computed",
                 ["model", "alias"], registry=registry)
    for s in scores:
        if s.mape is not None:
            mape.labels(model_name, s.alias).set(s.mape)
            when.labels(model_name, s.alias).set(now)
    return registry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--day", help="day to score (default: yesterday in --timezone)")
    parser.add_argument("--timezone", default=os.environ.get("TZ") or data.LOCAL_TZ)
    parser.add_argument("--pair", action="append", metavar="ALIAS=TABLE",
                        help="alias and its predictions table (default: champion=energy_prod, challenger=energy_pre)")
    parser.add_argument("--model", default=MODEL_NAME)
    parser.add_argument("--pushgateway", default=os.environ.get("PUSHGATEWAY_URL"), help="default: $PUSHGATEWAY_URL")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="default: $DATABASE_URL")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url or $DATABASE_URL is required")
    if args.pair and not all("=" in p for p in args.pair):
        parser.error("--pair takes ALIAS=TABLE, e.g. champion=energy_prod")
    pairs = dict(p.split("=", 1) for p in args.pair) if args.pair else DEFAULT_PAIRS
    day = pd.Timestamp(args.day) if args.day else yesterday(args.timezone)
    with store.connect(args.database_url) as conn:
        store.ensure_tables(conn, pairs.values())
        scores = score(conn, day, pairs)
    for s in scores:
        shown = f"MAPE {s.mape:.1%} on {s.hours} hours" if s.mape is not None else "no forecast to score"
        print(f"{args.model}@{s.alias} ({s.table}) on {day.date()}: {shown}")
    registry = registry_of(scores, args.model, time.time())
    if args.pushgateway:
        push_to_gateway(args.pushgateway, job=PUSH_JOB, registry=registry, grouping_key={"model": args.model})
        print(f"pushed to {args.pushgateway} (job={PUSH_JOB}, model={args.model})")
    else:
        print(generate_latest(registry).decode(), end="")


if __name__ == "__main__":
    main()
