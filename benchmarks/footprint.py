"""Benchmark: per component, the memory the stack requests and limits against what its process
really uses, and the dev stack's sum against the `make up` minikube with room for three models.

Run: `.venv/bin/python benchmarks/footprint.py [--write-readme]`. It starts what the integration
tests start (tests/footprint_measure.py: PostgreSQL, moto, MLflow, the workload Jobs, the
Pushgateway, MLServer, the Seldon wrapper; `make test-deps`, PostgreSQL server binaries, Debian's
prometheus-pushgateway and the shared NEO table are needed), each as the full-dev plan declares it.
Memory is PSS of the whole process tree, idle and after 200 real requests (Jobs: peak). Writes
benchmarks/results/footprint.json and prints Markdown tables.

The dev sum counts every running pod of the dev plan (mlops/footprint.py: charts as their templates
run them); a container measured here counts at its measured figure, the others (Prometheus,
Grafana, Istio, the Seldon manager, SeaweedFS, exporters: images with no process to run here) at
their requests. Kubernetes' own system pods are not included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
from dataclasses import asdict
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlops.footprint import pods_of, requests_of  # noqa: E402
from mlops.plan import Plan, run_program, stack_config  # noqa: E402
from mlops.readme import update  # noqa: E402
from tests import footprint_measure as fm  # noqa: E402
from workloads.neo.data import default_source  # noqa: E402

MODEL_URI = "s3://mlflow-artifacts/1/models/m-{:016x}/artifacts"
# which dev-plan container each measurement stands for: (pod component, container)
MEASURED_AS = {("MLflow server", "mlflow"): ("mlflow/Deployment/mlflow", "mlflow"),
               ("PostgreSQL", "postgres"): ("mlops-platform/StatefulSet/postgres", "postgres")}


def minikube_capacity() -> tuple[int, int]:
    """(CPU millicores, MiB) that `make up` gives minikube (scripts/up.sh defaults)."""
    text = (ROOT / "scripts" / "up.sh").read_text()
    cpus = int(re.search(r"MINIKUBE_CPUS:-(\d+)", text).group(1))
    memory = int(re.search(r"MINIKUBE_MEMORY:-(\d+)", text).group(1))
    return cpus * 1000, memory


def measure_all() -> list[fm.Measurement]:
    plan = run_program("full-dev", stack_config("full-dev", ROOT / "tests" / "stacks"), reveal_secrets=True)
    table = Path(default_source())
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        raise SystemExit("prometheus-pushgateway not found: apt-get install prometheus-pushgateway")
    out: list[fm.Measurement] = []
    with fm.platform(plan) as found:
        out += [*found.measurements, *fm.measure_platform(found)]
        out += fm.measure_energy_job(found) + fm.measure_neo_job(found, table) + fm.measure_mnist_job(found)
    out.append(fm.measure_pushgateway(plan, binary))
    with tempfile.TemporaryDirectory() as tmp:
        out.append(fm.measure_neo_mlserver(plan, table, Path(tmp)))
        out.append(fm.measure_mnist_wrapper(Path(tmp)))
    for m in out:
        print(m.row(), flush=True)
    return out


def with_models(n: int) -> Plan:
    values, secrets = stack_config("dev")
    models = {f"model-{i}": {"source": {"uri": MODEL_URI.format(i)}} for i in range(n)}
    return run_program("dev", ({**values, "mlops-stack:serving": json.dumps({"models": models})}, secrets))


def dev_sums(measured: list[fm.Measurement]) -> dict[str, dict[str, int]]:
    """Requests, limits and measured-or-requested memory of the dev stack and of three models."""
    by_container = {MEASURED_AS[(m.component, m.container)]: m.burst_mib for m in measured
                    if (m.component, m.container) in MEASURED_AS}
    model = next(m for m in measured if m.component == "MLServer (neo)")

    def sums(plan: Plan, measured_memory: dict[tuple[str, str], float]) -> dict[str, int]:
        running = [p for p in pods_of(plan) if not p.batch]
        memory = sum(p.replicas * sum(measured_memory.get((p.component, c.name), c.memory_mib) for c in p.containers)
                     for p in running)
        limits = sum(p.replicas * sum(c.memory_limit_mib or 0 for c in p.containers) for p in running)
        requested, _ = requests_of(plan)
        return {"cpu_m": requested["cpu_m"], "memory_mib": requested["memory_mib"],
                "memory_measured_mib": round(memory), "memory_limits_mib": limits}

    dev = sums(run_program("dev"), by_container)
    three = with_models(3)
    models_measured = {(p.component, "model"): model.burst_mib for p in pods_of(three)
                       if "SeldonDeployment" in p.component}
    total = sums(three, {**by_container, **models_measured})
    return {"dev": dev, "three_models": {k: total[k] - dev[k] for k in dev}, "dev_with_three_models": total}


def tables(results: dict) -> tuple[str, str]:
    rows = ["| component (container) | requested | limit | measured idle | measured after burst (Jobs: peak) | "
            "run here as |", "|---|---|---|---|---|---|"]
    rows += [fm.Measurement(**m).row() for m in results["components"]]
    cpu, memory = results["minikube"]
    s = results["sums"]
    sums = ["| | CPU requests | memory requests | memory, measured where run here | memory limits |",
            "|---|---|---|---|---|"]
    for label, key in (("dev stack", "dev"), ("three served models (MLflow runtime)", "three_models"),
                       ("dev stack + three models", "dev_with_three_models")):
        r = s[key]
        sums.append(f"| {label} | {r['cpu_m']} m | {r['memory_mib']} MiB | {r['memory_measured_mib']} MiB | "
                    f"{r['memory_limits_mib']} MiB |")
    sums.append(f"| `make up` minikube | {cpu} m | {memory} MiB | {memory} MiB | — |")
    return "\n".join(rows), "\n".join(sums)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write-readme", action="store_true", help="put the tables into README.md")
    args = parser.parse_args()
    measured = measure_all()
    results = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "components": [asdict(m) for m in measured],
        "sums": dev_sums(measured),
        "minikube": minikube_capacity(),
        "over_limit": [p for p in (m.problem() for m in measured) if p],
    }
    (ROOT / "benchmarks" / "results" / "footprint.json").write_text(json.dumps(results, indent=2) + "\n")
    components, sums = tables(results)
    print(f"\nMeasured {results['date']} on {results['machine']}:\n\n{components}\n\n{sums}")
    for problem in results["over_limit"]:
        print(f"OVER LIMIT: {problem}")
    if args.write_readme:
        update("benchmark:footprint", components)
        update("benchmark:footprint-sum", sums)


if __name__ == "__main__":
    main()
