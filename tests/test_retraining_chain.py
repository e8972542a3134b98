"""The retraining loop end to end, on real local processes (issue 13, "a scripted scenario"):

    NEOs@champion served by the real MLServer (the plan's container env: the project's alias
    runtime, every request sampled to the object store) → drifted V2 requests → the plan's drift
    CronJob (mlops/drift.py) on what the server wrote → Pushgateway → Prometheus (the stack's
    rendered rules) → ModelDrift → Alertmanager (the stack's routing) → the receiver → a Job on the
    stand-in Kubernetes API → the Job's containers run here, as the pod would run them (command and
    env from the Job; Secrets resolved; the real training entry point on a small table) against a
    real MLflow server → the promote step → champion moved, the run tagged trigger=drift → the
    running server follows the alias to the new version.

Then neo's new-data check, run as its CronJob runs it: an unchanged table starts nothing; a new
version of the file starts a `newData` Job, whose worse model the gate keeps out. And energy's
variant: a MAPE past its threshold (the gauge the monitor pushes) → ModelQualityDegraded → an
energy Job whose gate waits for shadow days → the `energy-retrain-promote` CronJob promotes it once
the shadow forecasts beat the champion's.

For test time only: ModelDrift's `for: 5m` and ModelQualityDegraded's `for: 10m` are 1s here (the
rules are otherwise the plan's), Prometheus scrapes and evaluates every second, Alertmanager's group
timers are shortened (tests/retraining_stack.py) and energy's gate compares 2 shadow days
(`retrain.promoteDays: 2`), not 7.
The stack serves neo following its alias every 5s (the least its config allows) and keeps every
request (sampleRate 1), so a few requests are enough for the drift job; the server writes its sample
every second, not every 5s (the config's least).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from mlflow import MlflowClient
from prometheus_client import CollectorRegistry, Gauge, delete_from_gateway, push_to_gateway
from prometheus_client.parser import text_string_to_metric_families

from mlops.plan import Plan, run_program, stack_config
from modules.monitoring.pushgateway import PORT as PUSHGATEWAY_PORT
from tests import test_pipeline_hooks
from tests.retraining_stack import (IN_CLUSTER_URL, NS, alertmanager_process, counter, kubernetes_stand_in,
                                    models_config, receiver_process, wait_until)
from tests.runtimes import EnvServer, mlserver_from_env
from tests.services import free_port, mlflow_server, postgres, pushgateway, s3_api, server_process
from tests.test_serve_by_alias import operator_env
from tests.tools import require_tool
from workloads.common import promotion, retrained
from workloads.energy import store, synthetic
from workloads.neo import data as neo_data
from workloads.neo import payload

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
BUCKET = "mlflow-artifacts"
MODEL = "NEOs"
DIGEST = "sha256:" + "ab" * 32
neo_tables = test_pipeline_hooks.neo_tables  # the fixture: 400 NASA rows, and the same with shuffled labels
WORKLOADS = {"neo": {"enabled": True, "image": {"repository": "ghcr.io/my-org/neo", "tag": "3f2c1ab", "digest": DIGEST},
                     "dataUrl": "https://data.example.org/nasa.csv",
                     "retrain": {"drift": True, "newData": {"schedule": "0 7 * * *"}, "cooldownMinutes": 0}},
             "energy": {"enabled": True, "demoData": False,
                        "image": {"repository": "ghcr.io/my-org/energy", "tag": "3f2c1ab", "digest": DIGEST},
                        "retrain": {"qualityDrop": True, "promoteDays": 2}}}
SERVING = {"registry": {"pollSeconds": 5},
           "models": {"neo": {"source": {"model": MODEL, "alias": "champion"},
                              "monitoring": {"sampleRate": 1, "flushSeconds": 5}}}}
SHORTENED = {"ModelDrift": "5m", "ModelQualityDegraded": "10m"}  # their `for` in the plan; 1s here
IN_CLUSTER_PUSHGATEWAY = f"http://pushgateway.monitoring.svc.cluster.local:{PUSHGATEWAY_PORT}"
STORE_KEYS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}  # the S3 API's (moto: any)
DRIFTED_REQUESTS, ROWS = 10, 20


@pytest.fixture(scope="module")
def plan() -> Plan:
    values, secret_keys = stack_config("dev")
    return run_program("dev", ({**values, "mlops-stack:workloads": json.dumps(WORKLOADS),
                                "mlops-stack:serving": json.dumps(SERVING)}, secret_keys), reveal_secrets=True)


@pytest.fixture(scope="module")
def services():
    """PostgreSQL (MLflow's databases and energy's), an S3 API and the MLflow server; this process
    talks to MLflow as the Jobs do."""
    with postgres(("mlruns", "mlflow_auth", "energy", "energy_crippled")) as db, s3_api((BUCKET,)) as s3, \
            mlflow_server(db, s3, BUCKET) as server:
        patch = pytest.MonkeyPatch()
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            patch.setenv(key, secrets(server)[key])
        patch.setenv("MLFLOW_TRACKING_URI", server.url)
        yield db, server, s3
        patch.undo()


@pytest.fixture(scope="module")
def mlflow(services):
    return services[1]


def secrets(server) -> dict[str, str]:
    """The keys of the Secrets the pods read (mlflow-client, mlflow-model-reader, mlflow-drift, the
    object-store keys), with the local services' values: every MLflow login is the admin here."""
    return {"MLFLOW_TRACKING_USERNAME": server.username, "MLFLOW_TRACKING_PASSWORD": server.password,
            "username": server.username, "password": server.password, **STORE_KEYS}


