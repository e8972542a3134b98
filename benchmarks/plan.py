"""Benchmark: `mlops plan` wall time per stack, the dev stack's requested footprint, and how the
program's evaluation time grows with the number of served models.

Run: `.venv/bin/python benchmarks/plan.py [--runs 5]`. Each per-stack run is a fresh process, as a
user or CI would start it (interpreter start and imports included); the growth runs evaluate the
dev program in-process (imports paid once) with 0…N registry models in `serving.models`, and with
`--tenants 0 30 60 120` a class of N tenants × 3 alias models (tests/stacks/Pulumi.class.yaml's
shape). `--only-tenants` also times `mlops plan` of tests/stacks/Pulumi.class.yaml in fresh
processes (issue 14's budget: 5 s). Each fresh-process figure comes with its CPU time (user + sys):
on a shared machine the wall time also holds the other processes' share of the cores. Writes
benchmarks/results/plan.json (plan-tenants.json with `--only-tenants`) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_plan(stack: str, runs: int, stacks_dir: Path | None = None) -> tuple[list[float], list[float], dict]:
    """Wall and CPU seconds of `runs` fresh `mlops plan` processes, and the last one's summary."""
    times, cpu, summary = [], [], {}
    where = ["--stacks-dir", str(stacks_dir)] if stacks_dir else []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as out:
            started, cpu_started = time.perf_counter(), _children_cpu()
            subprocess.run([sys.executable, "-m", "mlops", "plan", "--stack", stack, *where, "--out", out],
                           cwd=ROOT, check=True, capture_output=True)
            times.append(time.perf_counter() - started)
            cpu.append(_children_cpu() - cpu_started)
            summary = json.loads((Path(out) / "summary.json").read_text())
    return times, cpu, summary


def time_models(counts: list[int], runs: int) -> list[dict]:
    """The dev program with `n` registry models: median evaluation time and declared resources."""
    from mlops.plan import run_program, stack_config

    values, secrets = stack_config("dev")
    rows = []
    for n in counts:
        models = {f"model-{i}": {"source": {"uri": f"s3://mlflow-artifacts/1/models/m-{i:04d}/artifacts"}}
                  for i in range(n)}
        config = ({**values, "mlops-stack:serving": json.dumps({"models": models})}, secrets)
        times = []
        for _ in range(runs):
            gc.collect()  # the last run's garbage, which run_program leaves uncollected (see mlops.plan)
            started = time.perf_counter()
            plan = run_program("dev", config)
            times.append(time.perf_counter() - started)
        rows.append({"models": n, "median_s": round(statistics.median(times), 3), "resources": len(plan.resources)})
        print(rows[-1], flush=True)
    return rows


def class_tenants(n: int) -> dict:
    """`tenants` of a class of `n` students × 3 models, as tests/stacks/class-60.yaml writes them."""
    return {f"student-{i:03d}": {"members": [f"gh-student-{i:03d}"], "repositories": [f"ml-class/student-{i:03d}"],
                                 "models": {m: {"source": {"alias": "champion"}} for m in ("iris", "digits", "energy")}}
            for i in range(n)}


