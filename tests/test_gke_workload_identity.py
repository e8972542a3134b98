"""Decision (issue 12): MLflow keeps `automountServiceAccountToken: false` on both clouds (and model
servers may set it too), because neither workload identity needs the automounted API token.

- GKE: pods on GKE_METADATA nodes get Google credentials from the node's GKE metadata server
  (169.254.169.254), which vouches for the pod's Kubernetes service account itself; nothing is read
  from the pod's filesystem.
- EKS IRSA: the pod identity webhook (aws/amazon-eks-pod-identity-webhook, pkg/handler/handler.go)
  mutates every pod whose service account has `eks.amazonaws.com/role-arn`: it adds its *own*
  projected volume `aws-iam-token` (a serviceAccountToken projection, audience sts.amazonaws.com)
  plus AWS_ROLE_ARN / AWS_WEB_IDENTITY_TOKEN_FILE. `automountServiceAccountToken` governs only the
  `kube-api-access-*` volume, so it does not stop that projection. The webhook skips a pod that
  already has a volume named `aws-iam-token`, or a container that sets those variables itself —
  which is what these tests rule out.
"""

from __future__ import annotations

import pytest

from mlops.plan import Plan
from tests.test_cloud_platforms import of, revealed
from tests.test_gke_platform import full

IRSA_VOLUME = "aws-iam-token"
IRSA_ENV = {"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"}
ANNOTATION = {"gke": "iam.gke.io/gcp-service-account", "eks": "eks.amazonaws.com/role-arn"}


def identity_pods(plan: Plan) -> list[tuple[str, dict]]:
    """(where, pod spec) of every MLflow and model-server pod."""
    pods = [(f"Deployment {d['metadata']['name']}", d["spec"]["template"]["spec"])
            for d in plan.kubernetes_objects if d.get("kind") in ("Deployment", "Job")
            and d["metadata"]["name"].startswith("mlflow")]
    pods += [(f"SeldonDeployment {s['metadata']['name']}", c["spec"])
             for s in plan.kubernetes_objects if s.get("kind") == "SeldonDeployment"
             for p in s["spec"]["predictors"] for c in p["componentSpecs"]]
    return pods


def irsa_blockers(pod: dict) -> list[str]:
    """What would make the EKS pod identity webhook leave the pod without its web-identity token."""
    problems = [f"volume {IRSA_VOLUME!r} already present" for v in pod.get("volumes") or []
                if v.get("name") == IRSA_VOLUME]
    for c in (*(pod.get("initContainers") or []), *pod.get("containers", [])):
        problems += [f"container {c.get('name')} sets {e['name']}" for e in c.get("env") or [] if e["name"] in IRSA_ENV]
    return problems


@pytest.mark.parametrize("stack", ["gke", "eks", "full-gke"])
def test_identity_pods_mount_no_api_token_and_use_annotated_accounts(stack):
    plan = full() if stack == "full-gke" else revealed(stack)
    cloud = stack.removeprefix("full-")
    accounts = {a["metadata"]["name"]: a for a in plan.kubernetes_objects if a.get("kind") == "ServiceAccount"}
    pods = identity_pods(plan)
    assert any(w.startswith("Deployment mlflow") for w, _ in pods)
    if stack == "full-gke":  # serves a model
        assert any(w.startswith("SeldonDeployment") and p.get("serviceAccountName") for w, p in pods)
    for where, pod in pods:
        if where.startswith("Deployment mlflow"):  # MLflow never calls the Kubernetes API
            assert pod.get("automountServiceAccountToken") is False, where
        account = pod.get("serviceAccountName")
        if account is None:  # a Seldon predictor without the bucket-reading account reads through MLflow
            continue
        assert ANNOTATION[cloud] in (accounts[account]["metadata"].get("annotations") or {}), where
        assert irsa_blockers(pod) == [], where


def test_irsa_blockers_are_found():
    pod = {"volumes": [{"name": IRSA_VOLUME, "emptyDir": {}}],
           "containers": [{"name": "app", "env": [{"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/t"}]}]}
    assert len(irsa_blockers(pod)) == 2


def test_gke_pools_serve_the_metadata_server():
    for pool in of(revealed("gke"), "gcp:container/nodePool:NodePool"):
        assert pool["inputs"]["nodeConfig"]["workloadMetadataConfig"]["mode"] == "GKE_METADATA"
