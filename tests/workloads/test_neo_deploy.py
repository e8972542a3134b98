"""The NEO component under Pulumi mocks with the real pulumi-kubernetes SDK: one training Job that
registers the model, Secret-only credentials, hardening, and schema validity of the manifest."""

from __future__ import annotations

import pulumi
import pytest
from pulumi.runtime import mocks, settings
from pulumi.runtime.sync_await import _sync_await

from mlops.plan import Plan, _Mocks, _Recorder
from mlops.validate import validate_plan
from workloads.common.deploy import TRACKING_KEYS, WorkloadContext
from workloads.neo.deploy import NeoArgs, NeoWorkload, Resources

KUBERNETES_VERSION = "1.31"
IMAGE = "registry.example.com/mlops/neo:3f2a9c1"
DATA_URL = "https://data.example.com/neo/nasa.csv"
CONTEXT = WorkloadContext(namespace="neo", image=IMAGE, tracking_uri="http://mlflow.mlflow.svc:5000",
                          tracking_secret="neo-mlflow", service_account="neo")


def plan_of(args: NeoArgs) -> Plan:
    """Declare the component alone under the same mocks and recorder `mlops plan` uses."""
    plan, plan_mocks = Plan(stack="neo-test"), _Mocks()
    settings.ROOT.set(None)
    pulumi.runtime.set_all_config({}, [])
    pulumi.runtime.set_mocks(plan_mocks, project="mlops-stack", stack="neo-test", preview=False,
                             monitor=_Recorder(plan_mocks, plan, reveal_secrets=False))
    _sync_await(mocks.run_pulumi_func(lambda: NeoWorkload("neo", args)))
    return plan


@pytest.fixture(scope="module")
def plan() -> Plan:
    return plan_of(NeoArgs(context=CONTEXT, data_url=DATA_URL))


def _container(plan: Plan) -> dict:
    return plan.manifest("Job", "neo-train")["spec"]["template"]["spec"]["containers"][0]


def test_declares_one_training_job_that_registers_the_model(plan):
    kinds = [(o["apiVersion"], o["kind"], o["metadata"]["name"], o["metadata"]["namespace"])
             for o in plan.kubernetes_objects]
    assert kinds == [("batch/v1", "Job", "neo-train", "neo")]
    assert plan.of_type("mlops:workloads:Neo")
    container = _container(plan)
    assert container["command"] == ["python", "-m", "workloads.neo.train", "--register"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NEO_DATA"] == DATA_URL and env["MLFLOW_TRACKING_URI"] == "http://mlflow.mlflow.svc:5000"


def test_credentials_come_only_from_the_tracking_secret(plan):
    env = _container(plan)["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert refs == {key: {"name": "neo-mlflow", "key": key} for key in TRACKING_KEYS}
    assert not any("PASSWORD" in e["name"] or "USERNAME" in e["name"] for e in env if "value" in e)


def test_pod_is_non_root_hardened_sized_and_pinned(plan):
    pod = plan.manifest("Job", "neo-train")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "neo"
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}


def test_settings_reach_the_manifest():
    plan = plan_of(NeoArgs(context=CONTEXT, data_url="http://seaweedfs.mlops-platform.svc:8333/datasets/neo/nasa.csv",
                           train_resources=Resources("1", "2Gi", "3Gi"), deadline_seconds=600))
    job = plan.manifest("Job", "neo-train")
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert _container(plan)["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}


def test_rendered_manifest_passes_the_kubernetes_schema(plan):
    report = validate_plan(plan, KUBERNETES_VERSION)
    assert report.ok, report.render()
    assert report.checked == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": "registry.example.com/mlops/neo:latest"}, "pin it by tag"),
        ({"image": "registry.example.com/mlops/neo"}, "pin it by tag"),
        ({"data_url": "nasa.csv"}, "give an http"),
        ({"data_url": "s3://datasets/nasa.csv"}, "give an http"),
    ],
)
def test_rejects_unpinned_images_and_a_local_data_path(change, message):
    context = WorkloadContext(**{**CONTEXT.__dict__, **{k: v for k, v in change.items() if k == "image"}})
    with pytest.raises(ValueError, match=message):
        plan_of(NeoArgs(context=context, data_url=change.get("data_url", DATA_URL)))