def time_tenants(counts: list[int], runs: int) -> list[dict]:
    """The dev program with a class of `n` tenants: median evaluation time, resources, objects."""
    from mlops.plan import run_program, stack_config

    values, secrets = stack_config("dev")
    rows = []
    for n in counts:
        config = ({**values, "mlops-stack:tenants": json.dumps(class_tenants(n))}, secrets)
        times, cpu = [], []
        for _ in range(runs):
            gc.collect()  # the last run's garbage, which run_program leaves uncollected (see mlops.plan)
            started, cpu_started = time.perf_counter(), time.process_time()
            plan = run_program("dev", config)
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
        rows.append({"tenants": n, "models": 3 * n, "median_s": round(statistics.median(times), 3),
                     "cpu_median_s": round(statistics.median(cpu), 3),
                     "resources": len(plan.resources), "kubernetes_objects": len(plan.kubernetes_objects)})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", type=int, nargs="+", default=[0, 10, 50, 100])
    parser.add_argument("--tenants", type=int, nargs="*", default=[],
                        help="class sizes for the tenants growth table, e.g. 0 30 60 120 (3 models each)")
    parser.add_argument("--only-tenants", action="store_true", help="skip the per-stack and model-growth runs")
    parser.add_argument("--write-readme", action="store_true", help="put the tables into README.md")
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    load = f"load average {os.getloadavg()[0]:.1f} at start"
    if args.only_tenants:
        times, cpu, summary = time_plan("class", args.runs, ROOT / "tests" / "stacks")
        class_plan = {"median_s": round(statistics.median(times), 2), "max_s": round(max(times), 2),
                      "cpu_median_s": round(statistics.median(cpu), 2), "resources": summary["resources"],
                      "kubernetes_objects": summary["kubernetes_objects"]}
        print({"class_plan": class_plan}, flush=True)
        rows = time_tenants(args.tenants, args.runs)
        load += f", {os.getloadavg()[0]:.1f} at the end"
        (ROOT / "benchmarks" / "results" / "plan-tenants.json").write_text(json.dumps(
            {"date": date.today().isoformat(), "machine": machine, "load": load, "runs": args.runs,
             "class_plan": class_plan, "tenants": rows}, indent=2) + "\n")
        print(f"Measured {date.today().isoformat()} on {machine} ({load}), {args.runs} runs:\n\n"
              f"`mlops plan --stack class` (fresh process): median {class_plan['median_s']} s "
              f"(max {class_plan['max_s']} s, CPU {class_plan['cpu_median_s']} s)\n\n{tenants_table(rows)}")
        if args.write_readme:
            update("benchmark:plan-tenants", tenants_table(rows))
        return
    results = {"date": date.today().isoformat(), "machine": machine, "load": load, "runs": args.runs, "stacks": {}}
    for stack in stack_names():
        times, cpu, summary = time_plan(stack, args.runs)
        results["stacks"][stack] = {
            "median_s": round(statistics.median(times), 2),
            "max_s": round(max(times), 2),
            "cpu_median_s": round(statistics.median(cpu), 2),
            "resources": summary["resources"],
            "kubernetes_objects": summary["kubernetes_objects"],
            "requests": summary["requests"],
            "job_requests_peak": summary.get("job_requests_peak"),
        }
    results["growth"] = time_models(args.models, args.runs)
    results["tenants"] = time_tenants(args.tenants, args.runs)
    out = ROOT / "benchmarks" / "results" / "plan.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    rows = ["| stack | `mlops plan` median (max) | resources | k8s objects | requests CPU | requests memory |",
            "|---|---|---|---|---|---|"]
    for stack, r in results["stacks"].items():
        rows.append(f"| {stack} | {r['median_s']} s ({r['max_s']} s) | {r['resources']} | "
                    f"{r['kubernetes_objects']} | {r['requests']['cpu_m']} m | {r['requests']['memory_mib']} MiB |")
    table = "\n".join(rows)
    growth = "\n".join(["| models in `serving.models` | dev program evaluation, median | resources |", "|---|---|---|",
                        *(f"| {g['models']} | {g['median_s']} s | {g['resources']} |" for g in results["growth"])])
    print(f"Measured {results['date']} on {machine}, {args.runs} runs per stack (fresh process each):\n")
    print(table + "\n\n" + growth + ("\n\n" + tenants_table(results["tenants"]) if results["tenants"] else ""))
    if args.write_readme:
        update("benchmark:plan", table)
        update("benchmark:plan-growth", growth)
        if results["tenants"]:
            update("benchmark:plan-tenants", tenants_table(results["tenants"]))


def tenants_table(rows: list[dict]) -> str:
    return "\n".join(["| tenants (× 3 models) | program evaluation, median (CPU) | resources | k8s objects |",
                      "|---|---|---|---|", *(f"| {r['tenants']} ({r['models']} models) | {r['median_s']} s "
                                            f"({r['cpu_median_s']} s) | {r['resources']} | "
                                            f"{r['kubernetes_objects']} |" for r in rows)])


if __name__ == "__main__":
    main()
