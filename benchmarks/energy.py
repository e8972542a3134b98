"""Benchmark: energy forecaster quality vs seasonal-naive, training time and daily batch time.

Run: `.venv/bin/python benchmarks/energy.py` (about 12 minutes on 2 cores). Setup, per seed: the synthetic generator
(`workloads.energy.synthetic`, Málaga-like climate, the four archetypes in turn) makes `users` ×
`days` of hourly readings from 2024-01-01; the last 7 days are held out and forecast one day ahead
each (`model.evaluate`, the same split `train` logs), model and seasonal-naive (same hour a week
earlier) scored by MAPE on the same hours (actual >= 50 Wh). Timed: generation, training (K-Means +
100-tree forest on everything before the held-out week, with the held-out scoring), and one daily batch (`forecast` of the
next day for every user, as the CronJob does in-process, median of 5). Writes
benchmarks/results/energy.json and prints a Markdown table for workloads/energy/README.md.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from workloads.energy import model, synthetic  # noqa: E402

SETUPS = ((20, 120, 5), (100, 365, 3))  # (users, days, seeds): the train default; a utility-sized year
TEST_DAYS = 7
TREES = 100


def measure(users: int, days: int, seed: int) -> dict:
    started = time.perf_counter()
    generated = synthetic.generate(n_users=users, days=days, start="2024-01-01", seed=seed)
    generate_s = time.perf_counter() - started
    consumption, weather = generated.consumption, generated.weather
    split = pd.Timestamp("2024-01-01") + pd.Timedelta(days=days - TEST_DAYS)
    started = time.perf_counter()
    forecaster, evaluation = model.evaluate(consumption, weather, test_days=TEST_DAYS, n_estimators=TREES, seed=seed)
    train_s = time.perf_counter() - started  # fit, plus forecasting and scoring the held-out week (< 1 s)
    batch = []
    for _ in range(5):
        started = time.perf_counter()
        forecaster.forecast(consumption, weather, split)
        batch.append(time.perf_counter() - started)
    return {
        "seed": seed,
        "generate_s": round(generate_s, 2),
        "train_s": round(train_s, 2),
        "daily_batch_s": round(statistics.median(batch), 3),
        "model_mape": round(evaluation.model_mape, 2),
        "naive_mape": round(evaluation.naive_mape, 2),
        "improvement": round(evaluation.improvement, 3),
        "scored_hours": evaluation.hours,
    }


def summarise(runs: list[dict]) -> dict:
    keys = ("train_s", "daily_batch_s", "model_mape", "naive_mape", "improvement")
    return {f"mean_{k}": round(statistics.mean(r[k] for r in runs), 3) for k in keys} | {
        "min_improvement": min(r["improvement"] for r in runs)
    }


def main() -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    results = {"date": date.today().isoformat(), "machine": machine, "test_days": TEST_DAYS, "trees": TREES,
               "setups": []}
    for users, days, seeds in SETUPS:
        runs = [measure(users, days, seed) for seed in range(seeds)]
        results["setups"].append({"users": users, "days": days, "runs": runs, **summarise(runs)})
        print(f"{users} users × {days} days: {summarise(runs)}", file=sys.stderr)
    out = ROOT / "benchmarks" / "results" / "energy.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Measured {results['date']} on {machine}; held-out week, {TREES} trees, mean over seeds.\n")
    print("| users × days (seeds) | model MAPE | seasonal-naive MAPE | reduction (mean / worst seed) | training | daily batch |")
    print("|---|---|---|---|---|---|")
    for s in results["setups"]:
        print(f"| {s['users']} × {s['days']} ({len(s['runs'])}) | {s['mean_model_mape']:.1f} % | {s['mean_naive_mape']:.1f} % | "
              f"{s['mean_improvement']:.0%} / {s['min_improvement']:.0%} | {s['mean_train_s']:.1f} s | "
              f"{s['mean_daily_batch_s']:.2f} s |")


if __name__ == "__main__":
    main()
