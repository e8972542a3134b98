"""The `eks` target: VPC, EKS, RDS for PostgreSQL, S3, ECR and IAM roles for service accounts.

Clients reach their buckets through IRSA roles that only their Kubernetes service account can
assume: no access key exists anywhere. One KMS key (rotated, protected) encrypts Kubernetes Secrets,
RDS storage, the buckets and the repositories. Every AWS resource goes through one explicit provider
for the configured region; nothing reads an ambient default region.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

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
from modules.platform.eks.cluster import EksCluster, EksClusterArgs
from modules.platform.eks.database import RdsArgs, RdsPostgres
from modules.platform.eks.dns import GatewayDns, GatewayDnsArgs
from modules.platform.eks.github import (
    GithubRoles,
    GithubRolesArgs,
    ModelsValues,
    ModelsValuesArgs,
    TenantRoles,
    TenantRolesArgs,
)
from modules.platform.eks.identity import ServiceAccountRole, ServiceAccountRoleArgs
from modules.platform.eks.network import Vpc, VpcArgs
from modules.platform.eks.storage import Buckets, BucketsArgs, Registry, RegistryArgs

KEY_DELETION_WINDOW_DAYS = 30


@dataclass(frozen=True)
class EksSettings:
    region: str
    zones: Sequence[str]  # availability zone names
    vpc_cidr: str
    nat_per_zone: bool
    kubernetes_version: str
    private_endpoint: bool
    authorized_networks: Sequence[str]
    node_pools: Sequence[NodePoolSpec]
    database: ManagedPostgresSpec
    max_storage_gi: int
    client_image: str  # postgres image whose psql creates the extra databases
    buckets: Mapping[str, str]  # purpose -> bucket name prefix
    registry: str
    registry_images: Sequence[str]
    log_retention_days: int
    noncurrent_version_days: int
    prefix: str  # of physical names
    storage_class: str
    protect: bool
    tags: Mapping[str, str]
    cluster_admins: Sequence[str] = ()  # IAM role/user ARNs: cluster admin access entries
    cluster_viewers: Sequence[str] = ()  # IAM role/user ARNs: read-only access entries
    create_github_oidc_provider: bool = False


@dataclass(frozen=True)
class AwsContext:
    """What a managed AWS service beside the cluster (SageMaker endpoints) takes from the platform."""

    opts: pulumi.ResourceOptions  # the stack's provider for the region
    key_arn: pulumi.Output[str]  # the KMS key of the buckets (model data is SSE-KMS) and repositories
    region: str
    prefix: str  # of physical names
    log_retention_days: int


class EksPlatform(Platform):
    def __init__(self, settings: EksSettings):
        self.settings = settings
        self._opts: pulumi.ResourceOptions | None = None
        self._key: aws.kms.Key | None = None
        self._vpc: Vpc | None = None
        self._eks: EksCluster | None = None
        self._registry: Registry | None = None
        self._github: GithubRoles | None = None
        self._buckets: Buckets | None = None
        self._identities: dict[str, ServiceAccountRole] = {}

    def cluster(self) -> Cluster:
        s = self.settings
        provider = aws.Provider("aws", region=s.region, default_tags=aws.ProviderDefaultTagsArgs(tags=dict(s.tags)))
        self._opts = pulumi.ResourceOptions(providers=[provider])
        self._key = aws.kms.Key(
            "kms", description=f"{s.prefix}: Kubernetes Secrets, RDS, S3, ECR", enable_key_rotation=True,
            deletion_window_in_days=KEY_DELETION_WINDOW_DAYS,
            opts=pulumi.ResourceOptions(provider=provider, protect=s.protect))
        aws.kms.Alias("kms", name=f"alias/{s.prefix}", target_key_id=self._key.id,
                      opts=pulumi.ResourceOptions(provider=provider))
        self._vpc = Vpc("vpc", VpcArgs(prefix=s.prefix, cidr=s.vpc_cidr, zones=s.zones, nat_per_zone=s.nat_per_zone,
                                       region=s.region), opts=self._opts)
        self._eks = EksCluster(
            "eks",
            EksClusterArgs(
                name=s.prefix, region=s.region, kubernetes_version=s.kubernetes_version,
                private_endpoint=s.private_endpoint, authorized_networks=s.authorized_networks,
                subnet_ids=[subnet.id for subnet in self._vpc.private_subnets], node_pools=s.node_pools,
                key_arn=self._key.arn, log_retention_days=s.log_retention_days, storage_class=s.storage_class,
                protect=s.protect, admins=s.cluster_admins, viewers=s.cluster_viewers,
            ),
            opts=self._opts,
        )
        self._registry = Registry(
            "registry",
            RegistryArgs(namespace=s.registry, images=s.registry_images, key_arn=self._key.arn,
                         force_delete=not s.protect, protect=s.protect),
            opts=self._opts,
        )
        return Cluster(provider=self._eks.provider, name=self._eks.cluster.name, storage_class=s.storage_class,
                       kubeconfig=self._eks.kubeconfig)

    def data_services(
        self, cluster: Cluster, namespace: pulumi.Output[str], clients: Sequence[BucketAccess]
    ) -> tuple[Database, ObjectStore]:
        s = self.settings
        if self._eks is None or self._vpc is None or self._key is None:
            raise RuntimeError("EksPlatform.cluster() must be called before data_services()")
        self._buckets = Buckets(
            "buckets",
            BucketsArgs(prefixes=s.buckets, key_arn=self._key.arn, noncurrent_version_days=s.noncurrent_version_days,
                        force_destroy=not s.protect, protect=s.protect),
            opts=self._opts,
        )
        database = RdsPostgres(
            "database",
            RdsArgs(
                identifier=f"{s.prefix}-postgres", spec=s.database, max_storage_gi=s.max_storage_gi,
                subnet_ids=[subnet.id for subnet in self._vpc.private_subnets], vpc_id=self._vpc.vpc.id,
                client_security_group=self._eks.cluster.vpc_config.cluster_security_group_id,
                key_arn=self._key.arn, namespace=namespace, client_image=s.client_image,
                k8s_provider=cluster.provider, protect=s.protect,
            ),
            opts=self._opts,
        )
        for client in clients:
            self._identity(client)
        store = ObjectStore(
            scheme="s3",
            buckets={purpose: bucket.bucket for purpose, bucket in self._buckets.buckets.items()},
            region=s.region,
            ready=self._buckets,
        )
        return database.database, store

    def aws_context(self) -> AwsContext:
        if self._opts is None or self._key is None:
            raise RuntimeError("EksPlatform.cluster() must be called before aws_context()")
        s = self.settings
        return AwsContext(self._opts, self._key.arn, s.region, s.prefix, s.log_retention_days)

    def identity_annotations(self, access: BucketAccess) -> Mapping[str, pulumi.Input[str]]:
        return self._identity(access).annotations

    def ci_identities(self, github: GithubOidc) -> CiIdentities:
        if self._eks is None or self._registry is None or self._key is None:
            raise RuntimeError("EksPlatform.cluster() must be called before ci_identities()")
        self._github = GithubRoles("github", GithubRolesArgs(
            prefix=self.settings.prefix, github=github, cluster=self._eks.cluster,
            repositories=self._registry.repositories, key_arn=self._key.arn,
            create_oidc_provider=self.settings.create_github_oidc_provider), opts=self._opts)
        return self._github.identities

    def tenant_ci_identities(self, tenants: Mapping[str, Sequence[str]], deploy_ref: str) -> Mapping[str, CiIdentities]:
        if self._eks is None:
            raise RuntimeError("EksPlatform.cluster() must be called before tenant_ci_identities()")
        if self._github is None and self.settings.create_github_oidc_provider:
            raise ValueError("tenants on eks trust the account's GitHub OIDC provider, which this stack creates only "
                             "later (ci.github.createAwsOidcProvider): set ci.github.awsOidcProviderArn, or create "
                             "the provider first")
        return TenantRoles("tenant-github", TenantRolesArgs(
            prefix=self.settings.prefix, tenants=tenants, deploy_ref=deploy_ref, cluster=self._eks.cluster,
            provider_arn=self._github.provider_arn if self._github is not None else None), opts=self._opts).identities

    def ci_values(self, values: pulumi.Input[str]) -> pulumi.Output[str]:
        if self._github is None or self._key is None:
            raise RuntimeError("EksPlatform.ci_identities() must be called before ci_values()")
        return ModelsValues("ci-values", ModelsValuesArgs(name_prefix=f"{self.settings.prefix}-ci-models-",
                                                          reader=self._github.models_role, key_arn=self._key.arn,
                                                          values=values), opts=self._opts).reference

    def public_dns(self, zone: str, project: str | None, hosts: Sequence[str], ttl: int) -> PublicDns:
        if self._eks is None:
            raise RuntimeError("EksPlatform.cluster() must be called before public_dns()")
        s = self.settings
        return GatewayDns("dns", GatewayDnsArgs(
            prefix=s.prefix, region=s.region, zone_id=zone, zones=s.zones, hosts=hosts, ttl=ttl, oidc=self._eks.oidc,
            service_annotations=self.gateway_service_annotations), opts=self._opts).dns

    def placement(self, role: PoolRole) -> Placement:
        return pool_placement(role)  # the node groups carry the pool label, the workload one its taint

    @property
    def gateway_service_annotations(self) -> Mapping[str, str]:
        # a Network Load Balancer (layer 4, TLS ends at Istio) instead of the legacy Classic one
        return {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}

    @property
    def registry_url(self) -> pulumi.Input[str] | None:
        return self._registry.url if self._registry is not None else None

    @property
    def registry(self) -> ImageRegistry | None:
        return self._registry.image_registry if self._registry is not None else None

    def _identity(self, access: BucketAccess) -> ServiceAccountRole:
        """The client's IRSA role, created on first use (for any namespace/service account pair)."""
        if access.client in self._identities:
            return self._identities[access.client]
        if self._buckets is None or self._eks is None or self._key is None:
            raise RuntimeError("EksPlatform.data_services() must be called before identity_annotations()")
        role = ServiceAccountRole(
            f"identity-{access.client}",
            ServiceAccountRoleArgs(
                role_name=f"{self.settings.prefix}-{access.client}", oidc=self._eks.oidc,
                namespace=access.namespace, service_account=access.service_account,
                bucket_arns=[self._buckets.buckets[b].arn for b in access.buckets], key_arn=self._key.arn,
                write=access.write,
            ),
            opts=self._opts,
        )
        self._identities[access.client] = role
        return role