def prometheus_rules(plan: Plan) -> dict[str, Any]:
    """Every rule group the plan's PrometheusRules carry, the retraining alerts' `for` shortened to 1s."""
    groups = [g for o in plan.kubernetes_objects if o["kind"] == "PrometheusRule" for g in o["spec"]["groups"]]
    shortened = [r for g in groups for r in g["rules"] if r.get("alert") in SHORTENED]
    assert {r["alert"]: r["for"] for r in shortened} == SHORTENED
    for rule in shortened:
        rule["for"] = "1s"
    return {"groups": groups}


@pytest.fixture(scope="module")
def loop(plan, mlflow, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Pushgateway ← Prometheus (the plan's rules) → Alertmanager (the plan's routes) → receiver → stand-in API."""
    binary = require_tool("prometheus", "a real Prometheus evaluating the stack's rules (Debian prometheus)")
    folder = tmp_path_factory.mktemp("loop")
    with pushgateway() as gateway, kubernetes_stand_in() as api, \
            receiver_process(models_config(plan), api.url, folder) as receiver, \
            alertmanager_process(plan, receiver, folder) as alertmanager:
        (folder / "rules.yml").write_text(yaml.safe_dump(prometheus_rules(plan)))
        (folder / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(folder / "rules.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.removeprefix("http://")]}]}]},
            "scrape_configs": [{"job_name": "pushgateway", "honor_labels": True,
                                "static_configs": [{"targets": [gateway.removeprefix("http://")]}]}]}))
        port = free_port()
        with server_process([binary, f"--config.file={folder / 'prometheus.yml'}",
                             f"--storage.tsdb.path={folder / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            f"http://127.0.0.1:{port}/-/ready", folder / "prometheus.log"):
            yield {"pushgateway": gateway, "api": api, "receiver": receiver, "folder": folder}


def container_env(container: dict[str, Any], server, **overrides: str) -> dict[str, str]:
    """A container's env as the kubelet gives it, Secret references resolved with the local services'
    values (`secrets`), `overrides` for what differs locally."""
    return {e["name"]: e["value"] if "value" in e else secrets(server)[e["valueFrom"]["secretKeyRef"]["key"]]
            for e in container.get("env", []) if e["name"] not in overrides} | overrides


def run_container(container: dict[str, Any], server, tmp: Path, **overrides: str) -> subprocess.CompletedProcess:
    """A container of the plan's pod, here: its command (python = this interpreter, the repository as
    the image's /app) and env (`container_env`; the local MLflow, HOME in `tmp`)."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT),
           **container_env(container, server, MLFLOW_TRACKING_URI=server.url, HOME=str(tmp), **overrides)}
    command = [sys.executable if c == "python" else c for c in container["command"][:1]] + container["command"][1:]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{container['name']}: {result.stdout}\n{result.stderr}"
    return result


