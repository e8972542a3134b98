"""Benchmark: lead time from "challenger registered" to "served as champion" through the local
loop, and the requests that fail during the switch (target 0).

Run: `.venv/bin/python benchmarks/lead_time.py [--rounds 3]`. Real processes, as the tests run
them (tests/test_serve_by_alias.py, tests/test_pipeline_hooks.py): PostgreSQL + the S3 API + the
platform's MLflow server; MLServer (`.venv/tools/mlserver`, one CPU) started with the env of the
dev stack's `neo` champion container (serving by alias, `serving.registry.pollSeconds` 5, the
smallest the config allows); the neo pipeline's hooks run as the pipeline's jobs run them.

Each round: `ci/register` retrains NEO (400 rows of the NASA table) and registers it as
`challenger` — the clock starts when it returns — then `ci/deploy` (shadow), `ci/smoke`
(challenger), `ci/promote` (the gate, then `champion` moves), and the clock stops at the first
answer of the new version from the server, which a thread queries back to back all along. The
switch is timed from the moment `champion` moved (a second thread watches the alias), not from the
promote hook's exit: the server may answer with the new version before that process has ended.
Writes benchmarks/results/lead_time.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import requests
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_pipeline_hooks import Traffic, ok, run_hook, write_neo_tables  # noqa: E402
from tests.test_serve_by_alias import (  # noqa: E402
    LOAD_BUDGET,
    POLL_SECONDS,
    alias_plan,
    alias_server,
    registry_services,
)
from workloads.neo import data, payload  # noqa: E402
from workloads.neo.train import MODEL_NAME  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "lead_time.json"
STEPS = ("deploy", "smoke", "promote")


class AliasWatch:
    """When `champion` starts pointing at `version`: the registry polled every 0.25 s from a thread."""

    def __init__(self, client: MlflowClient, version: str) -> None:
        self.client, self.version, self.moved = client, version, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.moved is None:
            if self.client.get_model_version_by_alias(MODEL_NAME, "champion").version == self.version:
                self.moved = time.monotonic()
            time.sleep(0.25)

    def __enter__(self) -> AliasWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def run(rounds: int) -> dict:
    load_start = round(os.getloadavg()[0], 2)
    plan = alias_plan()
    work = Path(tempfile.mkdtemp(prefix="lead-time-"))
    good, _ = write_neo_tables(work)
    rows = data.preprocess(data.load(str(good))).X.head(5)
    with registry_services() as registry:
        os.environ.update({"MLFLOW_TRACKING_URI": registry.url, "MLFLOW_TRACKING_USERNAME": registry.server.username,
                           "MLFLOW_TRACKING_PASSWORD": registry.server.password})

        def step(name: str, **env: str) -> tuple[dict[str, str], float]:
            start = time.monotonic()
            result = ok(run_hook(registry.server, work, "neo", name, NEO_DATA=str(good), **env))
            return result.outputs, time.monotonic() - start

        first = step("register")[0]["model-version"]
        step("promote", MODEL_VERSION=first)  # the first champion: nothing to compare with
        measured = []
        with alias_server(plan, registry) as server:
            endpoint = f"{server.url}/v2/models/model/infer"
            outputs_file = work / "outputs.json"  # the stack output the smoke step finds the endpoint in
            outputs_file.write_text(json.dumps({"modelUrls": {"neo": endpoint}}))

            def infer() -> requests.Response:
                return requests.post(endpoint, json=payload.v2(rows), timeout=30)

            with Traffic(infer, lambda body: body.get("model_version")) as traffic:
                for _ in range(rounds):
                    outputs, register_s = step("register")
                    version, registered = outputs["model-version"], time.monotonic()
                    failed_before = traffic.failed
                    seconds = {"register_s": round(register_s, 1)}
                    with AliasWatch(registry.admin, version) as watch:
                        for name in STEPS:
                            took = step(name, MODEL_VERSION=version, STACK_OUTPUTS=str(outputs_file))[1]
                            seconds[f"{name}_s"] = round(took, 1)
                        deadline = time.monotonic() + POLL_SECONDS + LOAD_BUDGET
                        while (watch.moved is None or traffic.first(version) is None) and time.monotonic() < deadline:
                            time.sleep(0.1)
                    served, moved = traffic.first(version), watch.moved
                    if served is None or moved is None:
                        raise RuntimeError(f"v{version} not served {POLL_SECONDS + LOAD_BUDGET} s after promotion:\n"
                                           f"{server.log.read_text()[-3000:]}")
                    measured.append({"version": version, **seconds,
                                     "switch_s": round(served - moved, 1),
                                     "lead_time_s": round(served - registered, 1),
                                     "failed_requests": traffic.failed - failed_before})
                    time.sleep(1)  # a few answers of the new champion before the next round
            total, failed = len(traffic.answers), traffic.failed
    leads = [m["lead_time_s"] for m in measured]
    return {
        "date": str(date.today()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load": "a shared machine (other sessions' tests ran meanwhile); MLServer pinned to one CPU",
        "load_average_1m": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "poll_seconds": POLL_SECONDS,
        "rounds": measured,
        "lead_time_s": {"median": statistics.median(leads), "max": max(leads)},
        "requests": total,
        "failed_requests": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    result = run(parser.parse_args().rounds)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print("| round | register s | deploy s | smoke s | promote s | alias moved → served s | lead time s | failed |")
    print("|---|---|---|---|---|---|---|---|")
    for i, m in enumerate(result["rounds"], 1):
        print(f"| {i} (v{m['version']}) | {m['register_s']} | {m['deploy_s']} | {m['smoke_s']} | {m['promote_s']} "
              f"| {m['switch_s']} | {m['lead_time_s']} | {m['failed_requests']} |")
    print(f"\n{result['requests']} requests during the run, {result['failed_requests']} failed; "
          f"lead time median {result['lead_time_s']['median']} s, max {result['lead_time_s']['max']} s")


if __name__ == "__main__":
    main()
