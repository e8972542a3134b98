"""The platform side of the workloads: with `workloads.energy.enabled`, a stack gets the workload
namespace, Secrets instead of literal credentials, a Pushgateway Prometheus scrapes with the pushed
labels, the workloads database, and network access to PostgreSQL — and the result validates.
neo and mnist alone get their training Jobs and the tracking Secret, nothing energy needs."""

from __future__ import annotations

import json

import pytest

from mlops.plan import Plan, run_program, stack_config
from mlops.validate import validate_plan

DIGEST = "sha256:" + "ab" * 32  # pre-built images must be pinned by digest where the cluster pulls them
ENERGY = {"energy": {"enabled": True, "image": {"repository": "ghcr.io/my-org/energy", "tag": "3f2c1ab",
                                                "digest": DIGEST}}}


NEO_AND_MNIST = {
    "neo": {"enabled": True, "image": {"repository": "ghcr.io/my-org/neo", "tag": "3f2c1ab", "digest": DIGEST},
            "dataUrl": "https://data.example.org/nasa.csv"},
    "mnist": {"enabled": True, "image": {"repository": "ghcr.io/my-org/mnist", "tag": "3f2c1ab", "digest": DIGEST},
              "epochs": 3},
}


def plan_with_energy(stack: str, workloads: dict = ENERGY) -> Plan:
    values, secret_keys = stack_config(stack)
    return run_program(stack, ({**values, "mlops-stack:workloads": json.dumps(workloads)}, secret_keys),
                       reveal_secrets=True)


@pytest.fixture(scope="module")
def dev() -> Plan:
    return plan_with_energy("dev")


def test_disabled_by_default(plan_of):
    plan = plan_of("dev")
    assert not [o for o in plan.kubernetes_objects if o["metadata"].get("namespace") == "ml-workloads"]
    assert not any(o["kind"] == "Deployment" and o["metadata"]["name"] == "pushgateway" for o in plan.kubernetes_objects)


def test_energy_objects_land_in_the_workload_namespace(dev):
    namespace = dev.manifest("Namespace", "ml-workloads")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    crons = {o["metadata"]["name"]: o for o in dev.kubernetes_objects if o["kind"] == "CronJob"}
    assert {"energy-prod", "energy-pre", "energy-monitor"} <= set(crons)
    assert all(c["spec"]["timeZone"] == "Europe/Madrid" for n, c in crons.items() if n.startswith("energy"))
    assert crons["energy-prod"]["spec"]["schedule"] == "0 11 * * *"
    job = dev.manifest("Job", "energy-train", "ml-workloads")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/my-org/energy:3f2c1ab@{DIGEST}"


def test_credentials_come_only_from_secrets(dev):
    secrets = {o["metadata"]["name"]: o["stringData"] for o in dev.kubernetes_objects
               if o["kind"] == "Secret" and o["metadata"]["namespace"] == "ml-workloads"}
    assert set(secrets["mlflow-client"]) == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    url = secrets["workloads-database"]["DATABASE_URL"]
    assert url.startswith("postgresql://mlflow:") and url.endswith("/workloads?sslmode=require")
    energy = [o for o in dev.kubernetes_objects if o["kind"] in ("Job", "CronJob")
              and o["metadata"]["namespace"] == "ml-workloads"]
    assert len(energy) == 5  # train, prod, pre, monitor and (demoData) ingest
    for obj in energy:
        spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
        for container in spec["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container["env"]}
            for name in ("DATABASE_URL", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"] in secrets


def test_workloads_database_exists_and_postgres_admits_the_namespace(dev):
    job = dev.manifest("Job", "postgres-databases", "mlops-platform")
    env = {e["name"]: e.get("value") for c in job["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
    assert "workloads" in env["DATABASES"].split()
    policy = dev.manifest("NetworkPolicy", "postgres-ingress", "mlops-platform")
    sources = [s.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
               for rule in policy["spec"]["ingress"] for s in rule["from"]]
    assert "ml-workloads" in sources


def test_pushgateway_is_scraped_with_the_pushed_labels_and_only_workloads_push(dev):
    monitor = dev.manifest("ServiceMonitor", "pushgateway", "monitoring")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    policy = dev.manifest("NetworkPolicy", "pushgateway-ingress", "monitoring")
    sources = {s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
               for s in policy["spec"]["ingress"][0]["from"]}
    assert sources == {"monitoring", "ml-workloads"}
    monitor_cron = dev.manifest("CronJob", "energy-monitor", "ml-workloads")
    assert "http://pushgateway.monitoring.svc.cluster.local:9091" in json.dumps(monitor_cron)


@pytest.mark.parametrize("stack", ["dev", "eks"])
def test_stack_with_energy_validates(stack, dev):
    plan = dev if stack == "dev" else plan_with_energy(stack)
    report = validate_plan(plan, "1.34")
    assert report.ok, report.render()


def test_neo_and_mnist_alone_get_training_jobs_and_nothing_energy_needs():
    plan = plan_with_energy("dev", NEO_AND_MNIST)
    jobs = {o["metadata"]["name"]: o for o in plan.kubernetes_objects
            if o["kind"] == "Job" and o["metadata"]["namespace"] == "ml-workloads"}
    assert set(jobs) == {"neo-train", "mnist-train"}
    [neo] = jobs["neo-train"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in neo["env"]}
    assert env["NEO_DATA"]["value"] == "https://data.example.org/nasa.csv"
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-client"
    [mnist] = jobs["mnist-train"]["spec"]["template"]["spec"]["containers"]
    assert mnist["image"] == f"ghcr.io/my-org/mnist:3f2c1ab@{DIGEST}" and mnist["command"][-3:] == ["--epochs", "3", "--register"]
    assert not any(o["kind"] == "Deployment" and o["metadata"]["name"] == "pushgateway" for o in plan.kubernetes_objects)
    databases = plan.manifest("Job", "postgres-databases", "mlops-platform")
    assert "workloads" not in json.dumps(databases["spec"]["template"]["spec"]["containers"])
    report = validate_plan(plan, "1.34")
    assert report.ok, report.render()

