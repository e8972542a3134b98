"""Benchmark: how long `mlops cost --compare gke,eks,onprem` takes per stack.

Run: `.venv/bin/python benchmarks/cost.py [--runs 5]`. Each run is a fresh process, as a user or
CI would start it (interpreter start and imports included), once with the JSON report and once
with the HTML report (matplotlib charts). In-cluster stacks (dev, onprem) include their offline
plan, which sizes their compute. Writes benchmarks/results/cost.json and prints a Markdown table
for docs/cost.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlops.paths import stack_names  # noqa: E402

TARGETS = "gke,eks,onprem"


def time_cost(stack: str, fmt: str, runs: int) -> tuple[list[float], Path]:
    times = []
    out = Path(tempfile.mkdtemp()) / f"{stack}.{fmt}"
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mlops", "cost", "--stack", stack, "--compare", TARGETS,
                        "--format", fmt, "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    results = {"date": date.today().isoformat(), "machine": machine, "runs": args.runs, "compare": TARGETS,
               "stacks": {}}
    for stack in stack_names():
        json_times, report = time_cost(stack, "json", args.runs)
        html_times, page = time_cost(stack, "html", args.runs)
        data = json.loads(report.read_text())
        results["stacks"][stack] = {
            "json_median_s": round(statistics.median(json_times), 2),
            "json_max_s": round(max(json_times), 2),
            "html_median_s": round(statistics.median(html_times), 2),
            "html_max_s": round(max(html_times), 2),
            "html_bytes": page.stat().st_size,
            "monthly_usd": {e["target"]: e["total"] for e in data["estimates"]},
        }
    out = ROOT / "benchmarks" / "results" / "cost.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    rows = ["| stack | JSON report median (max) | HTML report median (max) | GKE USD/month | EKS USD/month | "
            "on-prem USD/month |", "|---|---:|---:|---:|---:|---:|"]
    for stack, r in results["stacks"].items():
        usd = r["monthly_usd"]
        rows.append(f"| {stack} | {r['json_median_s']} s ({r['json_max_s']} s) | {r['html_median_s']} s "
                    f"({r['html_max_s']} s) | {usd['gke']:,.2f} | {usd['eks']:,.2f} | {usd['onprem']:,.2f} |")
    print("\n".join(rows))
    print(f"\n{results['machine']}, {results['date']}, {args.runs} runs per stack and format")


if __name__ == "__main__":
    main()
