"""Benchmark: what serving adds to a demo model's own time, per one-row (one-image) request.

Run: `.venv/bin/python benchmarks/serving_overhead.py [--model neo|mnist] [--rounds 4] [--requests 200]`.
Writes benchmarks/results/serving_overhead.json (neo) or serving_overhead_mnist.json and prints a
Markdown table.

NEO (the stack serves it from the registry with MLServer):

Variants, each server pinned to one CPU (`taskset -c 0`, as a pod with a 1-CPU limit; an
inference worker process shares that CPU with its parent) with single-threaded numeric libraries:
- in-process: the fitted pipeline's `predict`, and MLflow's pyfunc `predict` (schema enforcement
  included), on a one-row DataFrame;
- MLServer 1.7.1 (`.venv/tools/mlserver`, V2 `POST /v2/models/neo/infer`, content type `pd`):
  `stock` = `mlserver_mlflow.MLflowRuntime` with MLServer's default of one inference worker
  process (what the figures measured before); `stack` = the project's `mlops_mlserver.MLflowRuntime`
  (one-array numeric decoding, the scikit-learn model's predict on frames MLflow's enforcement
  passes through as they are) with MLSERVER_PARALLEL_WORKERS=0 (the stack's env); and the two
  mixed variants, to attribute the gain;
- `mlflow models serve` (the project's MLflow, one uvicorn worker, `POST /invocations`).

MNIST (a custom image: the model class in Seldon Core's Python wrapper): in-process the network's
forward pass and MLflow's pyfunc `predict`; `seldon_wrapper` (`.venv/tools/seldon`, Seldon protocol,
one worker, one thread, what the image runs); `mlflow models serve` on the same saved model; and
`mlserver_v2`, the same pyfunc on MLServer with the project runtime and 0 workers, one V2 FP32
tensor per image (`.venv/tools/mlserver-torch`, `make bench-deps`): what moving mnist to MLServer
would give, measured rather than guessed.

Each round runs every variant at concurrency 1 and 8, in a shuffled order, so the load of other
processes on this shared machine falls on all alike (the in-process ones run on the servers' CPU
too); the load average is recorded per round. The client is the standard library's `http.client`,
one connection per concurrent client (kept alive where the server allows it; gunicorn's sync
worker, the mnist wrapper's, closes it after each answer), bodies encoded before the clock
starts, on the other CPU: what a request costs the client is not serving.
`<server>_requests_client` is the stack's server measured through `requests` (the client of the
earlier figures), to show that share. Next to wall-clock latencies each server's CPU time
per request is recorded (user + system of its processes over the requests): waiting for the CPU
does not count in it, though contention still inflates it somewhat.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import requests
from threadpoolctl import threadpool_limits
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.runtimes import MLSERVER_IMAGE, ONE_CPU, SINGLE_THREAD, TOOLS, seldon_serve, tool_script, wait_ready  # noqa: E402
from tests.services import free_port, stop  # noqa: E402

STOCK_RUNTIME, PROJECT_RUNTIME = "mlserver_mlflow.MLflowRuntime", "mlops_mlserver.MLflowRuntime"
MLSERVER_VARIANTS = {  # name -> (runtime class, parallel_workers)
    "mlserver_stock": (STOCK_RUNTIME, 1),
    "mlserver_stock_runtime_0_workers": (STOCK_RUNTIME, 0),
    "mlserver_project_runtime_1_worker": (PROJECT_RUNTIME, 1),
    "mlserver_stack": (PROJECT_RUNTIME, 0),
}
TORCH_MLSERVER = "mlserver-torch"  # the MLServer tool venv with torch (`make bench-deps`): mnist's pyfunc on V2
CONCURRENCY = (1, 8)
REQUESTS_CLIENT = "_requests_client"  # suffix of the variant measured through `requests`


@contextmanager
def server(command: list[str], env: dict[str, str], ready_url: str, workdir: Path,
           pin: list[str] = ONE_CPU) -> Iterator[psutil.Process]:
    log = workdir / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([*pin, *command], cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **SINGLE_THREAD, **env}, start_new_session=True)
    try:
        wait_ready(ready_url, process, 240, log)
        yield psutil.Process(process.pid)
    finally:
        stop(process)


def seldon_wrapper(model_dir: Path, workdir: Path, port: int):
    """The mnist image's server: the model class in Seldon's wrapper (the image's entrypoint), one
    worker, one thread."""
    workdir.mkdir()
    command = [*seldon_serve(), "workloads.mnist.serving.MnistClassifier", "--service-type", "MODEL", "--http-port", str(port),
               "--grpc-port", str(free_port()), "--metrics-port", str(free_port()), "--workers", "1", "--threads", "1"]
    return server(command, {"PYTHONPATH": str(ROOT), "MODEL_URI": str(model_dir)},
                  f"http://127.0.0.1:{port}/health/ping", workdir)


def mlserver(model_dir: Path, runtime: str, workers: int, workdir: Path, port: int, pin: list[str] = ONE_CPU,
             name: str = "neo", venv: str = "mlserver"):
    workdir.mkdir()
    settings = {"http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "host": "127.0.0.1",
                "parallel_workers": workers, "debug": False}
    (workdir / "settings.json").write_text(json.dumps(settings))
    (workdir / "model-settings.json").write_text(json.dumps(
        {"name": name, "implementation": runtime, "parameters": {"uri": str(model_dir)}}))
    command = tool_script(venv, "mlserver", "MLServer, the V2 runtime of registry models")
    return server([command, "start", str(workdir)], {"PYTHONPATH": str(MLSERVER_IMAGE)},
                  f"http://127.0.0.1:{port}/v2/models/{name}/ready", workdir, pin)


def mlflow_serve(model_dir: Path, workdir: Path, port: int):
    workdir.mkdir()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir), "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return server(command, env, f"http://127.0.0.1:{port}/ping", workdir)


def memory_mb(process: psutil.Process) -> dict[str, float]:
    """Resident memory of the server and its children (MLServer's inference workers, gunicorn's
    worker), summed (`rss_mb`: pages a forked child shares with its parent count twice) and
    proportional (`pss_mb`: a shared page split between the processes sharing it)."""
    tree = [process, *process.children(recursive=True)]
    return {"rss_mb": round(sum(p.memory_info().rss for p in tree) / 2 ** 20, 1),
            "pss_mb": round(sum(p.memory_full_info().pss for p in tree) / 2 ** 20, 1)}


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU time of the server and its children so far."""
    return sum(sum(p.cpu_times()[:2]) for p in [process, *process.children(recursive=True)])


def in_process_ms(predict, inputs: list) -> list[float]:  # noqa: ANN001
    """Latencies of `predict` on each input, on the servers' CPU (the comparison is on one CPU, and
    on this shared machine the other core may be busier or idler), one numeric thread."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(ONE_CPU[-1])})
    try:
        with threadpool_limits(limits=1):
            predict(inputs[0])  # warm-up
            out = []
            for x in inputs:
                start = time.perf_counter()
                predict(x)
                out.append((time.perf_counter() - start) * 1000)
            return out
    finally:
        os.sched_setaffinity(0, allowed)


def http_client(url: str) -> Callable[[list[dict]], list[float]]:
    """One connection (reopened by http.client when the server closed it); each body's JSON made
    before its clock starts."""
    parts = urlsplit(url)

    def client(chunk: list[dict]) -> list[float]:
        connection, out = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60), []
        headers = {"Content-Type": "application/json"}
        for body in [json.dumps(b).encode() for b in chunk]:
            start = time.perf_counter()
            connection.request("POST", parts.path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"{url}: {response.status} {answer[:300]!r}")
            out.append((time.perf_counter() - start) * 1000)
        connection.close()
        return out

    return client


def requests_client(url: str) -> Callable[[list[dict]], list[float]]:
    def client(chunk: list[dict]) -> list[float]:
        session, out = requests.Session(), []
        for body in chunk:
            start = time.perf_counter()
            session.post(url, json=body, timeout=60).raise_for_status()
            out.append((time.perf_counter() - start) * 1000)
        return out

    return client


def load(url: str, bodies: list[dict], concurrency: int, with_requests: bool = False,
         off_server_cpu: bool = True) -> tuple[list[float], float]:
    """Latencies (ms) of `bodies` sent by `concurrency` clients, each on its own connection, from
    the CPUs the servers are not pinned to (unless told otherwise), and the wall time."""
    chunks = [bodies[i::concurrency] for i in range(concurrency)]
    client = (requests_client if with_requests else http_client)(url)
    allowed = os.sched_getaffinity(0)
    if off_server_cpu:  # the pool's threads inherit it
        os.sched_setaffinity(0, allowed - {int(ONE_CPU[-1])} or allowed)
    try:
        with ThreadPoolExecutor(concurrency) as pool:
            start = time.perf_counter()
            results = list(pool.map(client, chunks))
            return [ms for chunk in results for ms in chunk], time.perf_counter() - start
    finally:
        os.sched_setaffinity(0, allowed)


def figures(ms: list[float], seconds: float | None, cpu: float | None) -> dict[str, float]:
    out = {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}
    if seconds is not None:
        out["requests_per_s"] = round(len(ms) / seconds, 1)
    if cpu is not None:
        out["server_cpu_ms_per_request"] = round(cpu * 1000 / len(ms), 2)
    return out


def run_header(model: str, args: argparse.Namespace, loads: list[float]) -> dict[str, Any]:
    """When, where, what and how loaded: the first keys of a results file."""
    return {"date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}",
            "model": model, "rounds": args.rounds, "requests_per_round": args.requests,
            "load_average_1m": {"per_round": [round(x, 2) for x in loads], "mean": round(float(np.mean(loads)), 2)}}


@dataclass
class Setup:
    """One model's variants: in-process predicts (name -> (predict, inputs)), servers started one at a
    time (name -> (start(workdir, port), URL path, body kind)) and request bodies per kind."""

    model: str
    in_process: dict[str, tuple[Callable[[Any], Any], list]]
    servers: dict[str, tuple[Callable[[Path, int], Any], str, str]]
    bodies: dict[str, list[dict]]
    stack_server: str  # the one also measured through `requests`


def neo_setup(args: argparse.Namespace, tmp: Path) -> Setup:
    import mlflow.pyfunc
    import mlflow.sklearn

    from workloads.neo import data, model, payload
    from workloads.neo.train import flavor_options

    prepared = data.preprocess(data.load(args.data))
    with threadpool_limits(limits=1):
        chosen = model.train_and_select(prepared)
    rows = chosen.X_test
    model_dir = tmp / "model"
    mlflow.sklearn.save_model(chosen.model, model_dir, **flavor_options(chosen.model, rows.head(3)))
    pyfunc = mlflow.pyfunc.load_model(str(model_dir))
    picked = [rows.iloc[[i % len(rows)]] for i in range(args.requests)]
    servers = {name: (lambda workdir, port, r=runtime, w=workers: mlserver(model_dir, r, w, workdir, port),
                      "/v2/models/neo/infer", "v2") for name, (runtime, workers) in MLSERVER_VARIANTS.items()}
    servers["mlflow_models_serve"] = (lambda workdir, port: mlflow_serve(model_dir, workdir, port), "/invocations",
                                      "invocations")
    return Setup(chosen.chosen, {"in_process_pipeline": (chosen.model.predict, picked),
                                 "in_process_pyfunc": (pyfunc.predict, picked)},
                 servers, {"v2": [payload.v2(r) for r in picked], "invocations": [payload.invocations(r) for r in picked]},
                 "mlserver_stack")


def mnist_setup(args: argparse.Namespace, tmp: Path) -> Setup:
    import mlflow.pyfunc
    import torch

    from workloads.mnist import model, pyfunc, train

    if not (TOOLS / TORCH_MLSERVER / "bin" / "mlserver").exists():
        raise SystemExit(f"--model mnist serves the pyfunc on MLServer too: `make bench-deps` builds .venv/tools/{TORCH_MLSERVER}")
    torch.set_num_threads(1)
    train_split, test = train.splits("sample", "")
    net, _ = model.train(train_split.X, train_split.y, model.TrainConfig(epochs=args.epochs))
    model_dir = tmp / "model"
    with pyfunc.weights_file(net) as weights, pyfunc.code_package() as code:
        mlflow.pyfunc.save_model(model_dir, python_model=pyfunc.DigitModel(), artifacts={pyfunc.WEIGHTS: weights},
                                 code_paths=[code], signature=pyfunc.SIGNATURE)
    loaded = mlflow.pyfunc.load_model(str(model_dir))
    images = [test.X[[i % len(test.X)]] for i in range(args.requests)]
    servers = {"seldon_wrapper": (lambda workdir, port: seldon_wrapper(model_dir, workdir, port),
                                  "/api/v1.0/predictions", "seldon"),
               "mlflow_models_serve": (lambda workdir, port: mlflow_serve(model_dir, workdir, port), "/invocations",
                                       "invocations"),
               "mlserver_v2": (lambda workdir, port: mlserver(model_dir, PROJECT_RUNTIME, 0, workdir, port, name="mnist",
                                                              venv=TORCH_MLSERVER), "/v2/models/mnist/infer", "v2")}
    return Setup("mnist_cnn", {"in_process_predict": (lambda x: model.probabilities(net, x), images),
                               "in_process_pyfunc": (loaded.predict, images)},
                 servers, {"seldon": [{"data": {"ndarray": x.tolist()}} for x in images],
                           "invocations": [{"inputs": x.tolist()} for x in images],
                           "v2": [{"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32",
                                               "data": x.ravel().tolist()}]} for x in images]}, "seldon_wrapper")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("neo", "mnist"), default="neo")
    parser.add_argument("--data", default=None, help="neo: CSV path or URL (default: the workload's)")
    parser.add_argument("--epochs", type=int, default=2, help="mnist: training epochs (latency does not need more)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200, help="per variant, round and concurrency")
    args = parser.parse_args()
    samples: dict[str, dict[int, list[float]]] = {}
    seconds: dict[str, dict[int, float]] = {}
    cpu: dict[str, dict[int, float]] = {}
    loads, memory = [], {}
    with tempfile.TemporaryDirectory(prefix="serving-overhead-") as tmp, ExitStack() as stack:
        if args.model == "neo":
            from workloads.neo import data

            args.data = args.data or data.default_source()
            setup = neo_setup(args, Path(tmp))
        else:
            setup = mnist_setup(args, Path(tmp))
        urls, processes = {}, {}
        for name, (start, path, kind) in setup.servers.items():  # one at a time: startup is CPU-heavy
            port = free_port()
            processes[name] = stack.enter_context(start(Path(tmp) / name, port))
            urls[name] = (f"http://127.0.0.1:{port}{path}", kind)
        for url, kind in urls.values():  # warm-up
            load(url, setup.bodies[kind][:20], 1)
        urls[setup.stack_server + REQUESTS_CLIENT] = urls[setup.stack_server]
        processes[setup.stack_server + REQUESTS_CLIENT] = processes[setup.stack_server]
        rng = random.Random(0)
        for round_ in range(args.rounds):
            loads.append(os.getloadavg()[0])
            order = [*urls, *setup.in_process]
            rng.shuffle(order)
            for name in order:
                if name in setup.in_process:
                    predict, inputs = setup.in_process[name]
                    samples.setdefault(name, {}).setdefault(1, []).extend(in_process_ms(predict, inputs))
                    continue
                url, kind = urls[name]
                for c in CONCURRENCY:
                    before = cpu_seconds(processes[name])
                    ms, wall = load(url, setup.bodies[kind], c, with_requests=name.endswith(REQUESTS_CLIENT))
                    samples.setdefault(name, {}).setdefault(c, []).extend(ms)
                    seconds.setdefault(name, {})[c] = seconds.get(name, {}).get(c, 0.0) + wall
                    cpu.setdefault(name, {})[c] = cpu.get(name, {}).get(c, 0.0) + cpu_seconds(processes[name]) - before
            print(f"round {round_ + 1}/{args.rounds} done, load {loads[-1]:.2f}", flush=True)
        loads.append(os.getloadavg()[0])
        memory = {name: memory_mb(p) for name, p in processes.items() if not name.endswith(REQUESTS_CLIENT)}
    results = {
        **run_header(setup.model, args, loads),
        "servers_pinned_to": "1 CPU (taskset -c 0)",
        "client": "http.client, one connection per concurrent client (kept alive where the server allows), on the other CPU"
                  f" ({setup.stack_server}{REQUESTS_CLIENT}: requests.Session)",
        "variants": {name: {f"c{c}": figures(ms, seconds.get(name, {}).get(c), cpu.get(name, {}).get(c))
                            for c, ms in by_c.items()}
                     | memory.get(name, {})
                     for name, by_c in samples.items()},
    }
    name = "serving_overhead.json" if args.model == "neo" else f"serving_overhead_{args.model}.json"
    (ROOT / "benchmarks" / "results" / name).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{results['date']}, {results['machine']}, load average {results['load_average_1m']}\n")
    print("| variant | c=1 p50 (ms) | c=1 p99 (ms) | c=1 req/s | c=1 server CPU/req (ms) | c=8 p50 (ms) | c=8 p99 (ms) "
          "| c=8 req/s | c=8 server CPU/req (ms) | RSS (MB) | PSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, v in results["variants"].items():
        cells = [v.get(c, {}).get(k, "") for c in ("c1", "c8")
                 for k in ("p50_ms", "p99_ms", "requests_per_s", "server_cpu_ms_per_request")]
        print(f"| {name} | {' | '.join(map(str, cells))} | {v.get('rss_mb', '')} | {v.get('pss_mb', '')} |")


if __name__ == "__main__":
    main()
