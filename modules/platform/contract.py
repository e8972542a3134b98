"""What a platform target hands to everything above it — the only platform-specific surface.

MLflow, serving, monitoring and the workloads are written once against these types; a target
(minikube/existing cluster, GKE, EKS) differs only in how it produces them.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from modules.ci.github import CiIdentities, GithubOidc
from modules.images import RegistryAuth


@dataclass(frozen=True)
class Cluster:
    """How to reach the cluster: every Kubernetes object is created with this provider."""

    provider: k8s.Provider
    name: pulumi.Input[str]
    storage_class: str | None
    kubeconfig: pulumi.Output[str] | None = None  # secret; only for clusters the stack creates


@dataclass(frozen=True)
class ClusterFacts:
    """What the target cluster provides before the plan runs (mlops/integrity.py checks the plan
    against it): Helm waits for a LoadBalancer address forever where nothing hands one out."""

    load_balancers: bool  # a LoadBalancer Service gets an address (cloud, MetalLB, kube-vip…)
    storage_classes: frozenset[str] = frozenset()  # classes that exist before the plan runs
    default_storage_class: bool = True  # a PVC without storageClassName is provisioned
    local_images: frozenset[str] = frozenset()  # repositories loaded into the nodes (`make up`)


@dataclass(frozen=True)
class Database:
    """A PostgreSQL database and the credentials of its owner (password is a Pulumi secret)."""

    host: pulumi.Input[str]
    port: int
    name: str
    username: pulumi.Input[str]
    password: pulumi.Input[str]
    sslmode: Literal["disable", "require", "verify-full"] = "disable"
    extra_databases: Sequence[str] = ()  # created beside `name`, same owner (e.g. MLflow auth)


@dataclass(frozen=True)
class S3Credentials:
    """Static keys, used only for the in-cluster store; cloud stores use workload identity."""

    access_key_id: pulumi.Input[str]
    secret_access_key: pulumi.Input[str]


@dataclass(frozen=True)
class ObjectStore:
    """Buckets by purpose (`artifacts`, `backups`) and how clients reach them."""

    scheme: Literal["s3", "gs"]
    buckets: Mapping[str, pulumi.Input[str]]
    endpoint_url: pulumi.Input[str] | None = None  # None: the cloud's own endpoint
    region: str = "us-east-1"
    credentials: Mapping[str, S3Credentials] = field(default_factory=dict)  # by client name
    ready: pulumi.Resource | None = None  # buckets exist once this resource is ready

    def url(self, purpose: str) -> pulumi.Output[str]:
        return pulumi.Output.concat(f"{self.scheme}://", self.buckets[purpose])


PoolRole = Literal["system", "workload"]
POOL_LABEL = "mlops-stack/pool"  # node label on both pools of a cloud cluster: "system" | "workload"
# Only the workload pool is tainted: GKE's and EKS's own pods (kube-dns, CoreDNS, metrics-server…)
# and every platform pod stay on the system pool without tolerations, and the (spot, scale-to-0)
# workload pool runs only pods that ask for it — model servers and workload Jobs.
WORKLOAD_TAINT = {"key": POOL_LABEL, "value": "workload", "effect": "NoSchedule"}


@dataclass(frozen=True)
class Placement:
    """Where a role's pods run, as Kubernetes pod-spec values (empty: anywhere)."""

    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, str]] = ()

    def pod_spec(self) -> dict[str, object]:
        """`nodeSelector`/`tolerations` to merge into a pod spec (or a chart's values), only if set."""
        return {**({"nodeSelector": dict(self.node_selector)} if self.node_selector else {}),
                **({"tolerations": [dict(t) for t in self.tolerations]} if self.tolerations else {})}


def pool_placement(role: PoolRole) -> Placement:
    """Placement on a cloud cluster whose node pools carry POOL_LABEL and the workload one WORKLOAD_TAINT."""
    return Placement({POOL_LABEL: role}, [{**WORKLOAD_TAINT, "operator": "Equal"}] if role == "workload" else [])


