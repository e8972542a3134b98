"""The platform's guard rails as plain functions of (resource type, properties).

The same rules run in two places: in `pulumi preview/up --policy-pack policy` (CrossGuard, through
`__main__.py`) and on every offline plan (`mlops validate`), so a change that breaks one fails the
tests before it ever reaches a cloud. Each rule returns the violations it found, as sentences.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Props = Mapping[str, Any]
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}
STATIC_KEYS = {"gcp:serviceaccount/key:Key", "gcp:storage/hmacKey:HmacKey", "aws:iam/accessKey:AccessKey"}
GITHUB_TOKEN_HOST = "token.actions.githubusercontent.com"


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Callable[[str, Props], list[str]]


def _pod_spec(props: Props) -> Mapping[str, Any] | None:
    if props.get("kind") not in WORKLOADS:
        return None
    spec = props.get("spec") or {}
    if props["kind"] == "Pod":
        return spec
    if props["kind"] == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return ((spec.get("template") or {}).get("spec")) or {}


def _containers(pod: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield from pod.get("initContainers") or []
    yield from pod.get("containers") or []


def _k8s_name(props: Props) -> str:
    meta = props.get("metadata") or {}
    return f"{props.get('kind')} {meta.get('namespace', '')}/{meta.get('name', '?')}".replace(" /", " ")


def pinned_images(type_: str, props: Props) -> list[str]:
    pod = _pod_spec(props)
    if pod is None:
        return []
    problems = []
    for c in _containers(pod):
        image = str(c.get("image", ""))
        name, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
        if "@sha256:" in image:
            continue
        if not name or "/" in tag or tag in ("", "latest"):
            problems.append(f"{_k8s_name(props)}: container {c.get('name')} image {image!r} is not pinned to a version")
    return problems


def resources_set(type_: str, props: Props) -> list[str]:
    pod = _pod_spec(props)
    if pod is None:
        return []
    problems = []
    for c in _containers(pod):
        r = c.get("resources") or {}
        if not (r.get("requests") or {}).get("cpu") or not (r.get("requests") or {}).get("memory"):
            problems.append(f"{_k8s_name(props)}: container {c.get('name')} has no CPU/memory requests")
        if not (r.get("limits") or {}).get("memory"):
            problems.append(f"{_k8s_name(props)}: container {c.get('name')} has no memory limit")
    return problems


# A workload that cannot run without setuid helpers (rootless BuildKit's newuidmap) says why on
# itself; it must still run as non-root and unprivileged.
ESCALATION_EXEMPTION = "policy.mlops-stack.io/allow-privilege-escalation"


def _escalation_exempt(props: Props) -> bool:
    reason = ((props.get("metadata") or {}).get("annotations") or {}).get(ESCALATION_EXEMPTION, "")
    return len(str(reason).strip()) >= 40


def non_root(type_: str, props: Props) -> list[str]:
    pod = _pod_spec(props)
    if pod is None:
        return []
    pod_level = (pod.get("securityContext") or {}).get("runAsNonRoot")
    problems = []
    for c in _containers(pod):
        security = c.get("securityContext") or {}
        if not security.get("runAsNonRoot", pod_level):
            problems.append(f"{_k8s_name(props)}: container {c.get('name')} may run as root (runAsNonRoot unset)")
        escalation = security.get("allowPrivilegeEscalation", True) and not _escalation_exempt(props)
        if security.get("privileged") or escalation:
            problems.append(f"{_k8s_name(props)}: container {c.get('name')} allows privilege escalation")
    return problems


def no_static_cloud_keys(type_: str, props: Props) -> list[str]:
    if type_ in STATIC_KEYS:
        return [f"{type_}: long-lived cloud keys are not allowed; use workload identity (GKE) or IRSA (EKS)"]
    return []


def private_buckets(type_: str, props: Props) -> list[str]:
    if type_ == "gcp:storage/bucket:Bucket":
        problems = []
        if props.get("publicAccessPrevention") != "enforced":
            problems.append(f"GCS bucket {props.get('name')}: publicAccessPrevention must be 'enforced'")
        if not props.get("uniformBucketLevelAccess"):
            problems.append(f"GCS bucket {props.get('name')}: uniformBucketLevelAccess must be on (no object ACLs)")
        return problems
    if type_ == "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock":
        flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
        off = [f for f in flags if not props.get(f)]
        return [f"S3 public access block of {props.get('bucket')}: {', '.join(off)} must be true"] if off else []
    return []


def private_databases(type_: str, props: Props) -> list[str]:
    if type_ == "gcp:sql/databaseInstance:DatabaseInstance":
        ip = ((props.get("settings") or {}).get("ipConfiguration")) or {}
        if ip.get("ipv4Enabled", True):
            return [f"Cloud SQL {props.get('name')}: ipv4Enabled must be false (private IP only)"]
    if type_ == "aws:rds/instance:Instance":
        problems = []
        if props.get("publiclyAccessible"):
            problems.append(f"RDS {props.get('identifier')}: publiclyAccessible must be false")
        if not props.get("storageEncrypted"):
            problems.append(f"RDS {props.get('identifier')}: storageEncrypted must be true")
        return problems
    return []


def imds_v2(type_: str, props: Props) -> list[str]:
    if type_ != "aws:ec2/launchTemplate:LaunchTemplate":
        return []
    metadata = props.get("metadataOptions") or {}
    if metadata.get("httpTokens") != "required":
        return [f"launch template {props.get('name') or props.get('description')}: httpTokens must be 'required' (IMDSv2)"]
    return []


def pinned_github_trust(type_: str, props: Props) -> list[str]:
    """A role GitHub Actions can assume must name exact subjects: a wildcard lets any branch or fork in."""
    if type_ == "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider":
        issuer = ((props.get("oidc") or {}).get("issuerUri")) or ""
        if GITHUB_TOKEN_HOST in issuer and "assertion.repository" not in (props.get("attributeCondition") or ""):
            return ["GitHub workload identity provider: attributeCondition must pin assertion.repository"]
        return []
    if type_ != "aws:iam/role:Role" or not isinstance(props.get("assumeRolePolicy"), str):
        return []
    problems = []
    for statement in json.loads(props["assumeRolePolicy"]).get("Statement", []):
        federated = str((statement.get("Principal") or {}).get("Federated", ""))
        if not federated.endswith(GITHUB_TOKEN_HOST):
            continue
        condition = statement.get("Condition") or {}
        subjects = (condition.get("StringEquals") or {}).get(f"{GITHUB_TOKEN_HOST}:sub")
        if not subjects or "StringLike" in condition:
            problems.append(f"IAM role {props.get('name')}: GitHub trust must pin exact subjects with StringEquals")
    return problems


def eks_network_policy(type_: str, props: Props) -> list[str]:
    """NetworkPolicies are inert on EKS unless the VPC CNI add-on runs its network policy agent."""
    if type_ != "aws:eks/addon:Addon" or props.get("addonName") != "vpc-cni":
        return []
    try:
        values = json.loads(props.get("configurationValues") or "{}")
    except (TypeError, ValueError):
        values = {}
    if not isinstance(values, dict) or values.get("enableNetworkPolicy") != "true":
        return [f"EKS add-on vpc-cni of {props.get('clusterName')}: configurationValues must set "
                '"enableNetworkPolicy": "true" (a string), else no NetworkPolicy is enforced']
    return []


def rds_final_snapshot(type_: str, props: Props) -> list[str]:
    """A protected database keeps a last snapshot when it is finally destroyed."""
    if type_ != "aws:rds/instance:Instance" or not props.get("deletionProtection"):
        return []
    if props.get("skipFinalSnapshot") or not props.get("finalSnapshotIdentifier"):
        return [f"RDS {props.get('identifier')}: deletionProtection is on, so skipFinalSnapshot must be false "
                "with a finalSnapshotIdentifier (unique per destroy, e.g. a random suffix kept in state)"]
    return []


def gke_control_plane_closed(type_: str, props: Props) -> list[str]:
    """A protected (non-dev) GKE cluster's API admits only listed networks or the VPC."""
    if type_ != "gcp:container/cluster:Cluster" or not props.get("deletionProtection"):
        return []
    private = (props.get("privateClusterConfig") or {}).get("enablePrivateEndpoint")
    networks = (props.get("masterAuthorizedNetworksConfig") or {}).get("cidrBlocks")
    if private or networks:
        return []
    return [f"GKE cluster {props.get('name')}: deletionProtection is on (a protected stack) but the control plane "
            "admits any address: set masterAuthorizedNetworksConfig.cidrBlocks or "
            "privateClusterConfig.enablePrivateEndpoint"]