def run_job(job: dict[str, Any], server, tmp: Path, **overrides: str) -> str:
    """The pod's init containers in order, then its (one) container; the last one's output."""
    pod = job["spec"]["template"]["spec"]
    outputs = [run_container(c, server, tmp, **overrides).stdout for c in [*pod.get("initContainers", []),
                                                                            *pod["containers"]]]
    return outputs[-1]


def last_gate(gateway: str, model: str) -> dict[str, str]:
    """The labels of the model's `retraining_gate_timestamp_seconds` on the Pushgateway (its last gate)."""
    families = text_string_to_metric_families(requests.get(f"{gateway}/metrics", timeout=10).text)
    [sample] = [s for f in families if f.name == retrained.GATE_METRIC for s in f.samples
                if s.labels.get("model") == model]
    assert abs(sample.value - time.time()) < 300
    return {k: sample.labels[k] for k in ("trigger", "outcome", "version")}


@contextmanager
def served_champion(plan: Plan, server, s3: str) -> Iterator[EnvServer]:
    """MLServer with the env of the plan's neo container (the alias runtime following NEOs@champion,
    the sample written to the bucket), pointed at the local MLflow and S3 API, plus what the operator
    adds; ready once the champion's version is loaded (the container's readiness probe)."""
    [container] = plan.manifest("SeldonDeployment", "neo", "serving")["spec"]["predictors"][0]["componentSpecs"][0][
        "spec"]["containers"]
    env = container_env(container, server, MLFLOW_TRACKING_URI=server.url, MLFLOW_S3_ENDPOINT_URL=s3,
                        MLOPS_INFERENCE_LOG_FLUSH_SECONDS="1")
    with mlserver_from_env(env | operator_env(container), container["readinessProbe"]["httpGet"]["path"]) as served:
        yield served


