"""Picks the platform implementation for a config: the one place that branches on `platform`.

The cloud targets are imported inside their branch: pulumi_gcp and pulumi_aws take a second or two
to import, which the minikube/on-prem plans do not pay.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pulumi

from infra.config import StackConfig
from infra.images import local_builds
from infra.settings import bucket_names, name_prefix
from modules.database.offsite import OffsiteTarget
from modules.mlflow import AUTH_DATABASE
from modules.objectstore.external import ExternalStoreSettings
from modules.platform.cloud import ManagedPostgresSpec, NodePoolSpec
from modules.platform.contract import ClusterFacts, Platform
from modules.platform.incluster import (ExternalDatabaseSettings, InClusterDatabase, InClusterPlatform,
                                        InClusterSettings, OffsiteSettings)

WORKLOADS_DATABASE = "workloads"  # readings, weather and predictions of the energy workload

if TYPE_CHECKING:
    from modules.platform.eks import EksSettings
    from modules.platform.gke import GkeSettings


def make_platform(config: StackConfig) -> Platform:
    if config.platform in ("minikube", "existing"):
        return InClusterPlatform(config.platform, _in_cluster_settings(config))
    if config.platform == "gke":
        from modules.platform.gke import GkePlatform

        return GkePlatform(_gke_settings(config))
    from modules.platform.eks import EksPlatform

    return EksPlatform(_eks_settings(config))


# Classes each cloud creates in every cluster (GKE's Compute Engine PD CSI classes; EKS keeps gp2,
# no longer the default since 1.30, so the platform makes gp3).
PLATFORM_STORAGE_CLASSES = {"minikube": {"standard"}, "gke": {"standard-rwo", "standard", "premium-rwo"},
                            "eks": {"gp2"}, "existing": set()}


def cluster_facts(config: StackConfig) -> ClusterFacts:
    """What the chosen cluster provides by itself; an existing cluster's StorageClass is the one
    its operator names in `kubernetes.storageClass`."""
    k = config.kubernetes
    classes = PLATFORM_STORAGE_CLASSES[config.platform] | ({k.storage_class} if k.storage_class else set())
    return ClusterFacts(
        load_balancers=k.load_balancers,
        storage_classes=frozenset(classes),
        default_storage_class=config.platform != "eks",
        # what `make up` builds into minikube's node (scripts/up.sh reads `mlops local-images`)
        local_images=frozenset(b.ref.rsplit(":", 1)[0] for b in local_builds(config)),
    )


def host_access(config: StackConfig) -> bool:
    """Pods may use the host (node-exporter) and objects may live in kube-system; GKE Autopilot
    refuses both."""
    return not (config.platform == "gke" and config.gcp is not None and config.gcp.autopilot)


def _in_cluster_settings(config: StackConfig) -> InClusterSettings:
    db, store, k = config.database, config.object_store, config.kubernetes
    return InClusterSettings(
        context=k.context,
        kubeconfig=k.kubeconfig,
        storage_class=k.storage_class,
        protect=config.protected,
        database_name=db.name,
        database_user=db.username,
        database=_in_cluster_database(config),
        extra_databases=extra_databases(config),
        store_image=store.image.ref,
        store_storage_gi=store.storage_gi,
        store_resources=store.resources.to_k8s(),
        buckets=store.buckets.model_dump(),
        monitoring_namespace=config.namespaces.monitoring,
        database_namespaces=[config.namespaces.workloads] if config.workloads.energy.enabled else [],
        store_replicas=store.replicas,
        store_external=ExternalStoreSettings(store.external.endpoint, store.external.region,
                                             store.external.credentials_secret) if store.external else None,
        offsite=_offsite(config),
    )


def _offsite(config: StackConfig) -> OffsiteSettings | None:
    o = config.database.backup.offsite
    if o is None:
        return None
    target = OffsiteTarget(o.bucket, o.prefix, o.region, o.endpoint,
                           pulumi.Output.secret(o.access_key_id.get_secret_value()),
                           pulumi.Output.secret(o.secret_access_key.get_secret_value()))
    return OffsiteSettings(o.image.ref, o.schedule, o.retention_days, target)


def _in_cluster_database(config: StackConfig) -> InClusterDatabase | ExternalDatabaseSettings:
    db = config.database
    if db.external is not None:
        e = db.external
        return ExternalDatabaseSettings(host=e.host, port=e.port, sslmode=e.sslmode, username=e.username,
                                        password=pulumi.Output.secret(e.password), client_image=db.image.ref)
    backup = ({"schedule": db.backup.schedule, "retention_days": db.backup.retention_days}
              if db.backup.enabled else None)
    return InClusterDatabase(
        image=db.image.ref, operator_version=db.operator_version, operator_resources=db.operator_resources.to_k8s(),
        instances=db.instances, synchronous=db.synchronous, anti_affinity=db.anti_affinity,
        storage_gi=db.storage_gi, resources=db.resources.to_k8s(), backup=backup)


def extra_databases(config: StackConfig) -> list[str]:
    """Databases beside MLflow's, same owner: MLflow's auth store, and the workloads' tables."""
    return [AUTH_DATABASE, *([WORKLOADS_DATABASE] if config.workloads.energy.enabled else [])]


