"""Plan integrity (mlops/integrity.py): what a real cluster would refuse or never finish, on every
shipped stack and on the full-options stacks, and each rule's bad fixture that it rejects."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from infra.platforms import cluster_facts
from infra.settings import parse_stack_config, raw_from_pulumi_config
from mlops.integrity import check_integrity
from mlops.paths import stack_names
from mlops.plan import Plan, run_program, stack_config
from modules.platform.contract import ClusterFacts

TEST_STACKS = Path(__file__).parent / "stacks"
FULL_STACKS = ["full", "full-dev", "full-gke", "full-eks"]
MINIKUBE = ClusterFacts(load_balancers=False, storage_classes=frozenset({"standard"}),
                        local_images=frozenset({"mlops-stack/mlflow-server", "mlops-stack/mlserver"}))


def _config(stack: str, stacks_dir: Path | None = None):
    return parse_stack_config(*raw_from_pulumi_config(*stack_config(stack, stacks_dir)))


@pytest.fixture(scope="module")
def full_plans() -> dict[str, Plan]:
    return {s: run_program(s, stack_config(s, TEST_STACKS)) for s in FULL_STACKS}


@pytest.mark.parametrize("stack", stack_names())
def test_shipped_stacks_apply_cleanly(stack, plan_of):
    assert check_integrity(plan_of(stack), cluster_facts(_config(stack))) == []


@pytest.mark.parametrize("stack", FULL_STACKS)
def test_full_option_stacks_apply_cleanly(stack, full_plans):
    assert check_integrity(full_plans[stack], cluster_facts(_config(stack, TEST_STACKS))) == []


def _dev(plan_of) -> Plan:
    return copy.deepcopy(plan_of("dev"))


def _drop(plan: Plan, kind: str, name: str) -> Plan:
    plan.resources = [r for r in plan.resources
                      if not (r.get("manifest") or {}).get("kind") == kind
                      or r["manifest"]["metadata"]["name"] != name]
    return plan


def _object(plan: Plan, kind: str, name: str) -> dict:
    return next(r for r in plan.resources if (r.get("manifest") or {}).get("kind") == kind
                and r["manifest"]["metadata"]["name"] == name)


def _release(plan: Plan, chart: str) -> dict:
    return next(r for r in plan.of_type("kubernetes:helm.sh/v3:Release") if r["inputs"]["chart"] == chart)


def test_a_release_into_a_namespace_nobody_creates_is_an_error(plan_of):
    """The old Seldon defect: the operator's release targeted seldon-system, which nothing made."""
    errors = check_integrity(_drop(_dev(plan_of), "Namespace", "seldon-system"), MINIKUBE)
    assert any("Helm release seldon-core" in e and "'seldon-system' exists nowhere" in e for e in errors), errors


def test_a_release_told_to_create_its_namespace_is_accepted(plan_of):
    plan = _drop(_dev(plan_of), "Namespace", "seldon-system")
    _release(plan, "seldon-core-operator")["inputs"]["createNamespace"] = True
    assert not [e for e in check_integrity(plan, MINIKUBE) if "seldon" in e]


def test_an_object_in_a_missing_namespace_is_an_error(plan_of):
    errors = check_integrity(_drop(_dev(plan_of), "Namespace", "mlflow"), MINIKUBE)
    assert any(e.startswith("Deployment mlflow/mlflow: metadata.namespace 'mlflow'") for e in errors), errors


def test_a_custom_resource_that_does_not_wait_for_its_crd_is_an_error(full_plans):
    """Before kube.after(), a component's depends_on never reached the SeldonDeployment inside it."""
    plan = copy.deepcopy(full_plans["full-dev"])
    operator = _release(plan, "seldon-core-operator")["urn"]
    model = _object(plan, "SeldonDeployment", "neo")
    model["depends_on"] = [u for u in model["depends_on"] if u != operator]
    errors = check_integrity(plan, MINIKUBE)
    assert any(e.startswith("SeldonDeployment serving/neo: does not depend on") for e in errors), errors


def test_a_custom_resource_nothing_installs_is_an_error(plan_of):
    plan = _dev(plan_of)
    _object(plan, "VirtualService", "mlflow")["manifest"]["apiVersion"] = "gateway.networking.k8s.io/v1"
    errors = check_integrity(plan, MINIKUBE)
    assert any("no release or CRD in the plan installs gateway.networking.k8s.io" in e for e in errors), errors


def test_a_missing_secret_and_a_missing_key_are_errors(plan_of):
    plan = _drop(_dev(plan_of), "Secret", "postgres-credentials")
    errors = check_integrity(plan, MINIKUBE)
    assert any("names Secret mlops-platform/postgres-credentials" in e for e in errors), errors

    plan = _dev(plan_of)
    _object(plan, "Secret", "mlflow-server")["manifest"]["stringData"].pop("admin-password")
    errors = check_integrity(plan, MINIKUBE)
    assert any("reads key 'admin-password' of Secret mlflow/mlflow-server" in e for e in errors), errors


def test_a_missing_service_account_is_an_error(plan_of):
    errors = check_integrity(_drop(_dev(plan_of), "ServiceAccount", "mlflow"), MINIKUBE)
    assert any("serviceAccountName names ServiceAccount mlflow/mlflow" in e for e in errors), errors


def test_an_image_the_cluster_cannot_pull_is_an_error(plan_of):
    """The old onprem defect: images that exist only inside a minikube."""
    elsewhere = ClusterFacts(load_balancers=True, storage_classes=frozenset({"standard"}))
    errors = check_integrity(_dev(plan_of), elsewhere)
    assert any("'mlops-stack/mlflow-server:" in e and "exists only where `make up` loads it" in e
               for e in errors), errors


def test_an_unpinned_image_is_an_error(plan_of):
    plan = _dev(plan_of)
    pod = _object(plan, "Deployment", "mlflow")["manifest"]["spec"]["template"]["spec"]
    pod["containers"][0]["image"] = "ghcr.io/mlflow/mlflow:latest"
    errors = check_integrity(plan, MINIKUBE)
    assert any("'ghcr.io/mlflow/mlflow:latest' is not pinned" in e for e in errors), errors


def test_an_awaited_load_balancer_without_a_provisioner_is_an_error(plan_of):
    """The old minikube defect: Helm waits for a LoadBalancer address nobody hands out."""
    plan = _dev(plan_of)
    _release(plan, "gateway")["inputs"]["values"]["service"]["type"] = "LoadBalancer"
    _release(plan, "gateway")["inputs"]["skipAwait"] = False
    errors = check_integrity(plan, MINIKUBE)
    assert any("values.service.type is LoadBalancer in an awaited release" in e for e in errors), errors
    _release(plan, "gateway")["inputs"].update(skipAwait=True, atomic=True)  # atomic forces Helm's wait
    assert any("values.service.type is LoadBalancer in an awaited release" in e
               for e in check_integrity(plan, MINIKUBE))
    with_lb = ClusterFacts(load_balancers=True, storage_classes=MINIKUBE.storage_classes,
                           local_images=MINIKUBE.local_images)
    assert not [e for e in check_integrity(plan, with_lb) if "LoadBalancer" in e]


def test_an_unknown_storage_class_is_an_error(plan_of):
    plan = _dev(plan_of)
    claim = _object(plan, "StatefulSet", "seaweedfs")["manifest"]["spec"]["volumeClaimTemplates"][0]
    claim["spec"]["storageClassName"] = "fast-nvme"
    errors = check_integrity(plan, MINIKUBE)
    assert any("storageClassName 'fast-nvme' is neither made by the plan" in e for e in errors), errors
