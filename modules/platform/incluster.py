"""The `minikube` and `existing` targets: a cluster reached by kubeconfig context, data inside it.

Both targets are the same code: they differ only in defaults (context, StorageClass, sizes), which
live in `infra/defaults.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from modules.database.backup import BackupTarget
from modules.database.offsite import OffsiteCopy, OffsiteCopyArgs, OffsiteTarget
from modules.database.cloudnativepg import CLUSTER, CloudNativePg, CloudNativePgArgs, cloudnative_pg_operator
from modules.database.external import ExternalPostgres, ExternalPostgresArgs
from modules.objectstore.external import ExternalS3, ExternalS3Args, ExternalStoreSettings
from modules.objectstore.seaweedfs import S3Identity, SeaweedFs, SeaweedFsArgs
from modules.platform.contract import BucketAccess, Cluster, Database, ObjectStore, Platform

BACKUP_CLIENT = "postgres-backup"
OFFSITE_CLIENT = "offsite-copy"  # also the CronJob's name, which `mlops restore --from-offsite` looks for


@dataclass(frozen=True)
class InClusterDatabase:
    """CloudNativePG: the operator chart and the Cluster's shape."""

    image: str
    operator_version: str
    operator_resources: dict[str, Any]
    instances: int
    synchronous: int
    anti_affinity: Literal["preferred", "required"]
    storage_gi: int
    resources: dict[str, Any]
    backup: dict[str, Any] | None  # schedule (UTC), retention_days


@dataclass(frozen=True)
class OffsiteSettings:
    """The off-cluster copy of the backups and artifact buckets (modules/database/offsite.py)."""

    image: str
    schedule: str
    retention_days: int
    target: OffsiteTarget


@dataclass(frozen=True)
class ExternalDatabaseSettings:
    host: str
    port: int
    sslmode: Literal["disable", "require", "verify-full"]
    username: str
    password: pulumi.Input[str]
    client_image: str


@dataclass(frozen=True)
class InClusterSettings:
    context: str | None
    kubeconfig: str | None
    storage_class: str | None
    protect: bool
    database_name: str
    database_user: str
    database: InClusterDatabase | ExternalDatabaseSettings
    extra_databases: Sequence[str]
    store_image: str
    store_storage_gi: int
    store_resources: dict[str, Any]
    buckets: Mapping[str, str]  # purpose -> bucket name
    monitoring_namespace: str | None = None  # may scrape the data services' metrics ports
    database_namespaces: Sequence[str] = ()  # reach PostgreSQL without bucket access (workload Jobs)
    store_replicas: int = 1  # SeaweedFS: 1 all-in-one pod, ≥ 3 the replicated roles
    store_external: ExternalStoreSettings | None = None  # an existing S3 API instead of SeaweedFS
    offsite: OffsiteSettings | None = None  # a second S3 store the backups and artifacts are copied to


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
        identities = [S3Identity(c.client, [s.buckets[b] for b in c.buckets], c.write, c.prefix) for c in clients]
        if isinstance(s.database, InClusterDatabase) and s.database.backup is not None:
            identities.append(S3Identity(BACKUP_CLIENT, [s.buckets["backups"]]))
        copied = [s.buckets["backups"], s.buckets["artifacts"]]
        if s.offsite is not None:
            identities.append(S3Identity(OFFSITE_CLIENT, copied, write=False))
        store = self._store(s, namespace, identities, client_namespaces, opts)
        database = self._database(s, namespace, store, [*client_namespaces, *s.database_namespaces], opts)
        if s.offsite is not None:
            o = s.offsite
            OffsiteCopy(OFFSITE_CLIENT, OffsiteCopyArgs(
                namespace=namespace, image=o.image, schedule=o.schedule, retention_days=o.retention_days,
                source_endpoint=store.endpoint_url, source_credentials=store.credentials[OFFSITE_CLIENT],
                buckets=copied, target=o.target), opts=opts)
        object_store = ObjectStore(
            scheme="s3",
            buckets=dict(s.buckets),
            endpoint_url=store.endpoint_url,
            region=s.store_external.region if s.store_external else "us-east-1",
            credentials={c.client: store.credentials[c.client] for c in clients},
            ready=store.buckets_job,
        )
        return database, object_store

    @staticmethod
    def _store(s: InClusterSettings, namespace: pulumi.Output[str], identities: Sequence[S3Identity],
               client_namespaces: Sequence[pulumi.Input[str]], opts: pulumi.ResourceOptions) -> SeaweedFs | ExternalS3:
        if s.store_external is not None:
            e = s.store_external
            return ExternalS3("objectstore", ExternalS3Args(namespace, e.endpoint, e.region, e.credentials_secret,
                                                            [i.name for i in identities]), opts=opts)
        return SeaweedFs(
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
                replicas=s.store_replicas,
            ),
            opts=opts,
        )

    def _database(self, s: InClusterSettings, namespace: pulumi.Output[str], store: SeaweedFs | ExternalS3,
                  client_namespaces: Sequence[pulumi.Input[str]], opts: pulumi.ResourceOptions) -> Database:
        """CloudNativePG in the platform's namespace, or the credentials and databases Job of an external server."""
        db = s.database
        if isinstance(db, ExternalDatabaseSettings):
            return ExternalPostgres("database", ExternalPostgresArgs(
                namespace=namespace, host=db.host, port=db.port, sslmode=db.sslmode, database=s.database_name,
                username=db.username, password=db.password, client_image=db.client_image,
                extra_databases=s.extra_databases), opts=opts).database
        operator = cloudnative_pg_operator("cloudnative-pg", db.operator_version, db.operator_resources, opts)
        target = None if db.backup is None else BackupTarget(
            bucket=s.buckets["backups"], server_name=CLUSTER, endpoint_url=store.endpoint_url, **db.backup)
        return CloudNativePg("database", CloudNativePgArgs(
            namespace=namespace, image=db.image, database=s.database_name, username=s.database_user,
            instances=db.instances, synchronous=db.synchronous, anti_affinity=db.anti_affinity,
            storage_gi=db.storage_gi, resources=db.resources, client_namespaces=client_namespaces,
            operator=operator, storage_class=s.storage_class, extra_databases=s.extra_databases,
            backup=target, backup_credentials=store.credentials[BACKUP_CLIENT] if target else None,
            protect=s.protect, monitoring_namespace=s.monitoring_namespace), opts=opts).database

    @property
    def metrics_services(self) -> Sequence[str]:
        store = () if self.settings.store_external else ("seaweedfs",)
        return (*store, "postgres") if isinstance(self.settings.database, InClusterDatabase) else store

    def identity_annotations(self, access: BucketAccess) -> Mapping[str, pulumi.Input[str]]:
        return {}  # in-cluster clients use the static keys of `ObjectStore.credentials`