def service_networking_destroyable(type_: str, props: Props) -> list[str]:
    """Deleting a Service Networking connection fails while Cloud SQL still holds it (days after the
    instance is gone): a destroy finishes only if the peering is removed or abandoned instead."""
    if type_ != "gcp:servicenetworking/connection:Connection":
        return []
    if props.get("deletionPolicy") in ("REMOVE_PEERING", "ABANDON"):
        return []
    return [f"Service Networking connection of {props.get('network')}: deletionPolicy must be REMOVE_PEERING "
            "(or ABANDON, which leaves the peering and so the network), else `pulumi destroy` cannot finish"]


def pushed_image_tags(type_: str, props: Props) -> list[str]:
    """A pushed build names a version: registries with immutable tags (Artifact Registry, ECR as the
    platform makes them) refuse a second push of a tag, and `latest` (or no tag) names nothing."""
    if type_ != "docker-build:index:Image" or not props.get("push"):
        return []
    tags = [str(t) for t in props.get("tags") or []]
    bad = [t for t in tags if t.rpartition(":")[2] in ("", "latest") or "/" in t.rpartition(":")[2]]
    if tags and not bad:
        return []
    return [f"image build {tags or '(no tags)'}: a pushed image needs a version tag (e.g. content-derived), "
            f"not {bad or 'none'}"]


