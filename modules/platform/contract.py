"""What a platform target hands to everything above it — the only platform-specific surface.

MLflow, serving, monitoring and the workloads are written once against these types; a target
(minikube/existing cluster, GKE, EKS) differs only in how it produces them.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pulumi
import pulumi_kubernetes as k8s

from modules.ci.github import CiIdentities, GithubOidc


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
    """Buckets by purpose (`artifacts`, `datasets`, `backups`) and how clients reach them."""

    scheme: Literal["s3", "gs"]
    buckets: Mapping[str, pulumi.Input[str]]
    endpoint_url: pulumi.Input[str] | None = None  # None: the cloud's own endpoint
    region: str = "us-east-1"
    credentials: Mapping[str, S3Credentials] = field(default_factory=dict)  # by client name
    ready: pulumi.Resource | None = None  # buckets exist once this resource is ready

    def url(self, purpose: str) -> pulumi.Output[str]:
        return pulumi.Output.concat(f"{self.scheme}://", self.buckets[purpose])


@dataclass(frozen=True)
class BucketAccess:
    """A client (one Kubernetes service account) and the buckets it may read/write."""

    client: str
    namespace: pulumi.Input[str]
    service_account: str
    buckets: Sequence[str]
    write: bool = True


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
