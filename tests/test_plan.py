"""Every shipped stack plans offline, validates against the Kubernetes schema, and is wired right."""

from __future__ import annotations

import gc
import json
import re

import pulumi
import pytest
import yaml

from infra.platforms import cluster_facts
from infra.settings import parse_stack_config, raw_from_pulumi_config
from mlops.paths import stack_names
from mlops.plan import SAFE_DUMPER, SECRET, Plan, manifest_yaml, run_program, stack_config, write_plan
from mlops.validate import validate_plan

STACKS = stack_names()
IN_CLUSTER = [s for s in STACKS if s in ("dev", "onprem")]


def config_of(stack: str):
    return parse_stack_config(*raw_from_pulumi_config(*stack_config(stack)))


def env_of(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_plans_and_validates(stack, plan_of):
    plan = plan_of(stack)
    config = config_of(stack)
    report = validate_plan(plan, config.kubernetes.version, cluster_facts(config))
    assert report.ok, report.render()
    assert report.checked == len(plan.kubernetes_objects) > 0


def test_plan_files_have_the_documented_shape(plan_of, tmp_path):
    summary = write_plan(plan_of("dev"), "minikube", tmp_path)
    resources = json.loads((tmp_path / "resources.json").read_text())
    assert {"type", "name", "parent", "provider", "depends_on", "inputs"} <= set(resources[0])
    assert set(summary) >= {"stack", "platform", "resources", "kubernetes_objects", "requests"}
    assert summary["resources"] == len(resources)
    assert set(summary["requests"]) == {"cpu_m", "memory_mib"}
    assert (tmp_path / "manifests" / "mlflow" / "Deployment-mlflow.yaml").is_file()
    assert (tmp_path / "manifests" / "_cluster" / "Namespace-mlflow.yaml").is_file()
    assert len(list((tmp_path / "manifests").rglob("*.yaml"))) == summary["kubernetes_objects"]


def test_plan_is_deterministic(tmp_path):
    first = write_plan(run_program("dev"), "minikube", tmp_path / "a")
    second = write_plan(run_program("dev"), "minikube", tmp_path / "b")
    assert first == second
    assert (tmp_path / "a" / "resources.json").read_text() == (tmp_path / "b" / "resources.json").read_text()


def _ordered(value):
    if isinstance(value, dict):
        return {k: _ordered(value[k]) for k in sorted(value)}
    return [_ordered(v) for v in value] if isinstance(value, list) else value


@pytest.mark.parametrize("stack", ["dev", "onprem"])
def test_manifests_are_written_as_pyyaml_safe_dumper_writes_them(stack, plan_of):
    """The plan's own YAML representer (mlops.plan._ManifestDumper) changes nothing in the files:
    they are what PyYAML's SafeDumper, on libyaml's emitter, writes of the sorted manifest."""
    for obj in plan_of(stack).kubernetes_objects:
        head = {k: obj[k] for k in ("apiVersion", "kind", "metadata") if k in obj}
        rest = {k: obj[k] for k in obj if k not in head}
        ordered = {**_ordered(head), **_ordered(rest)}
        assert manifest_yaml(obj) == yaml.dump(ordered, Dumper=SAFE_DUMPER, sort_keys=False)
        assert yaml.safe_load(manifest_yaml(obj)) == obj


def test_run_program_leaves_garbage_collection_as_it_found_it():
    """The runner collects no garbage while the program runs (mlops.plan._no_collection), and gives
    collection back, also when the program fails."""
    bad = ({"mlops-stack:platform": "minikube", "mlops-stack:environment": "dev",
            "mlops-stack:mlflow": json.dumps({"replicas": -1})}, [])
    assert gc.isenabled()
    with pytest.raises(pulumi.RunError):
        run_program("bad", bad, plan=Plan(stack="bad"))
    assert gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(pulumi.RunError):
            run_program("bad", bad, plan=Plan(stack="bad"))
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("stack", IN_CLUSTER)
def test_mlflow_uses_the_platform_database_and_artifact_bucket(stack):
    plan = run_program(stack, reveal_secrets=True)
    config = config_of(stack)
    platform_ns, mlflow_ns = config.namespaces.platform, config.namespaces.mlflow
    secret = plan.manifest("Secret", "mlflow-server", mlflow_ns)["stringData"]
    uri = secret["backend-store-uri"]
    assert re.fullmatch(
        rf"postgresql\+psycopg2://mlflow:[A-Za-z0-9]+@postgres-rw\.{platform_ns}\.svc\.cluster\.local:5432/mlruns\?sslmode=require",
        uri,
    ), uri
    assert f"@postgres-rw.{platform_ns}.svc.cluster.local:5432/mlflow_auth" in secret["auth.ini"]
    # the auth database is created next to the tracking database
    cluster = plan.manifest("Cluster", "postgres", platform_ns)["spec"]
    databases = plan.manifest("Job", "postgres-databases", platform_ns)["spec"]["template"]["spec"]["containers"][0]
    assert env_of(databases)["DATABASES"]["value"] == "mlflow_auth"
    assert cluster["bootstrap"]["initdb"]["database"] == "mlruns"

    server = plan.manifest("Deployment", "mlflow", mlflow_ns)["spec"]["template"]["spec"]["containers"][0]
    assert server["args"] == ["--artifacts-destination", f"s3://{config.object_store.buckets.artifacts}"]
    assert "--serve-artifacts" in server["command"] and "mlops-basic-auth" in server["command"]
    env = env_of(server)
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == f"http://seaweedfs.{platform_ns}.svc.cluster.local:8333"
    # the key pair MLflow uses is the one the object store grants on the artifact bucket
    store_config = json.loads(plan.manifest("Secret", "seaweedfs-s3-config", platform_ns)["stringData"]["config.json"])
    mlflow_identity = next(i for i in store_config["identities"] if i["name"] == "mlflow")
    assert mlflow_identity["credentials"][0]["accessKey"] == secret["aws-access-key-id"]
    assert f"Write:{config.object_store.buckets.artifacts}" in mlflow_identity["actions"]
    assert not any(a.endswith(f":{config.object_store.buckets.backups}") for a in mlflow_identity["actions"])


@pytest.mark.parametrize("stack", IN_CLUSTER)
def test_credentials_are_secrets_and_never_plain_env(stack, plan_of):
    plan = plan_of(stack)
    for resource in plan.of_type("kubernetes:core/v1:Secret"):
        values = resource["inputs"].get("stringData", {})
        assert values and all(v == SECRET for v in values.values()), resource["name"]
    sensitive = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|STORE_URI")
    for obj in plan.kubernetes_objects:
        text = json.dumps(obj)
        assert "postgresql+psycopg2://" not in text, obj["metadata"]["name"]
        for match in re.finditer(r'\{"name": "([A-Z_]+)", "value": ', text):
            assert not sensitive.search(match.group(1)), f"{obj['kind']}/{obj['metadata']['name']}: {match.group(1)}"
    assert plan.outputs["mlflowAdminPassword"] == SECRET


def _stateful(plan):
    """Data and the credentials data is locked with: losing either loses the data."""
    return [
        r for r in plan.resources
        if r["type"].endswith(":StatefulSet") or r["name"] in ("database-cluster",) or r["name"] in ("database-password", "database-credentials",
                                                               "mlflow-admin-password")
        or (r["name"].startswith("objectstore-") and r["type"].startswith("random:"))
    ]


def test_stateful_resources_are_protected_outside_dev(plan_of):
    assert not any(r["protect"] for r in plan_of("dev").resources)
    stateful = _stateful(plan_of("onprem"))
    assert len(stateful) >= 7
    assert [r["name"] for r in stateful if not r["protect"]] == []


def test_onprem_has_production_settings(plan_of):
    plan = plan_of("onprem")
    assert plan.manifest("Deployment", "mlflow")["spec"]["replicas"] == 2
    assert plan.manifest("PodDisruptionBudget", "mlflow")["spec"]["minAvailable"] == 1
    scheduled = plan.manifest("ScheduledBackup", "postgres-base")["spec"]
    assert scheduled["schedule"] == "0 30 0 * * *" and scheduled["cluster"] == {"name": "postgres"}
    cluster = plan.manifest("Cluster", "postgres")["spec"]
    assert cluster["instances"] == 3 and cluster["enablePDB"] is True
    assert cluster["backup"]["barmanObjectStore"]["destinationPath"] == "s3://backups/postgres"


def test_dev_has_no_backup_and_one_replica(plan_of):
    plan = plan_of("dev")
    assert plan.manifest("Deployment", "mlflow")["spec"]["replicas"] == 1
    assert not [o for o in plan.kubernetes_objects if o["kind"] in ("CronJob", "ScheduledBackup")]
    assert plan.manifest("Cluster", "postgres")["spec"]["instances"] == 1


@pytest.mark.parametrize("stack", IN_CLUSTER)
def test_pods_are_non_root_with_requests_and_limits(stack, plan_of):
    for obj in plan_of(stack).kubernetes_objects:
        if obj["kind"] not in ("Deployment", "StatefulSet", "Job", "CronJob"):
            continue
        spec = obj["spec"]
        pod = (spec["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else spec)["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
        for container in pod["containers"] + pod.get("initContainers", []):
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["requests"]["memory"], container["name"]
            assert resources["limits"]["memory"], container["name"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert ":" in container["image"] and not container["image"].endswith(":latest")


def test_mlflow_has_probes_and_a_port_forward_output(plan_of):
    plan = plan_of("dev")
    server = plan.manifest("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"
    assert server["livenessProbe"]["httpGet"]["path"] == "/health"
    assert plan.manifest("Service", "mlflow")["spec"]["type"] == "ClusterIP"
    assert plan.outputs["mlflowPortForward"] == "kubectl -n mlflow port-forward svc/mlflow 5000:5000"
    assert plan.outputs["mlflowInClusterUrl"] == "http://mlflow.mlflow.svc.cluster.local:5000"
    assert plan.outputs["mlflowUrl"] == "http://mlflow.localtest.me:8080"  # the gateway's port-forward


def test_dev_stack_fits_a_default_minikube(plan_of):
    requests = plan_of("dev").summary("minikube")["requests"]
    assert requests["cpu_m"] <= 2000 and requests["memory_mib"] <= 4096, requests