RULES = [
    Rule("pinned-images", "Container images carry a version tag or digest, never `latest`.", pinned_images),
    Rule("resources-set", "Every container requests CPU and memory and has a memory limit.", resources_set),
    Rule("non-root", "Containers run as non-root without privilege escalation.", non_root),
    Rule("no-static-cloud-keys", "No service account keys, HMAC keys or IAM access keys.", no_static_cloud_keys),
    Rule("private-buckets", "Buckets cannot be made public.", private_buckets),
    Rule("private-databases", "Managed PostgreSQL has no public address and is encrypted.", private_databases),
    Rule("imds-v2", "EKS nodes require IMDSv2.", imds_v2),
    Rule("pinned-github-trust", "CI identities trust exact GitHub subjects only.", pinned_github_trust),
    Rule("eks-network-policy", "The EKS VPC CNI enforces NetworkPolicies.", eks_network_policy),
    Rule("rds-final-snapshot", "A protected RDS instance leaves a final snapshot.", rds_final_snapshot),
    Rule("gke-control-plane-closed", "A protected GKE cluster's API is not open to the internet.",
         gke_control_plane_closed),
    Rule("service-networking-destroyable", "The Cloud SQL peering does not block `pulumi destroy`.",
         service_networking_destroyable),
    Rule("pushed-image-tags", "Images the program pushes carry a version tag, never `latest`.", pushed_image_tags),
]


def violations(type_: str, props: Props) -> list[tuple[str, str]]:
    """(rule name, message) for every rule the resource breaks."""
    return [(rule.name, message) for rule in RULES for message in rule.check(type_, props)]
