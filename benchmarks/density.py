"""Benchmark: how many small models fit, one MLServer process per model (dedicated) against many
models in one MLServer process (shared, `tenantDefaults.serving.mode: shared`).

Run: `.venv/bin/python benchmarks/density.py [--sizes 1 3 10 60 180]` (`make test-deps` builds the
MLServer it starts). Writes benchmarks/results/density.json and prints Markdown tables.

- measured: a student-sized model (scikit-learn StandardScaler + 50-tree forest of depth 8 on 22
  numeric features, the NEO table's width; an MLflow model of ~1 MB) copied into N directories
  and served as N distinct models by one real MLServer 1.7.1 process (no inference workers, as
  both modes run it; the project's MLflow runtime), pinned to one CPU. After every model answered
  one V2 request and 5 s of settling: PSS of the process, total and per model (RSS too: PSS splits
  library pages with other MLServer processes on the machine), and the time until all N were ready. Dedicated mode is the 1-model process, once per model.
- declared: the CPU/memory requests of the tenant namespaces in the dev plan of a class of 60
  tenants × 3 alias models (benchmarks/plan.py's class), in each mode: what the scheduler has to
  place (mlops/footprint.py: model containers, Seldon's executor where one runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.plan import class_tenants  # noqa: E402
from tests.footprint_measure import SETTLE_S, pss_mib, tree  # noqa: E402
from tests.runtimes import MLFLOW_RUNTIME  # noqa: E402
from tests.shared_mlserver import model_settings, shared_mlserver  # noqa: E402

FEATURES = 22
TENANTS, MODELS_PER_TENANT = 60, 3


def student_model(directory: Path) -> dict:
    """Save the student-sized pipeline as an MLflow model; returns one V2 request for it."""
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = make_classification(n_samples=4000, n_features=FEATURES, n_informative=8, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(FEATURES)])
    model = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0,
                                                                   n_jobs=1)).fit(frame, y)
    mlflow.sklearn.save_model(model, str(directory), signature=infer_signature(frame, model.predict(frame)),
                              serialization_format="cloudpickle")
    row = frame.iloc[0]
    return {"inputs": [{"name": c, "shape": [1], "datatype": "FP64", "data": [float(np.float64(row[c]))]}
                       for c in frame.columns]}


def rss_mib(root: int) -> float:
    """RSS of the process tree: what the pod's memory cgroup roughly charges (no page is split with
    other processes, unlike PSS)."""
    total = 0
    for pid in tree(root):
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        total += next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Rss:"))
    return total / 1024


def dir_mib(directory: Path) -> float:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file()) / 2 ** 20


def measure(n: int, model_dir: Path, request: dict, work: Path) -> dict:
    copies = work / f"copies-{n}"
    repository = {}
    for i in range(n):
        name = f"model-{i:03d}"
        shutil.copytree(model_dir, copies / name)  # distinct files: nothing is shared but the code
        repository[f"{name}/model-settings.json"] = model_settings(name, MLFLOW_RUNTIME, uri=str(copies / name))
    started = time.perf_counter()
    with shared_mlserver(repository, timeout=1800) as server:
        ready_s = time.perf_counter() - started
        for i in range(n):
            answer = requests.post(f"{server.url}/v2/models/model-{i:03d}/infer", json=request, timeout=60)
            answer.raise_for_status()
        time.sleep(SETTLE_S)
        pss, rss = pss_mib(server.pid()), rss_mib(server.pid())
    shutil.rmtree(copies)
    row = {"models": n, "pss_mib": round(pss, 1), "pss_per_model_mib": round(pss / n, 1), "rss_mib": round(rss, 1),
           "ready_s": round(ready_s, 1)}
    print(row, flush=True)
    return row


def declared(mode: str) -> dict:
    """Requests of the tenant pods in the dev plan of the class, in `mode`."""
    from mlops.footprint import pods_of
    from mlops.plan import run_program, stack_config

    values, secrets = stack_config("dev")
    config = {**values, "mlops-stack:tenants": json.dumps(class_tenants(TENANTS)),
              "mlops-stack:tenantDefaults": json.dumps({"serving": {"mode": mode}})}
    plan = run_program("dev", (config, secrets))
    tenants = set(class_tenants(TENANTS))
    cpu = mem = pods = 0
    for pod in pods_of(plan):
        if pod.component.split("/", 1)[0] in tenants and not pod.batch:
            pcpu, pmem = pod.requests()
            cpu, mem, pods = cpu + pod.replicas * pcpu, mem + pod.replicas * pmem, pods + pod.replicas
    models = TENANTS * MODELS_PER_TENANT
    return {"mode": mode, "models": models, "pods": pods, "cpu_m": cpu, "memory_mib": mem,
            "memory_per_model_mib": round(mem / models, 1)}


def tables(result: dict) -> str:
    rows = {r["models"]: r for r in result["measured"]}
    lines = ["| models in one MLServer | PSS total (MiB) | PSS per model (MiB) | RSS total (MiB) | all ready after (s) |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['models']} | {r['pss_mib']} | {r['pss_per_model_mib']} | {r['rss_mib']} | {r['ready_s']} |"
              for r in result["measured"]]
    big = max(rows)
    declared_rows = {d["mode"]: d for d in result["declared"]}
    lines += ["", f"| {big} models | measured PSS (GiB) | PSS per model (MiB) | measured RSS (GiB) | pods | "
              "requests CPU | requests memory (GiB) | requested per model (MiB) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    per_server = result["models_per_server"]
    servers = -(-big // per_server)
    processes = {"dedicated": (big, rows[1]), "shared": (servers, rows.get(per_server))}  # one tenant's server
    for mode in ("dedicated", "shared"):
        d, (count, row) = declared_rows[mode], processes[mode]
        shown = ((f"{count * row['pss_mib'] / 1024:.1f}", f"{count * row['pss_mib'] / big:.1f}",
                  f"{count * row['rss_mib'] / 1024:.1f}") if row else ("–", "–", "–"))
        lines.append(f"| {mode} | {' | '.join(shown)} | {d['pods']} | {d['cpu_m'] / 1000:g} | "
                     f"{d['memory_mib'] / 1024:.1f} | {d['memory_per_model_mib']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[1, 3, 10, 60, 180])
    args = parser.parse_args()
    load = f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at start"
    machine = f"{platform.machine()} {platform.processor() or platform.system()}, Python {platform.python_version()}"
    with tempfile.TemporaryDirectory(prefix="density-") as tmp:
        work = Path(tmp)
        request = student_model(work / "model")
        size = dir_mib(work / "model")
        measured = [measure(n, work / "model", request, work) for n in args.sizes]
    result = {"date": date.today().isoformat(), "machine": machine, "load": load, "model_mib": round(size, 2),
              "models_per_server": MODELS_PER_TENANT, "measured": measured,
              "declared": [declared("dedicated"), declared("shared")]}
    (ROOT / "benchmarks" / "results" / "density.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"Measured {result['date']} on {machine} ({load}); model on disk {size:.2f} MiB:\n\n{tables(result)}")


if __name__ == "__main__":
    main()
