"""The `minikube` and `existing` targets: a cluster reached by kubeconfig context, data inside it.

Both targets are the same code: they differ only in defaults (context, StorageClass, sizes), which
live in `infra/defaults.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules.database.postgres import InClusterPostgres, InClusterPostgresArgs, PostgresBackupArgs
from modules.objectstore.seaweedfs import S3Identity, SeaweedFs, SeaweedFsArgs
from modules.platform.contract import BucketAccess, Cluster, Database, ObjectStore, Platform

BACKUP_CLIENT = "postgres-backup"


@dataclass(frozen=True)
class InClusterSettings:
    context: str | None
    kubeconfig: str | None
    storage_class: str | None
    protect: bool
    database_name: str
    database_user: str
    database_image: str
    database_storage_gi: int
    database_resources: dict[str, Any]
    extra_databases: Sequence[str]
    backup: dict[str, Any] | None  # schedule, time_zone, retention_days, image
    store_image: str
    store_storage_gi: int
    store_resources: dict[str, Any]
    buckets: Mapping[str, str]  # purpose -> bucket name
    exporter_image: str | None = None
    monitoring_namespace: str | None = None  # may scrape the data services' metrics ports
    database_namespaces: Sequence[str] = ()  # reach PostgreSQL without bucket access (workload Jobs)


class InClusterPlatform(Platform):
    def __init__(self, name: str, settings: InClusterSettings):
        self.name = name
        self.settings = settings

    def cluster(self) -> Cluster:
        provider = k8s.Provider(
            "k8s",
            context=self.settings.context,
            kubeconfig=self.settings.kubeconfig,
            enable_server_side_apply=True,
        )
        return Cluster(provider=provider, name=self.settings.context or "current-context",
                       storage_class=self.settings.storage_class)

    def data_services(
        self, cluster: Cluster, namespace: pulumi.Output[str], clients: Sequence[BucketAccess]
    ) -> tuple[Database, ObjectStore]:
        s = self.settings
        opts = pulumi.ResourceOptions(providers=[cluster.provider])
        client_namespaces = [c.namespace for c in clients]
        identities = [S3Identity(c.client, [s.buckets[b] for b in c.buckets], c.write) for c in clients]
        if s.backup is not None:
            identities.append(S3Identity(BACKUP_CLIENT, [s.buckets["backups"]]))
        store = SeaweedFs(
            "objectstore",
            SeaweedFsArgs(
                namespace=namespace,
                image=s.store_image,
                storage_gi=s.store_storage_gi,
                resources=s.store_resources,
                buckets=list(s.buckets.values()),
                identities=identities,
                client_namespaces=client_namespaces,
                storage_class=s.storage_class,
                protect=s.protect,
                monitoring_namespace=s.monitoring_namespace,
            ),
            opts=opts,
        )
        backup = None
        if s.backup is not None:
            backup = PostgresBackupArgs(
                bucket=s.buckets["backups"],
                endpoint_url=store.endpoint_url,
                credentials=store.credentials[BACKUP_CLIENT],
                **s.backup,
            )
        postgres = InClusterPostgres(
            "database",
            InClusterPostgresArgs(
                namespace=namespace,
                image=s.database_image,
                database=s.database_name,
                username=s.database_user,
                storage_gi=s.database_storage_gi,
                resources=s.database_resources,
                client_namespaces=[*client_namespaces, *s.database_namespaces],
                storage_class=s.storage_class,
                extra_databases=s.extra_databases,
                backup=backup,
                protect=s.protect,
                exporter_image=s.exporter_image,
                monitoring_namespace=s.monitoring_namespace,
            ),
            opts=opts,
        )
        object_store = ObjectStore(
            scheme="s3",
            buckets=dict(s.buckets),
            endpoint_url=store.endpoint_url,
            credentials={c.client: store.credentials[c.client] for c in clients},
            ready=store.buckets_job,
        )
        return postgres.database, object_store

    @property
    def metrics_services(self) -> Sequence[str]:
        return ("seaweedfs", "postgres")

    def identity_annotations(self, access: BucketAccess) -> Mapping[str, pulumi.Input[str]]:
        return {}  # in-cluster clients use the static keys of `ObjectStore.credentials`
