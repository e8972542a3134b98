"""Benchmark: `mlops plan` wall time per stack and the dev stack's requested footprint.

Run: `.venv/bin/python benchmarks/plan.py [--runs 5]`. Each run is a fresh process, as a user or
CI would start it (interpreter start and imports included). Writes benchmarks/results/plan.json
and prints a Markdown table for the README.
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
from mlops.readme import update  # noqa: E402


def time_plan(stack: str, runs: int) -> tuple[list[float], dict]:
    times, summary = [], {}
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mlops", "plan", "--stack", stack, "--out", out],
                           cwd=ROOT, check=True, capture_output=True)
            times.append(time.perf_counter() - started)
            summary = json.loads((Path(out) / "summary.json").read_text())
    return times, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write-readme", action="store_true", help="put the table into README.md")
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    results = {"date": date.today().isoformat(), "machine": machine, "runs": args.runs, "stacks": {}}
    for stack in stack_names():
        times, summary = time_plan(stack, args.runs)
        results["stacks"][stack] = {
            "median_s": round(statistics.median(times), 2),
            "max_s": round(max(times), 2),
            "resources": summary["resources"],
            "kubernetes_objects": summary["kubernetes_objects"],
            "requests": summary["requests"],
            "job_requests_peak": summary.get("job_requests_peak"),
        }
    out = ROOT / "benchmarks" / "results" / "plan.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    rows = ["| stack | `mlops plan` median (max) | resources | k8s objects | requests CPU | requests memory |",
            "|---|---|---|---|---|---|"]
    for stack, r in results["stacks"].items():
        rows.append(f"| {stack} | {r['median_s']} s ({r['max_s']} s) | {r['resources']} | "
                    f"{r['kubernetes_objects']} | {r['requests']['cpu_m']} m | {r['requests']['memory_mib']} MiB |")
    table = "\n".join(rows)
    print(f"Measured {results['date']} on {machine}, {args.runs} runs per stack (fresh process each):\n")
    print(table)
    if args.write_readme:
        update("benchmark:plan", table)


if __name__ == "__main__":
    main()
