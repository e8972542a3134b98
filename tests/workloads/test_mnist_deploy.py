"""The MNIST component under Pulumi mocks with the real pulumi-kubernetes SDK: one training Job on
the real data set that registers the model, Secret-only credentials, hardening, schema validity."""

from __future__ import annotations

import pulumi
import pytest
from pulumi.runtime import mocks, settings
from pulumi.runtime.sync_await import _sync_await

from mlops.plan import Plan, _Mocks, _Recorder
from mlops.validate import validate_plan
from workloads.common.deploy import TRACKING_KEYS, WorkloadContext
from workloads.mnist.deploy import MnistArgs, MnistWorkload, Resources

KUBERNETES_VERSION = "1.31"
IMAGE = "registry.example.com/mlops/mnist:3f2a9c1"
CONTEXT = WorkloadContext(namespace="mnist", image=IMAGE, tracking_uri="http://mlflow.mlflow.svc:5000",
                          tracking_secret="mnist-mlflow")


def plan_of(args: MnistArgs) -> Plan:
    """Declare the component alone under the same mocks and recorder `mlops plan` uses."""
    plan, plan_mocks = Plan(stack="mnist-test"), _Mocks()
    settings.ROOT.set(None)
    pulumi.runtime.set_all_config({}, [])
    pulumi.runtime.set_mocks(plan_mocks, project="mlops-stack", stack="mnist-test", preview=False,
                             monitor=_Recorder(plan_mocks, plan, reveal_secrets=False))
    _sync_await(mocks.run_pulumi_func(lambda: MnistWorkload("mnist", args)))
    return plan


@pytest.fixture(scope="module")
def plan() -> Plan:
    return plan_of(MnistArgs(context=CONTEXT))


def _pod(plan: Plan) -> dict:
    return plan.manifest("Job", "mnist-train")["spec"]["template"]["spec"]


def test_declares_one_job_that_trains_on_real_mnist_and_registers(plan):
    kinds = [(o["apiVersion"], o["kind"], o["metadata"]["name"], o["metadata"]["namespace"])
             for o in plan.kubernetes_objects]
    assert kinds == [("batch/v1", "Job", "mnist-train", "mnist")]
    assert plan.of_type("mlops:workloads:Mnist")
    command = _pod(plan)["containers"][0]["command"]
    assert command[:3] == ["python", "-m", "workloads.mnist.train"]
    assert command[3:5] == ["--source", "mnist"] and command[-1] == "--register"


def test_credentials_come_only_from_the_tracking_secret(plan):
    env = _pod(plan)["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert refs == {key: {"name": "mnist-mlflow", "key": key} for key in TRACKING_KEYS}
    assert not any("PASSWORD" in e["name"] or "USERNAME" in e["name"] for e in env if "value" in e)


def test_pod_is_non_root_hardened_sized_and_pinned(plan):
    pod = _pod(plan)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "3Gi"}}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp", "/data"}  # the only writable paths: scratch and the downloaded data


def test_settings_reach_the_manifest():
    plan = plan_of(MnistArgs(context=CONTEXT, epochs=3, train_resources=Resources("2", "4Gi", "6Gi")))
    container = _pod(plan)["containers"][0]
    assert container["command"][container["command"].index("--epochs") + 1] == "3"
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}


def test_rendered_manifest_passes_the_kubernetes_schema(plan):
    report = validate_plan(plan, KUBERNETES_VERSION)
    assert report.ok, report.render()
    assert report.checked == 1


@pytest.mark.parametrize(
    ("image", "epochs", "message"),
    [("registry.example.com/mlops/mnist:latest", 10, "pin it by tag"),
     ("registry.example.com/mlops/mnist", 10, "pin it by tag"),
     (IMAGE, 0, "allowed 1..100")],
)
def test_rejects_unpinned_images_and_bad_epochs(image, epochs, message):
    context = WorkloadContext(**{**CONTEXT.__dict__, "image": image})
    with pytest.raises(ValueError, match=message):
        plan_of(MnistArgs(context=context, epochs=epochs))
