"""Benchmark: what serving adds to the NEO model's own time, per one-row request.

Run: `.venv/bin/python benchmarks/serving_overhead.py [--rounds 4] [--requests 200]`. Writes
benchmarks/results/serving_overhead.json and prints a Markdown table.

Variants, each server pinned to one CPU (`taskset -c 0`, as a pod with a 1-CPU limit; an
inference worker process shares that CPU with its parent) with single-threaded numeric libraries:
- in-process: the fitted pipeline's `predict`, and MLflow's pyfunc `predict` (schema enforcement
  included), on a one-row DataFrame;
- MLServer 1.7.1 (`.venv/tools/mlserver`, V2 `POST /v2/models/neo/infer`, content type `pd`):
  `stock` = `mlserver_mlflow.MLflowRuntime` with MLServer's default of one inference worker
  process (what the figures measured before); `stack` = the project's `mlops_mlserver.MLflowRuntime`
  (one-array numeric decoding) with MLSERVER_PARALLEL_WORKERS=0 (the stack's env); and the two
  mixed variants, to attribute the gain;
- `mlflow models serve` (the project's MLflow, one uvicorn worker, `POST /invocations`).
Each round runs every variant at concurrency 1 and 8, in a shuffled order, so the load of other
processes on this shared machine falls on all alike; the load average is recorded per round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil
import requests
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.neo import latencies_ms  # noqa: E402
from tests.runtimes import MLSERVER_IMAGE, ONE_CPU, SINGLE_THREAD, tool_script, wait_ready  # noqa: E402
from tests.services import free_port, stop  # noqa: E402
from workloads.neo import data, model, payload  # noqa: E402
from workloads.neo.train import flavor_options  # noqa: E402

STOCK_RUNTIME, PROJECT_RUNTIME = "mlserver_mlflow.MLflowRuntime", "mlops_mlserver.MLflowRuntime"
MLSERVER_VARIANTS = {  # name -> (runtime class, parallel_workers)
    "mlserver_stock": (STOCK_RUNTIME, 1),
    "mlserver_stock_runtime_0_workers": (STOCK_RUNTIME, 0),
    "mlserver_project_runtime_1_worker": (PROJECT_RUNTIME, 1),
    "mlserver_stack": (PROJECT_RUNTIME, 0),
}
CONCURRENCY = (1, 8)


@contextmanager
def server(command: list[str], env: dict[str, str], ready_url: str, workdir: Path) -> Iterator[psutil.Process]:
    log = workdir / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([*ONE_CPU, *command], cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **SINGLE_THREAD, **env}, start_new_session=True)
    try:
        wait_ready(ready_url, process, 240, log)
        yield psutil.Process(process.pid)
    finally:
        stop(process)


def mlserver(model_dir: Path, runtime: str, workers: int, workdir: Path, port: int):
    workdir.mkdir()
    settings = {"http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "host": "127.0.0.1",
                "parallel_workers": workers, "debug": False}
    (workdir / "settings.json").write_text(json.dumps(settings))
    (workdir / "model-settings.json").write_text(json.dumps(
        {"name": "neo", "implementation": runtime, "parameters": {"uri": str(model_dir)}}))
    command = tool_script("mlserver", "mlserver", "MLServer, the V2 runtime of registry models")
    return server([command, "start", str(workdir)], {"PYTHONPATH": str(MLSERVER_IMAGE)},
                  f"http://127.0.0.1:{port}/v2/models/neo/ready", workdir)


def mlflow_serve(model_dir: Path, workdir: Path, port: int):
    workdir.mkdir()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir), "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return server(command, env, f"http://127.0.0.1:{port}/ping", workdir)


def rss_mb(process: psutil.Process) -> float:
    """Resident memory of the server and its children (MLServer's inference workers)."""
    tree = [process, *process.children(recursive=True)]
    return round(sum(p.memory_info().rss for p in tree) / 2 ** 20, 1)


def load(url: str, bodies: list[dict], concurrency: int) -> tuple[list[float], float]:
    """Latencies (ms) of `bodies` sent by `concurrency` clients, each on its own connection, and the wall time."""
    chunks = [bodies[i::concurrency] for i in range(concurrency)]

    def client(chunk: list[dict]) -> list[float]:
        session, out = requests.Session(), []
        for body in chunk:
            start = time.perf_counter()
            session.post(url, json=body, timeout=60).raise_for_status()
            out.append((time.perf_counter() - start) * 1000)
        return out

    with ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        results = list(pool.map(client, chunks))
        return [ms for chunk in results for ms in chunk], time.perf_counter() - start


def figures(ms: list[float], seconds: float | None) -> dict[str, float]:
    out = {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}
    if seconds is not None:
        out["requests_per_s"] = round(len(ms) / seconds, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=data.default_source())
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200, help="per variant, round and concurrency")
    args = parser.parse_args()
    prepared = data.preprocess(data.load(args.data))
    with threadpool_limits(limits=1):
        chosen = model.train_and_select(prepared)
    rows = chosen.X_test
    bodies = {"v2": [payload.v2(rows.iloc[[i % len(rows)]]) for i in range(args.requests)],
              "invocations": [payload.invocations(rows.iloc[[i % len(rows)]]) for i in range(args.requests)]}
    samples: dict[str, dict[int, list[float]]] = {}
    seconds: dict[str, dict[int, float]] = {}
    loads, memory = [], {}
    with tempfile.TemporaryDirectory(prefix="serving-overhead-") as tmp, ExitStack() as stack:
        import mlflow.pyfunc
        import mlflow.sklearn

        model_dir = Path(tmp) / "model"
        mlflow.sklearn.save_model(chosen.model, model_dir, **flavor_options(chosen.model, rows.head(3)))
        pyfunc = mlflow.pyfunc.load_model(str(model_dir))
        urls, processes = {}, {}
        for name, (runtime, workers) in MLSERVER_VARIANTS.items():  # one at a time: startup is CPU-heavy
            port = free_port()
            processes[name] = stack.enter_context(mlserver(model_dir, runtime, workers, Path(tmp) / name, port))
            urls[name] = (f"http://127.0.0.1:{port}/v2/models/neo/infer", "v2")
        port = free_port()
        processes["mlflow_models_serve"] = stack.enter_context(mlflow_serve(model_dir, Path(tmp) / "mlflow", port))
        urls["mlflow_models_serve"] = (f"http://127.0.0.1:{port}/invocations", "invocations")
        for url, kind in urls.values():  # warm-up
            load(url, bodies[kind][:20], 1)
        rng = random.Random(0)
        for round_ in range(args.rounds):
            loads.append(os.getloadavg()[0])
            order = [*urls, "in_process_pipeline", "in_process_pyfunc"]
            rng.shuffle(order)
            for name in order:
                if name.startswith("in_process"):
                    predict = chosen.model.predict if name == "in_process_pipeline" else pyfunc.predict
                    with threadpool_limits(limits=1):
                        samples.setdefault(name, {}).setdefault(1, []).extend(latencies_ms(predict, rows, args.requests))
                    continue
                url, kind = urls[name]
                for c in CONCURRENCY:
                    ms, wall = load(url, bodies[kind], c)
                    samples.setdefault(name, {}).setdefault(c, []).extend(ms)
                    seconds.setdefault(name, {})[c] = seconds.get(name, {}).get(c, 0.0) + wall
            print(f"round {round_ + 1}/{args.rounds} done, load {loads[-1]:.2f}", flush=True)
        loads.append(os.getloadavg()[0])
        memory = {name: rss_mb(p) for name, p in processes.items()}
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}",
        "model": chosen.chosen, "rounds": args.rounds, "requests_per_round": args.requests,
        "load_average_1m": {"per_round": [round(x, 2) for x in loads], "mean": round(float(np.mean(loads)), 2)},
        "servers_pinned_to": "1 CPU (taskset -c 0)",
        "variants": {name: {f"c{c}": figures(ms, seconds.get(name, {}).get(c)) for c, ms in by_c.items()}
                     | ({"rss_mb": memory[name]} if name in memory else {})
                     for name, by_c in samples.items()},
    }
    out = ROOT / "benchmarks" / "results" / "serving_overhead.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{results['date']}, {results['machine']}, load average {results['load_average_1m']}\n")
    print("| variant | c=1 p50 (ms) | c=1 p99 (ms) | c=1 req/s | c=8 p50 (ms) | c=8 p99 (ms) | c=8 req/s | RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, v in results["variants"].items():
        c1, c8 = v.get("c1", {}), v.get("c8", {})
        print(f"| {name} | {c1.get('p50_ms', '')} | {c1.get('p99_ms', '')} | {c1.get('requests_per_s', '')} "
              f"| {c8.get('p50_ms', '')} | {c8.get('p99_ms', '')} | {c8.get('requests_per_s', '')} | {v.get('rss_mb', '')} |")


if __name__ == "__main__":
    main()
