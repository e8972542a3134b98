"""Load readings and weather into the workload's tables: from CSV exports or the synthetic generator.

    python -m workloads.energy.ingest --consumption CSV --weather CSV [--database-url URL]
    python -m workloads.energy.ingest --synthetic [--users N] [--days D] [--seed S] [--today DATE]

A real site's meter feed writes `energy_readings` itself; this is for back-filling exports and for
demos. `--synthetic` writes `--days` days of readings ending yesterday and the weather up to
tomorrow, so that `predict` (tomorrow) and `train` work at once on a fresh stack. The generator is
deterministic per (seed, user, day) and writes are upserts, so overlapping windows and re-runs
write the same values once: the training Job seeds 120 days, the demo's `energy-ingest` CronJob
then the last three every night.
"""

from __future__ import annotations

import argparse
import os
from zoneinfo import ZoneInfo

import pandas as pd

from workloads.energy import data, store, synthetic


def synthetic_until(today: pd.Timestamp, users: int, days: int, seed: int) -> synthetic.SyntheticData:
    """`days` days of readings before `today`; weather through `today` + 1."""
    generated = synthetic.generate(n_users=users, days=days + 2, start=str((today - pd.Timedelta(days=days)).date()),
                                   seed=seed)
    consumption = generated.consumption[generated.consumption["timestamp"] < today]
    return synthetic.SyntheticData(consumption, generated.weather, generated.users)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consumption", help="hourly consumption CSV (user_id, timestamp, kwh)")
    parser.add_argument("--weather", help="hourly weather CSV (timestamp, temperature_c)")
    parser.add_argument("--synthetic", action="store_true", help="generate demo data instead")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--today", help="synthetic data ends the day before (default: today in --timezone)")
    parser.add_argument("--timezone", default=os.environ.get("TZ") or data.LOCAL_TZ)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="default: $DATABASE_URL")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url or $DATABASE_URL is required")
    if args.synthetic == bool(args.consumption or args.weather):
        parser.error("give either --synthetic or --consumption (and/or --weather)")
    with store.connect(args.database_url) as conn:
        store.ensure_tables(conn)
        if args.synthetic:
            today = pd.Timestamp(args.today) if args.today else pd.Timestamp.now(ZoneInfo(args.timezone)).tz_localize(None)
            generated = synthetic_until(today.normalize(), args.users, args.days, args.seed)
            readings, weather = store.write_readings(conn, generated.consumption), store.write_weather(conn, generated.weather)
        else:
            readings = store.write_readings(conn, data.load_consumption(args.consumption)) if args.consumption else 0
            weather = store.write_weather(conn, data.load_weather(args.weather)) if args.weather else 0
    print(f"wrote {readings} readings to {store.READINGS} and {weather} hours to {store.WEATHER}")


if __name__ == "__main__":
    main()