@dataclass(frozen=True)
class ImageRegistry:
    """The registry a platform creates, as the image build needs it: where images go, how to log in,
    and what must exist before a push (ECR creates no repository on push: one per image)."""

    url: pulumi.Input[str]  # "<host>/<path>": images are <url>/<name>
    auth: RegistryAuth | None = None  # None: the builder's own docker credentials
    repositories: Mapping[str, pulumi.Resource] = field(default_factory=dict)  # image name → its repository


@dataclass(frozen=True)
class PublicDns:
    """DNS records for the gateway's hosts in the stack's zone, and Let's Encrypt DNS-01 through
    cert-manager's own workload identity (no key): what a cloud hands to the gateway."""

    solver: Mapping[str, Any]  # the ACME solver's `dns01` block (cloudDNS / route53), ambient credentials
    cert_manager_annotations: Mapping[str, pulumi.Input[str]]  # on cert-manager's service account
    service_values: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)  # gateway chart `service`


@dataclass(frozen=True)
class BucketAccess:
    """A client (one Kubernetes service account) and the buckets it may read/write."""

    client: str
    namespace: pulumi.Input[str]
    service_account: str
    buckets: Sequence[str]
    write: bool = True
    # objects only under `<bucket>/<prefix>/` (listing the bucket stays allowed); None: the whole bucket
    prefix: str | None = None


class Platform(abc.ABC):
    """A target. `infra/` picks one; nothing else knows which one it is."""

    @abc.abstractmethod
    def cluster(self) -> Cluster:
        """Create (or connect to) the cluster."""

    @abc.abstractmethod
    def data_services(
        self, cluster: Cluster, namespace: pulumi.Output[str], clients: Sequence[BucketAccess]
    ) -> tuple[Database, ObjectStore]:
        """PostgreSQL and object storage, with access for `clients` and nobody else."""

    @abc.abstractmethod
    def identity_annotations(self, access: BucketAccess) -> Mapping[str, pulumi.Input[str]]:
        """Annotations for the client's Kubernetes service account (workload identity); {} if none."""

    def ci_identities(self, github: GithubOidc) -> CiIdentities:
        """Cloud identities GitHub Actions jobs of `github.repository` assume without keys."""
        raise NotImplementedError(f"{type(self).__name__} has no cloud identities; use in-cluster runners")

    def ci_values(self, values: pulumi.Input[str]) -> pulumi.Output[str]:
        """Keeps `values` (secret JSON the CI model pipeline reads) in the cloud's secret manager, readable
        by the `models` identity alone; returns the reference the pipeline reads it by. After ci_identities()."""
        raise NotImplementedError(f"{type(self).__name__} has no cloud secret manager")

    def tenant_ci_identities(self, tenants: Mapping[str, Sequence[str]], deploy_ref: str) -> Mapping[str, CiIdentities]:
        """Per tenant (-> its repositories): a keyless identity only jobs of those repositories on
        `deploy_ref` assume, whose `model_deployer` subject the tenant binds to its own Role; {} where
        the platform has none (tenants deploy with a namespaced token, docs/decisions/0015)."""
        return {}

    def placement(self, role: PoolRole) -> Placement:
        """Where pods of `role` run: platform services on "system", model servers and Jobs on "workload"."""
        return Placement()

    def public_dns(self, zone: str, project: str | None, hosts: Sequence[str], ttl: int) -> PublicDns:
        """Records for `hosts` → the gateway, in `zone`, and a DNS-01 solver writing to it."""
        raise NotImplementedError(f"{type(self).__name__} manages no DNS zone: unset gateway.dns")

    @property
    def gateway_service_annotations(self) -> Mapping[str, str]:
        """Annotations for the gateway's LoadBalancer Service (which load balancer the cloud makes)."""
        return {}

    @property
    def metrics_services(self) -> Sequence[str]:
        """Data services running in the cluster with a `metrics` port for Prometheus to scrape; the
        clouds' managed databases and buckets report to Cloud Monitoring / CloudWatch instead."""
        return ()

    @property
    def registry_url(self) -> pulumi.Input[str] | None:
        """Where CI pushes model images; None where images are loaded into the cluster directly."""
        return None

    @property
    def registry(self) -> ImageRegistry | None:
        """The registry this platform creates, with push credentials; None where it creates none."""
        return None
