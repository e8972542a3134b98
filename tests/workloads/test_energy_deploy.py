"""The energy component under Pulumi mocks with the real pulumi-kubernetes SDK: the objects it
declares, their schedules and time zone, Secret-only credentials, hardening, and schema validity
of the rendered manifests for the platform's Kubernetes version."""

from __future__ import annotations

import pulumi
import pytest
from pulumi.runtime import mocks, settings
from pulumi.runtime.sync_await import _sync_await

from mlops.plan import Plan, _Mocks, _Recorder
from mlops.validate import validate_plan
from workloads.common.deploy import DATABASE_KEY, TRACKING_KEYS, WorkloadContext
from workloads.energy.deploy import EnergyArgs, EnergyWorkload, Resources

KUBERNETES_VERSION = "1.31"
IMAGE = "registry.example.com/mlops/energy:3f2a9c1"
CONTEXT = WorkloadContext(
    namespace="energy",
    image=IMAGE,
    tracking_uri="http://mlflow.mlflow.svc:5000",
    tracking_secret="energy-mlflow",
    database_secret="energy-database",
    service_account="energy",
    timezone="Europe/Madrid",
    pushgateway_url="http://pushgateway.monitoring.svc:9091",
)


def plan_of(args: EnergyArgs) -> Plan:
    """Declare the component alone under the same mocks and recorder `mlops plan` uses."""
    plan, plan_mocks = Plan(stack="energy-test"), _Mocks()
    settings.ROOT.set(None)
    pulumi.runtime.set_all_config({}, [])
    pulumi.runtime.set_mocks(plan_mocks, project="mlops-stack", stack="energy-test", preview=False,
                             monitor=_Recorder(plan_mocks, plan, reveal_secrets=False))
    _sync_await(mocks.run_pulumi_func(lambda: EnergyWorkload("energy", args)))
    return plan


@pytest.fixture(scope="module")
def plan() -> Plan:
    return plan_of(EnergyArgs(context=CONTEXT, demo_data=True))


def _pod(obj: dict) -> dict:
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    return spec["template"]["spec"]


def _command(obj: dict) -> list[str]:
    return _pod(obj)["containers"][0]["command"]


def test_declares_training_job_two_forecast_cronjobs_a_monitor_and_the_demo_ingest(plan):
    kinds = sorted((o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in plan.kubernetes_objects)
    assert kinds == [
        ("batch/v1", "CronJob", "energy-ingest"),
        ("batch/v1", "CronJob", "energy-monitor"),
        ("batch/v1", "CronJob", "energy-pre"),
        ("batch/v1", "CronJob", "energy-prod"),
        ("batch/v1", "Job", "energy-train"),
    ]
    assert all(o["metadata"]["namespace"] == "energy" for o in plan.kubernetes_objects)
    assert plan.of_type("mlops:workloads:Energy")


def test_prod_serves_champion_and_pre_shadows_with_challenger_daily_at_eleven_local_time(plan):
    prod, pre = plan.manifest("CronJob", "energy-prod"), plan.manifest("CronJob", "energy-pre")
    assert _command(prod)[-4:] == ["--alias", "champion", "--table", "energy_prod"]
    assert _command(pre)[-4:] == ["--alias", "challenger", "--table", "energy_pre"]
    for cron in (prod, pre, plan.manifest("CronJob", "energy-monitor")):
        assert cron["spec"]["timeZone"] == "Europe/Madrid"
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert prod["spec"]["schedule"] == pre["spec"]["schedule"] == "0 11 * * *"
    monitor = plan.manifest("CronJob", "energy-monitor")
    assert "workloads.energy.monitor" in _command(monitor)
    env = {e["name"]: e.get("value") for e in _pod(monitor)["containers"][0]["env"]}
    assert env["PUSHGATEWAY_URL"] == "http://pushgateway.monitoring.svc:9091"


def test_training_job_seeds_demo_data_then_trains_and_registers(plan):
    pod = _pod(plan.manifest("Job", "energy-train"))
    assert pod["initContainers"][0]["command"][3:] == ["--synthetic", "--users", "20", "--seed", "0", "--days", "120"]
    assert pod["containers"][0]["command"][-2:] == ["--from-database", "--register"]
    without_demo = plan_of(EnergyArgs(context=CONTEXT))
    assert "initContainers" not in _pod(without_demo.manifest("Job", "energy-train"))


def test_credentials_come_only_from_the_contexts_secrets(plan):
    for obj in plan.kubernetes_objects:
        pod = _pod(obj)
        for container in pod["containers"] + pod.get("initContainers", []):
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
            assert refs == {
                **{key: {"name": "energy-mlflow", "key": key} for key in TRACKING_KEYS},
                "DATABASE_URL": {"name": "energy-database", "key": DATABASE_KEY},
            }
            literal = {e["name"] for e in container["env"] if "value" in e}
            assert not any("PASSWORD" in n or "USERNAME" in n or "DATABASE" in n for n in literal)


def test_pods_are_non_root_hardened_sized_and_pinned(plan):
    for obj in plan.kubernetes_objects:
        pod = _pod(obj)
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "energy"
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["image"] == IMAGE
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert set(container["resources"]) == {"requests", "limits"}
            assert container["resources"]["limits"]["memory"]


def test_settings_reach_the_manifests():
    plan = plan_of(EnergyArgs(context=CONTEXT, schedule="30 6 * * *", latitude=36.72, longitude=-4.42,
                              batch_resources=Resources("100m", "256Mi", "384Mi")))
    prod = plan.manifest("CronJob", "energy-prod")
    assert prod["spec"]["schedule"] == "30 6 * * *"
    assert _command(prod)[-4:] == ["--latitude", "36.72", "--longitude", "-4.42"]
    assert _pod(prod)["containers"][0]["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"},
                                                        "limits": {"memory": "384Mi"}}


def test_rendered_manifests_pass_the_kubernetes_schema(plan):
    report = validate_plan(plan, KUBERNETES_VERSION)
    assert report.ok, report.render()
    assert report.checked == 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": "registry.example.com/mlops/energy:latest"}, "pin it by tag"),
        ({"image": "registry.example.com/mlops/energy"}, "pin it by tag"),
        ({"database_secret": None}, "database_secret is required"),
    ],
)
def test_rejects_unpinned_images_and_a_missing_database_secret(change, message):
    context = WorkloadContext(**{**CONTEXT.__dict__, **change})
    with pytest.raises(ValueError, match=message):
        plan_of(EnergyArgs(context=context))
