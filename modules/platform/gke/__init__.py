"""The `gke` target: VPC, private GKE, Cloud SQL, GCS, Artifact Registry and Workload Identity.

Clients reach their buckets as Google service accounts bound to their Kubernetes service accounts
(Workload Identity): no key exists anywhere. Every Google resource goes through one explicit
provider for the configured project and region; nothing reads ambient gcloud defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from modules.ci.github import CiIdentities, GithubOidc
from modules.platform.cloud import ManagedPostgresSpec, NodePoolSpec
from modules.platform.contract import (
    BucketAccess,
    Cluster,
    Database,
    ImageRegistry,
    ObjectStore,
    Placement,
    Platform,
    PoolRole,
    PublicDns,
    pool_placement,
)
from modules.platform.gke.cluster import GkeCluster, GkeClusterArgs
from modules.platform.gke.database import CloudSqlArgs, CloudSqlPostgres
from modules.platform.gke.dns import GatewayDns, GatewayDnsArgs
from modules.platform.gke.github import (
    GithubFederation,
    GithubFederationArgs,
    ModelsValues,
    ModelsValuesArgs,
    TenantFederation,
    TenantFederationArgs,
)
from modules.platform.gke.identity import WorkloadIdentity, WorkloadIdentityArgs
from modules.platform.gke.network import Network, NetworkArgs
from modules.platform.gke.storage import Buckets, BucketsArgs, Registry, RegistryArgs

# sts and iamcredentials: Workload Identity Federation (GitHub Actions) exchanges tokens through them
APIS = ("compute", "container", "sqladmin", "servicenetworking", "artifactregistry", "iam",
        "iamcredentials", "sts", "secretmanager", "storage", "cloudresourcemanager")
MAX_ACCOUNT_ID = 30


@dataclass(frozen=True)
class GkeSettings:
    project: str
    region: str
    location: str  # region (regional cluster) or zone
    autopilot: bool
    release_channel: str
    kubernetes_version: str
    private_endpoint: bool
    master_cidr: str
    authorized_networks: Sequence[str]
    subnet_cidr: str
    pods_cidr: str
    services_cidr: str
    node_pools: Sequence[NodePoolSpec]
    database: ManagedPostgresSpec
    database_edition: str
    buckets: Mapping[str, str]  # purpose -> globally unique bucket name
    registry: str
    noncurrent_version_days: int
    prefix: str  # of physical names
    storage_class: str | None
    protect: bool
    labels: Mapping[str, str]
    dns: bool = False  # gateway.dns is set: Cloud DNS API on
    vertex: bool = False  # serving.engine vertex: Vertex AI API on


@dataclass(frozen=True)
class GcpContext:
    """What a managed Google service beside the cluster (Vertex AI endpoints) takes from the platform."""

    opts: pulumi.ResourceOptions  # the stack's provider for the project and region
    project: str
    region: str
    prefix: str  # of physical names
    repository: gcp.artifactregistry.Repository  # where the stack pushes its images


class ProjectApis(pulumi.ComponentResource):
    """The Google APIs the platform calls; left enabled on destroy (other things may use them)."""

    def __init__(self, name: str, project: str, apis: Sequence[str] = APIS,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:gcp:ProjectApis", name, None, opts)
        for api in apis:
            gcp.projects.Service(f"{name}-{api}", project=project, service=f"{api}.googleapis.com",
                                 disable_on_destroy=False, opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({})


class GkePlatform(Platform):
    def __init__(self, settings: GkeSettings):
        self.settings = settings
        self._opts: pulumi.ResourceOptions | None = None
        self._network: Network | None = None
        self._gke: GkeCluster | None = None
        self._registry: Registry | None = None
        self._github: GithubFederation | None = None
        self._buckets: Buckets | None = None
        self._identities: dict[str, WorkloadIdentity] = {}

    def cluster(self) -> Cluster:
        s = self.settings
        # every resource goes through `gcp`, which exists only once the APIs are on (a component's
        # depends_on would not reach its children)
        bootstrap = gcp.Provider("gcp-apis", project=s.project, region=s.region)
        apis = ProjectApis("apis", s.project, (*APIS, *(("dns",) if s.dns else ()),
                                             *(("aiplatform",) if s.vertex else ())),
                           opts=pulumi.ResourceOptions(providers=[bootstrap]))
        provider = gcp.Provider("gcp", project=s.project, region=s.region, default_labels=dict(s.labels),
                                opts=pulumi.ResourceOptions(depends_on=[apis]))
        self._opts = pulumi.ResourceOptions(providers=[provider])
        self._network = Network("network", NetworkArgs(s.prefix, s.region, s.subnet_cidr, s.pods_cidr,
                                                       s.services_cidr), opts=self._opts)
        self._gke = GkeCluster(
            "gke",
            GkeClusterArgs(
                name=s.prefix, project=s.project, location=s.location, autopilot=s.autopilot,
                release_channel=s.release_channel, kubernetes_version=s.kubernetes_version,
                private_endpoint=s.private_endpoint, master_cidr=s.master_cidr,
                authorized_networks=s.authorized_networks,
                network=self._network.network.id, subnet=self._network.subnet.id,
                node_pools=s.node_pools, deletion_protection=s.protect,
            ),
            opts=self._opts,
        )
        self._registry = Registry(
            "registry",
            RegistryArgs(project=s.project, region=s.region, repository_id=s.registry,
                         readers={"nodes": self._gke.node_account.member}, protect=s.protect),
            opts=self._opts,
        )
        return Cluster(provider=self._gke.provider, name=self._gke.cluster.name, storage_class=s.storage_class,
                       kubeconfig=self._gke.kubeconfig)

    def data_services(
        self, cluster: Cluster, namespace: pulumi.Output[str], clients: Sequence[BucketAccess]
    ) -> tuple[Database, ObjectStore]:
        s = self.settings
        if self._network is None:
            raise RuntimeError("GkePlatform.cluster() must be called before data_services()")
        self._buckets = Buckets(
            "buckets",
            BucketsArgs(names=s.buckets, location=s.region, noncurrent_version_days=s.noncurrent_version_days,
                        force_destroy=not s.protect, protect=s.protect),
            opts=self._opts,
        )
        database = CloudSqlPostgres(
            "database",
            CloudSqlArgs(name=f"{s.prefix}-postgres", region=s.region, spec=s.database, edition=s.database_edition,
                         network=self._network.network.id, private_services=self._network.private_services,
                         labels=s.labels, protect=s.protect),
            opts=self._opts,
        )
        for client in clients:
            self._identity(client)
        store = ObjectStore(
            scheme="gs",
            buckets={purpose: bucket.name for purpose, bucket in self._buckets.buckets.items()},
            region=s.region,
            ready=self._buckets,
        )
        return database.database, store

    def gcp_context(self) -> GcpContext:
        if self._opts is None or self._registry is None:
            raise RuntimeError("GkePlatform.cluster() must be called before gcp_context()")
        s = self.settings
        return GcpContext(self._opts, s.project, s.region, s.prefix, self._registry.repository)

    def identity_annotations(self, access: BucketAccess) -> Mapping[str, pulumi.Input[str]]:
        return self._identity(access).annotations

    def ci_identities(self, github: GithubOidc) -> CiIdentities:
        if self._registry is None:
            raise RuntimeError("GkePlatform.cluster() must be called before ci_identities()")
        s = self.settings
        self._github = GithubFederation("github", GithubFederationArgs(
            project=s.project, prefix=s.prefix, github=github, repository=self._registry.repository), opts=self._opts)
        return self._github.identities

    def tenant_ci_identities(self, tenants: Mapping[str, Sequence[str]], deploy_ref: str) -> Mapping[str, CiIdentities]:
        s = self.settings
        return TenantFederation("tenant-github", TenantFederationArgs(
            project=s.project, prefix=s.prefix, tenants=tenants, deploy_ref=deploy_ref), opts=self._opts).identities

    def ci_values(self, values: pulumi.Input[str]) -> pulumi.Output[str]:
        if self._github is None:
            raise RuntimeError("GkePlatform.ci_identities() must be called before ci_values()")
        s = self.settings
        return ModelsValues("ci-values", ModelsValuesArgs(project=s.project, secret_id=f"{s.prefix}-ci-models",
                                                          reader=self._github.models_member, values=values),
                            opts=self._opts).reference

    def public_dns(self, zone: str, project: str | None, hosts: Sequence[str], ttl: int) -> PublicDns:
        if self._gke is None:
            raise RuntimeError("GkePlatform.cluster() must be called before public_dns()")
        s = self.settings
        return GatewayDns("dns", GatewayDnsArgs(
            project=s.project, region=s.region, prefix=s.prefix, zone=zone, zone_project=project or s.project,
            hosts=hosts, ttl=ttl, cluster=self._gke.cluster), opts=self._opts).dns

    def placement(self, role: PoolRole) -> Placement:
        # Autopilot has no pools of ours: Google places every pod
        return Placement() if self.settings.autopilot else pool_placement(role)

    @property
    def registry_url(self) -> pulumi.Input[str] | None:
        return self._registry.url if self._registry is not None else None

    @property
    def registry(self) -> ImageRegistry | None:
        return self._registry.image_registry if self._registry is not None else None

    def _identity(self, access: BucketAccess) -> WorkloadIdentity:
        """The client's Google service account, created on first use (for any namespace/KSA pair)."""
        if access.client in self._identities:
            return self._identities[access.client]
        if self._buckets is None or self._gke is None:
            raise RuntimeError("GkePlatform.data_services() must be called before identity_annotations()")
        account_id = f"{self.settings.prefix}-{access.client}"
        if len(account_id) > MAX_ACCOUNT_ID:
            raise ValueError(f"service account id {account_id!r} is longer than {MAX_ACCOUNT_ID} characters: "
                             "shorten mlops-stack:gcp.namePrefix or the client name")
        identity = WorkloadIdentity(
            f"identity-{access.client}",
            WorkloadIdentityArgs(
                account_id=account_id, project=self.settings.project, namespace=access.namespace,
                service_account=access.service_account,
                buckets={b: self._buckets.buckets[b].name for b in access.buckets},
                write=access.write, cluster=self._gke.cluster,
            ),
            opts=self._opts,
        )
        self._identities[access.client] = identity
        return identity
