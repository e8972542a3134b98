"""Benchmark: the NEO classifier — forest size against quality and latency, the chosen model, and
single-row latency through MLflow's scoring server against the in-process floor.

Run: `.venv/bin/python benchmarks/neo.py [--data PATH_OR_URL] [--sizes 10 50 100 500 1000 10000]`.
Everything runs single-threaded (a scoring worker answers one request per thread) and, for the
server, pinned to one CPU. Writes benchmarks/results/neo.json and prints Markdown tables.

- forests: RandomForestClassifier with scikit-learn's defaults (as in the source, which served a
  10,000-tree one) at several sizes — fit time on the 80 % split, held-out F1 / ROC AUC on the
  20 %, single-row predict_proba latency p50/p99 and batch throughput;
- chosen: the model `workloads.neo.model.train_and_select` picks (5-fold CV F1 / ROC AUC on the
  whole table, held-out split), against the linear baseline;
- served: p50/p99 and throughput of one-row requests, 1 CPU each: V2 `POST /v2/models/neo/infer`
  to MLServer with the stack's MLflow runtime (what Seldon serves; `.venv/tools/mlserver`, built
  by `make test-deps`), and `POST /invocations` to `mlflow models serve` (1 worker).
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

import numpy as np
import requests
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.runtimes import mlflow_scoring_server, mlserver  # noqa: E402
from workloads.neo import data, model, payload  # noqa: E402
from workloads.neo.train import flavor_options  # noqa: E402


def latencies_ms(predict, rows, repeats: int) -> np.ndarray:
    predict(rows.iloc[[0]])  # warm-up
    out = []
    for i in range(repeats):
        row = rows.iloc[[i % len(rows)]]
        start = time.perf_counter()
        predict(row)
        out.append((time.perf_counter() - start) * 1000)
    return np.array(out)


def summary(ms: np.ndarray) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def forests(prepared, sizes: list[int], repeats: int) -> list[dict]:
    X_train, X_test, y_train, y_test = train_test_split(
        prepared.X, prepared.y, test_size=model.TEST_SIZE, stratify=prepared.y, random_state=model.SEED)
    rows = []
    for size in sizes:
        forest = RandomForestClassifier(n_estimators=size, random_state=model.SEED, n_jobs=1)
        start = time.perf_counter()
        forest.fit(X_train, y_train)
        fit_s = time.perf_counter() - start
        f1, auc = model.held_out(forest, X_test, y_test)
        ms = latencies_ms(forest.predict_proba, X_test, repeats if size <= 1000 else max(20, repeats // 20))
        start = time.perf_counter()
        forest.predict_proba(X_test)
        batch_rows_s = len(X_test) / (time.perf_counter() - start)
        rows.append({"trees": size, "fit_s": round(fit_s, 2), "f1": round(f1, 4), "roc_auc": round(auc, 5),
                     **summary(ms), "batch_rows_per_s": round(batch_rows_s)})
        print(rows[-1], flush=True)
    return rows


def over_http(url: str, bodies: list[dict]) -> dict[str, float]:
    session = requests.Session()
    for body in bodies[:20]:
        session.post(url, json=body, timeout=30).raise_for_status()
    ms = []
    start_all = time.perf_counter()
    for body in bodies:
        start = time.perf_counter()
        session.post(url, json=body, timeout=30).raise_for_status()
        ms.append((time.perf_counter() - start) * 1000)
    return {**summary(np.array(ms)), "requests_per_s": round(len(bodies) / (time.perf_counter() - start_all), 1)}


def served(fitted, rows, requests_n: int) -> dict[str, dict[str, float]]:
    """One-row requests to MLServer (V2) and to `mlflow models serve`, each on one CPU (taskset)."""
    import mlflow.sklearn

    single_rows = [rows.iloc[[i % len(rows)]] for i in range(requests_n)]
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "model"
        mlflow.sklearn.save_model(fitted, path, **flavor_options(fitted, rows.head(3)))
        with mlserver(path, "neo") as url:
            results = {"mlserver_v2": over_http(f"{url}/v2/models/neo/infer", [payload.v2(r) for r in single_rows])}
        with mlflow_scoring_server(path) as url:
            results["mlflow_models_serve"] = over_http(f"{url}/invocations",
                                                       [payload.invocations(r) for r in single_rows])
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=data.default_source())
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100, 500, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=400)
    args = parser.parse_args()
    prepared = data.preprocess(data.load(args.data))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}, Python {platform.python_version()}"
    results: dict = {"date": date.today().isoformat(), "machine": machine, "rows": len(prepared.X)}
    with threadpool_limits(limits=1):
        results["forests"] = forests(prepared, args.sizes, args.repeats)
        start = time.perf_counter()
        chosen = model.train_and_select(prepared)
        results["selection_s"] = round(time.perf_counter() - start, 1)
        X_test = chosen.X_test
        in_process = summary(latencies_ms(chosen.model.predict, X_test, args.repeats))
    results["candidates"] = [
        {"name": s.name, "cv_f1_mean": round(s.cv_f1_mean, 4), "cv_f1_std": round(s.cv_f1_std, 4),
         "cv_roc_auc_mean": round(s.cv_roc_auc_mean, 5), "latency_ms": round(s.latency_ms, 3)}
        for s in chosen.scores
    ]
    results["chosen"] = {"name": chosen.chosen, "held_out_f1": round(chosen.f1, 4),
                         "held_out_roc_auc": round(chosen.roc_auc, 5),
                         "grouped_cv_f1_mean": round(chosen.grouped_cv_f1_mean, 4),
                         "in_process_predict": in_process,
                         **served(chosen.model, X_test, args.repeats)}
    out = ROOT / "benchmarks" / "results" / "neo.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{results['date']}, {machine}\n")
    print("| trees | fit (s) | held-out F1 | ROC AUC | 1-row p50 (ms) | 1-row p99 (ms) | batch rows/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results["forests"]:
        print(f"| {r['trees']} | {r['fit_s']} | {r['f1']} | {r['roc_auc']} | {r['p50_ms']} | {r['p99_ms']} "
              f"| {r['batch_rows_per_s']} |")
    print("\n| candidate | CV F1 | CV ROC AUC | 1-row latency (ms) |\n|---|---:|---:|---:|")
    for c in results["candidates"]:
        print(f"| {c['name']} | {c['cv_f1_mean']} ± {c['cv_f1_std']} | {c['cv_roc_auc_mean']} | {c['latency_ms']} |")
    print(json.dumps(results["chosen"], indent=2))


if __name__ == "__main__":
    main()