def infer(served: EnvServer, rows: pd.DataFrame) -> dict[str, Any]:
    """One V2 request (the model container is the graph's only node, `model`)."""
    response = requests.post(f"{served.url}/v2/models/model/infer", json=payload.v2(rows), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def samples_written(served: EnvServer) -> float:
    """The requests the runtime has written to the sample so far (mlops_inference_samples_total)."""
    families = text_string_to_metric_families(requests.get(served.metrics_url, timeout=10).text)
    return sum(s.value for f in families if f.name == "mlops_inference_samples" for s in f.samples
               if s.name.endswith("_total"))


def send_drifted(served: EnvServer, table: Path) -> None:
    """DRIFTED_REQUESTS requests of ROWS rows each, every feature shifted, answered by the champion;
    waits until the runtime has written them (sampleRate 1: all of them)."""
    features = neo_data.preprocess(pd.read_csv(table)).X.head(DRIFTED_REQUESTS * ROWS) * 5 + 1e6
    for i in range(DRIFTED_REQUESTS):
        assert infer(served, features.iloc[i * ROWS:(i + 1) * ROWS])["model_version"] == "1"
    wait_until(lambda: samples_written(served) == DRIFTED_REQUESTS, "the runtime writes the sample", seconds=30)


def local(container: dict[str, Any], *urls: tuple[str, str]) -> dict[str, Any]:
    """The container with its command's in-cluster URLs replaced by the local servers'."""
    command = container["command"]
    for in_cluster, here in urls:
        command = [c.replace(in_cluster, here) for c in command]
    return {**container, "command": command}


def alias(client: MlflowClient, name: str) -> str | None:
    version = promotion.version_of(client, MODEL, name)
    return version.version if version else None


def test_drift_retrains_and_promotes_a_better_challenger_then_new_data_retrains_and_keeps_a_worse_one(
        plan, services, mlflow, loop, neo_tables, tmp_path):
    good, crippled = neo_tables
    s3 = services[2]
    client, api, receiver = MlflowClient(), loop["api"], loop["receiver"]
    [train] = plan.manifest("Job", "neo-train", NS)["spec"]["template"]["spec"]["containers"]
    # the champion: the workload's own Job, run once (as `pulumi up` does), on a table with shuffled labels
    run_container(train, mlflow, tmp_path, NEO_DATA=str(crippled))
    assert alias(client, "champion") == "1"

    # the champion is served; the requests it answers drift; the plan's drift job, run as its pod runs
    # it, scores what the server wrote against the champion's reference and pushes
    [drift_job] = plan.manifest("CronJob", "drift-neo", "mlops-platform")["spec"]["jobTemplate"]["spec"][
        "template"]["spec"]["containers"]
    with served_champion(plan, mlflow, s3) as served:
        send_drifted(served, good)
        said = run_container(local(drift_job, (IN_CLUSTER_PUSHGATEWAY, loop["pushgateway"])), mlflow, tmp_path,
                             MLFLOW_S3_ENDPOINT_URL=s3).stdout
        assert f"NEOs@champion (version 1): {DRIFTED_REQUESTS * ROWS} rows in the window" in said, said
        wait_until(lambda: api.of(MODEL), "ModelDrift → Alertmanager → receiver → a Job for NEOs", seconds=60)
        [job] = api.of(MODEL)
        assert job["metadata"]["labels"]["mlops-stack/retrain-trigger"] == "drift"
        assert counter(receiver, MODEL, "drift", "started") == 1
        # the drift is dealt with: its series leave (the alert resolves), so no later notification starts another
        delete_from_gateway(loop["pushgateway"], job="model-drift", grouping_key={"model": MODEL})

        # the Job as its pod runs it, on the new (good) table: the gate promotes the better challenger
        said = run_job(job, mlflow, tmp_path, NEO_DATA=str(good), PUSHGATEWAY_URL=loop["pushgateway"])
        assert alias(client, "champion") == "2" and promotion.history(client, MODEL)[-1]["version"] == "1"
        assert last_gate(loop["pushgateway"], MODEL) == {"trigger": "drift", "outcome": "promoted", "version": "2"}
        version = client.get_model_version(MODEL, "2")
        run = client.get_run(version.run_id).data.tags
        assert (run["trigger"], run["retrain.job"], run["retrain.gate"]) == ("drift", job["metadata"]["name"],
                                                                             "promoted")
        assert version.tags["trigger"] == "drift" and version.tags["retrain.gate"] == "promoted"
        assert "PROMOTE" in run["retrain.gate.reason"] and "PROMOTE" in said
        # the running server follows the alias: the retrained model answers, with no restart
        row = neo_data.preprocess(pd.read_csv(good)).X.head(1)
        wait_until(lambda: infer(served, row)["model_version"] == "2", "the served champion moves to version 2",
                   seconds=60)
    # the step again (a retried pod): nothing moves, the recorded outcome stays
    assert retrained.gate("neo", job["metadata"]["name"], "drift") == "promoted"
    assert alias(client, "champion") == "2" and client.get_model_version(MODEL, "2").tags == version.tags
    api.complete(MODEL)

    # neo's new-data check, as its CronJob runs it: the champion's table again → nothing to do
    [check] = plan.manifest("CronJob", "neo-retrain-newdata", NS)["spec"]["jobTemplate"]["spec"]["template"][
        "spec"]["containers"]
    check = local(check, (IN_CLUSTER_URL, receiver))
    assert "no new data" in run_container(check, mlflow, tmp_path, NEO_DATA=str(good)).stdout
    assert len(api.of(MODEL)) == 1

    # a new version of the file (here: one with shuffled labels) → a newData Job → its worse model is kept out
    run_container(check, mlflow, tmp_path, NEO_DATA=str(crippled))
    wait_until(lambda: len(api.of(MODEL)) == 2, "the newData Job")
    second = api.of(MODEL)[1]
    assert second["metadata"]["labels"]["mlops-stack/retrain-trigger"] == "newData"
    run_job(second, mlflow, tmp_path, NEO_DATA=str(crippled), PUSHGATEWAY_URL=loop["pushgateway"])
    assert (alias(client, "champion"), alias(client, "challenger")) == ("2", "3")
    assert last_gate(loop["pushgateway"], MODEL) == {"trigger": "newData", "outcome": "kept", "version": "3"}
    third = client.get_model_version(MODEL, "3")
    tags = client.get_run(third.run_id).data.tags
    assert (tags["trigger"], tags["retrain.gate"], third.tags["retrain.gate"]) == ("newData", "kept", "kept")
    assert "not promoted" in tags["retrain.gate.reason"]


@pytest.fixture(scope="module")
def energy_tables(services) -> tuple[str, str, pd.DataFrame, pd.Timestamp]:
    """Five weeks of 4 users' readings in `energy`, and the same with each user's hours shuffled in
    `energy_crippled` (a model trained there learns no daily shape); the readings after `cut` are
    what arrives day by day."""
    db = services[0]
    url = f"postgresql://{db.user}:{db.password}@{db.host}:{db.port}/energy"
    generated = synthetic.generate(n_users=4, days=40, start="2024-03-01", seed=3)
    cut = pd.Timestamp("2024-04-06")
    history = generated.consumption[generated.consumption["timestamp"] < cut]
    rng = np.random.default_rng(0)
    shuffled = history.assign(kwh=history.groupby("user_id")["kwh"].transform(lambda s: rng.permutation(s.to_numpy())))
    for target, frame in ((url, history), (f"{url}_crippled", shuffled)):
        with store.connect(target) as conn:
            store.ensure_tables(conn)
            store.write_readings(conn, frame)
            store.write_weather(conn, generated.weather)
    return url, f"{url}_crippled", generated.consumption, cut


def test_a_mape_drop_retrains_energy_and_its_shadow_gate_promotes_it_once_it_has_the_days(
        plan, mlflow, loop, energy_tables, tmp_path):
    url, crippled, readings, cut = energy_tables
    client, api, model = MlflowClient(), loop["api"], "energy-forecast"
    [train] = plan.manifest("Job", "energy-train", NS)["spec"]["template"]["spec"]["containers"]
    run_container(train, mlflow, tmp_path, DATABASE_URL=crippled)
    champion = promotion.version_of(client, model, "champion").version

    # the monitor's gauge: yesterday's MAPE of the champion past the 0.25 default threshold
    registry = CollectorRegistry()
    Gauge("model_quality_mape", "MAPE (fraction)", ["model", "alias"], registry=registry).labels(
        model, "champion").set(0.4)
    push_to_gateway(loop["pushgateway"], job="energy-monitor", registry=registry, grouping_key={"model": model})
    wait_until(lambda: api.of(model), "ModelQualityDegraded → Alertmanager → receiver → a Job for energy", seconds=60)
    [job] = api.of(model)
    assert job["metadata"]["labels"]["mlops-stack/retrain-trigger"] == "qualityDrop"

    # the Job on the good readings: a challenger, but no shadow day yet, so the gate keeps the champion
    run_job(job, mlflow, tmp_path, DATABASE_URL=url, PUSHGATEWAY_URL=loop["pushgateway"])
    new = promotion.version_of(client, model, "challenger").version
    assert last_gate(loop["pushgateway"], model) == {"trigger": "qualityDrop", "outcome": "kept", "version": new}
    assert promotion.version_of(client, model, "champion").version == champion != new
    waiting = client.get_model_version(model, new).tags
    assert (waiting["trigger"], waiting["retrain.gate"]) == ("qualityDrop", "kept")
    assert "0 of 2 days" in waiting["retrain.gate.reason"]

    # two days of energy-prod / energy-pre forecasts and their actual readings, then the daily CronJob
    test_pipeline_hooks._shadow_days(url, readings, [cut, cut + pd.Timedelta(days=1)])
    [gate] = plan.manifest("CronJob", "energy-retrain-promote", NS)["spec"]["jobTemplate"]["spec"]["template"][
        "spec"]["containers"]
    assert [e["value"] for e in gate["env"] if e["name"] == "PUSHGATEWAY_URL"] == [IN_CLUSTER_PUSHGATEWAY]
    assert {"name": "PROMOTE_DAYS", "value": "2"} in gate["env"]  # retrain.promoteDays
    said = run_container(gate, mlflow, tmp_path, DATABASE_URL=url, PUSHGATEWAY_URL=loop["pushgateway"]).stdout
    assert promotion.version_of(client, model, "champion").version == new, said
    assert last_gate(loop["pushgateway"], model) == {"trigger": "qualityDrop", "outcome": "promoted", "version": new}
    done = client.get_model_version(model, new).tags
    assert (done["trigger"], done["retrain.gate"]) == ("qualityDrop", "promoted")
    assert "mean daily MAPE over 2 days" in done["retrain.gate.reason"]
    # the next day's CronJob: the promoted version keeps `challenger` too, but there is nothing left to gate
    assert retrained.gate("energy", None, None) is None
    assert client.get_model_version(model, new).tags == done