def _labels(config: StackConfig) -> dict[str, str]:
    """Labels (GCP) / tags (AWS) on every cloud resource; GCP values are lowercase, at most 63."""
    stack = re.sub(r"[^a-z0-9_-]+", "-", pulumi.get_stack().lower())[:63]
    return {"part-of": "mlops-stack", "stack": stack, "environment": config.environment}


def _postgres_spec(config: StackConfig, version: str, size: str, storage_gi: int, ha: bool) -> ManagedPostgresSpec:
    db = config.database
    return ManagedPostgresSpec(
        database=db.name, username=db.username, extra_databases=tuple(extra_databases(config)),
        version=version, size=size,
        storage_gi=storage_gi, high_availability=ha,
        backup_days=db.backup.retention_days if db.backup.enabled else 1,
        point_in_time_recovery=db.backup.enabled,
    )


def _gke_settings(config: StackConfig) -> GkeSettings:
    from modules.platform.gke import GkeSettings

    g = config.gcp
    assert g is not None  # parse_stack_config requires the section on gke
    stack = pulumi.get_stack()  # name lengths were checked by load_stack_config
    return GkeSettings(
        project=g.project,
        region=g.region,
        location=g.location,
        autopilot=g.autopilot,
        release_channel=g.release_channel,
        kubernetes_version=config.kubernetes.version,
        private_endpoint=g.private_endpoint,
        master_cidr=g.network.master_cidr,
        authorized_networks=tuple(g.authorized_networks),
        subnet_cidr=g.network.subnet_cidr,
        pods_cidr=g.network.pods_cidr,
        services_cidr=g.network.services_cidr,
        node_pools=tuple(NodePoolSpec(name, p.machine_type, p.min_nodes, p.max_nodes, p.spot, p.disk_gi)
                         for name, p in g.node_pools),
        database=_postgres_spec(config, g.database.version, g.database.tier, g.database.storage_gi,
                                g.database.high_availability),
        database_edition=g.database.edition,
        # no `backups` bucket: Cloud SQL keeps its own automated backups and PITR logs, nothing would write it
        buckets={p: n for p, n in bucket_names(config, stack).items() if p != "backups"},
        registry=g.registry,
        noncurrent_version_days=g.noncurrent_version_days,
        prefix=name_prefix(g.name_prefix, stack),
        storage_class=config.kubernetes.storage_class,
        protect=config.protected,
        labels=_labels(config),
        dns=config.gateway.dns is not None,
        vertex=config.serving.engine == "vertex",
    )


def _eks_settings(config: StackConfig) -> EksSettings:
    from modules.platform.eks import EksSettings

    a = config.aws
    assert a is not None  # parse_stack_config requires the section on eks
    stack = pulumi.get_stack()  # name lengths were checked by load_stack_config
    return EksSettings(
        region=a.region,
        zones=tuple(f"{a.region}{letter}" for letter in a.zones),
        vpc_cidr=a.vpc_cidr,
        nat_per_zone=a.nat_gateways == "perZone",
        kubernetes_version=config.kubernetes.version,
        private_endpoint=a.private_endpoint,
        authorized_networks=tuple(a.authorized_networks),
        node_pools=tuple(NodePoolSpec(name, p.machine_type, p.min_nodes, p.max_nodes, p.spot, p.disk_gi, p.arm64)
                         for name, p in a.node_pools),
        database=_postgres_spec(config, a.database.engine_version, a.database.instance_class,
                                a.database.storage_gi, a.database.high_availability),
        max_storage_gi=a.database.max_storage_gi,
        client_image=config.database.image.ref,
        # no `backups` bucket: RDS keeps its own automated backups and snapshots, nothing would write it
        buckets={p: n for p, n in bucket_names(config, stack).items() if p != "backups"},
        registry=a.registry,
        registry_images=tuple(a.registry_images),
        log_retention_days=a.log_retention_days,
        noncurrent_version_days=a.noncurrent_version_days,
        prefix=name_prefix(a.name_prefix, stack),
        storage_class=config.kubernetes.storage_class or "gp3",
        protect=config.protected,
        tags=_labels(config),
        cluster_admins=tuple(a.cluster_admins),
        cluster_viewers=tuple(a.cluster_viewers),
        create_github_oidc_provider=config.ci.github is not None and config.ci.github.create_aws_oidc_provider,
    )
