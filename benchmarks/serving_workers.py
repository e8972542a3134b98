"""Benchmark: MLServer's inference workers (MLSERVER_PARALLEL_WORKERS) on a 2-vCPU machine, the
default instance size of the managed engines (SageMaker ml.m5.large, Vertex n1-standard-2).

Run: `.venv/bin/python benchmarks/serving_workers.py [--rounds 3] [--requests 400]`.
Writes benchmarks/results/serving_workers.json and prints a Markdown table.

The NEO model on the stack's runtime (`mlops_mlserver.MLflowRuntime`), the server on both CPUs of
this machine (`taskset -c 0,1`) with 0, 1 and 2 inference workers; the client (`http.client`, as
in serving_overhead.py) shares those CPUs, alike for every variant. Per variant and concurrency:
p50/p99, req/s, and the server's CPU use as a share of the 2 CPUs, which is what a CPU-target
autoscaler (Vertex's `cpu-utilization` metric) compares with its target: a server that cannot use
both CPUs never reaches a 70 % target however loaded it is.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving_overhead import (PROJECT_RUNTIME, cpu_seconds, figures, load, memory_mb,  # noqa: E402
                                         mlserver, neo_setup, run_header)
from tests.services import free_port  # noqa: E402

TWO_CPUS = ["taskset", "-c", "0,1"]
WORKERS = (0, 1, 2)
CONCURRENCY = (1, 8, 16)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400, help="per variant, round and concurrency")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 CPUs")
    from workloads.neo import data

    args.data = data.default_source()
    samples: dict[str, dict[int, list[float]]] = {}
    seconds: dict[str, dict[int, float]] = {}
    cpu: dict[str, dict[int, float]] = {}
    loads = []
    with tempfile.TemporaryDirectory(prefix="serving-workers-") as tmp, ExitStack() as stack:
        setup = neo_setup(args, Path(tmp))
        model_dir, bodies = Path(tmp) / "model", setup.bodies["v2"]
        urls, processes = {}, {}
        for workers in WORKERS:  # one at a time: startup is CPU-heavy
            name, port = f"{workers}_workers", free_port()
            processes[name] = stack.enter_context(
                mlserver(model_dir, PROJECT_RUNTIME, workers, Path(tmp) / name, port, TWO_CPUS))
            urls[name] = f"http://127.0.0.1:{port}/v2/models/neo/infer"
            load(urls[name], bodies[:40], 2, off_server_cpu=False)  # warm-up, every worker
        rng = random.Random(0)
        for round_ in range(args.rounds):
            loads.append(os.getloadavg()[0])
            order = list(urls)
            rng.shuffle(order)
            for name in order:
                for c in CONCURRENCY:
                    before = cpu_seconds(processes[name])
                    ms, wall = load(urls[name], bodies, c, off_server_cpu=False)
                    samples.setdefault(name, {}).setdefault(c, []).extend(ms)
                    seconds.setdefault(name, {})[c] = seconds.get(name, {}).get(c, 0.0) + wall
                    cpu.setdefault(name, {})[c] = cpu.get(name, {}).get(c, 0.0) + cpu_seconds(processes[name]) - before
            print(f"round {round_ + 1}/{args.rounds} done, load {loads[-1]:.2f}", flush=True)
        loads.append(os.getloadavg()[0])
        memory = {name: memory_mb(p) for name, p in processes.items()}
    variants = {}
    for name, by_c in samples.items():
        variants[name] = {f"c{c}": {**figures(ms, seconds[name][c], cpu[name][c]),
                                    "server_cpu_share_of_2": round(cpu[name][c] / seconds[name][c] / 2, 2)}
                          for c, ms in by_c.items()} | memory[name]
    results = {
        **run_header(setup.model, args, loads),
        "server_pinned_to": "2 CPUs (taskset -c 0,1), shared with the client",
        "variants": variants,
    }
    (ROOT / "benchmarks" / "results" / "serving_workers.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{results['date']}, {results['machine']}, load average {results['load_average_1m']}\n")
    print("| inference workers | " + " | ".join(f"c={c} p50 / p99 (ms) | c={c} req/s | c={c} CPU share"
                                               for c in CONCURRENCY) + " | PSS (MB) |")
    print("|---|" + "---|---:|---:|" * len(CONCURRENCY) + "---:|")
    for name, v in variants.items():
        cells = [f"{v[f'c{c}']['p50_ms']} / {v[f'c{c}']['p99_ms']} | {v[f'c{c}']['requests_per_s']} | "
                 f"{v[f'c{c}']['server_cpu_share_of_2']:.0%}" for c in CONCURRENCY]
        print(f"| {name.split('_')[0]} | {' | '.join(cells)} | {v['pss_mb']} |")


if __name__ == "__main__":
    main()
