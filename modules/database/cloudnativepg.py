"""PostgreSQL inside the cluster as a CloudNativePG `Cluster`: one primary and `instances - 1`
streaming replicas on different nodes, automatic failover, the operator's own PodDisruptionBudgets,
WAL archiving and base backups to the backups bucket (Barman Cloud), point-in-time recovery.

One code path for every in-cluster stack: dev runs one instance (no PDB, so a node drains), prod
three with a synchronous standby (docs/decisions/0002-in-cluster-postgresql.md). The operator is
installed by `cloudnative_pg_operator`; the Cluster waits for it (its CRDs and webhooks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from modules import kube
from modules.database.backup import ACCESS_KEY_ID, ACCESS_SECRET_KEY, BackupTarget
from modules.database.databases import DatabasesJobArgs, databases_job
from modules.platform.cloud import ready_value
from modules.platform.contract import Database, S3Credentials

CHART = "cloudnative-pg"
CHART_REPO = "https://cloudnative-pg.github.io/charts"
OPERATOR_NAMESPACE = "cnpg-system"
API_VERSION = "postgresql.cnpg.io/v1"
CLUSTER = "postgres"  # the Cluster's name: Services postgres-rw/-ro/-r, Barman server folder `postgres`
PORT = 5432
METRICS_PORT = 9187  # the instance manager's exporter (cnpg_* and the default monitoring queries)
STATUS_PORT = 8000  # the instance manager's status API, which the operator polls
CLUSTER_LABEL = "cnpg.io/cluster"  # on every instance pod the operator makes
TOPOLOGY_KEY = "kubernetes.io/hostname"


def cloudnative_pg_operator(name: str, version: str, resources: dict[str, Any],
                            opts: pulumi.ResourceOptions) -> k8s.helm.v3.Release:
    """The operator (cluster-wide, with its CRDs and webhooks) in its own namespace."""
    return k8s.helm.v3.Release(
        name, name="cnpg", chart=CHART, version=version, namespace=OPERATOR_NAMESPACE, create_namespace=True,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPO),
        atomic=True, timeout=600,
        values={"crds": {"create": True}, "config": {"clusterWide": True}, "resources": resources},
        opts=opts,
    )


@dataclass(frozen=True)
class CloudNativePgArgs:
    namespace: pulumi.Input[str]
    image: str  # a CloudNativePG operand image (`system` flavour: it carries barman-cloud)
    database: str
    username: str
    instances: int
    synchronous: int  # synchronous standbys a commit waits for; 0: asynchronous replication
    anti_affinity: Literal["preferred", "required"]
    storage_gi: int
    resources: dict[str, Any]
    client_namespaces: Sequence[pulumi.Input[str]]
    operator: pulumi.Resource  # the operator release: CRDs and webhooks exist once it is ready
    storage_class: str | None = None
    extra_databases: Sequence[str] = ()
    backup: BackupTarget | None = None
    backup_credentials: S3Credentials | None = None  # static keys for `backup`'s bucket
    protect: bool = False
    monitoring_namespace: pulumi.Input[str] | None = None  # may reach the metrics port


class CloudNativePg(pulumi.ComponentResource):
    """A CloudNativePG Cluster with generated owner credentials, backups and a metrics Service."""

    database: Database

    def __init__(self, name: str, args: CloudNativePgArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:database:CloudNativePg", name, None, opts)
        stateful = kube.child(self, protect=args.protect)
        password = random.RandomPassword(f"{name}-password", length=32, special=False, opts=stateful)
        credentials = k8s.core.v1.Secret(
            f"{name}-credentials",
            metadata=kube.metadata("postgres-credentials", args.namespace, "database"),
            type="kubernetes.io/basic-auth",  # initdb.secret and managed.roles take this type only
            string_data={"username": args.username, "password": password.result},
            opts=stateful,
        )
        secret_name = credentials.metadata.name
        after = [args.operator, credentials]
        if args.backup is not None:
            after.append(self._backup_secret(name, args))
        cluster = k8s.apiextensions.CustomResource(
            f"{name}-cluster", api_version=API_VERSION, kind="Cluster",
            metadata=kube.metadata(CLUSTER, args.namespace, "database"),
            spec=cluster_spec(args, secret_name),
            opts=kube.child(self, protect=args.protect, depends_on=after),
        )
        if args.backup is not None:
            k8s.apiextensions.CustomResource(
                f"{name}-scheduled-backup", api_version=API_VERSION, kind="ScheduledBackup",
                metadata=kube.metadata(f"{CLUSTER}-base", args.namespace, "backup"),
                spec={"schedule": args.backup.cnpg_schedule, "cluster": {"name": CLUSTER},
                      "backupOwnerReference": "self", "method": "barmanObjectStore", "immediate": True},
                opts=kube.child(self, depends_on=[cluster]),
            )
        self._metrics_service(name, args)
        self._ingress(name, args)
        host = pulumi.Output.concat(CLUSTER, "-rw.", args.namespace, ".svc.cluster.local")
        databases = ([databases_job(name, DatabasesJobArgs(
            namespace=args.namespace, image=args.image, host=f"{CLUSTER}-rw", port=PORT, database=args.database,
            databases=args.extra_databases, credentials_secret=secret_name, sslmode="require"),
            kube.child(self, depends_on=[cluster]))] if args.extra_databases else [])
        # consumers (MLflow's auth store, the workloads' tables) wait for the databases Job
        self.database = Database(
            host=ready_value(host, *databases), port=PORT, name=args.database, username=args.username,
            password=pulumi.Output.secret(password.result), sslmode="require",
            extra_databases=tuple(args.extra_databases),
        )
        self.register_outputs({"host": host, "cluster": cluster.metadata["name"]})

    def _backup_secret(self, name: str, args: CloudNativePgArgs) -> k8s.core.v1.Secret:
        assert args.backup is not None and args.backup_credentials is not None
        keys = args.backup_credentials
        return k8s.core.v1.Secret(
            f"{name}-backup-s3",
            metadata=kube.metadata(args.backup.credentials_secret, args.namespace, "backup"),
            type="Opaque",
            string_data={ACCESS_KEY_ID: keys.access_key_id, ACCESS_SECRET_KEY: keys.secret_access_key},
            opts=kube.child(self),
        )

    def _metrics_service(self, name: str, args: CloudNativePgArgs) -> None:
        """The instances' exporter behind a Service named like the old one, so the platform's
        ServiceMonitor (job="postgres") and the PostgresDown alert keep their target."""
        k8s.core.v1.Service(
            f"{name}-metrics",
            # labelled `postgres`: the ServiceMonitor selects that name and takes it as the job label
            metadata={"name": "postgres", "namespace": args.namespace, "labels": kube.labels("postgres", "database")},
            spec={"selector": {CLUSTER_LABEL: CLUSTER},
                  "ports": [{"name": "metrics", "port": METRICS_PORT, "target_port": "metrics"}]},
            opts=kube.child(self),
        )

    def _ingress(self, name: str, args: CloudNativePgArgs) -> None:
        """Clients and the other instances on 5432, the operator on the status port, Prometheus on metrics."""
        def namespace(ns: pulumi.Input[str]) -> dict[str, Any]:
            return {"namespace_selector": {"match_labels": {"kubernetes.io/metadata.name": ns}}}

        rules: list[dict[str, Any]] = [
            {"from_": [{"pod_selector": {}}, *(namespace(ns) for ns in args.client_namespaces)],
             "ports": [{"port": PORT, "protocol": "TCP"}]},
            {"from_": [{"pod_selector": {"match_labels": {CLUSTER_LABEL: CLUSTER}}}, namespace(OPERATOR_NAMESPACE)],
             "ports": [{"port": STATUS_PORT, "protocol": "TCP"}]},
        ]
        if args.monitoring_namespace is not None:
            rules.append({"from_": [namespace(args.monitoring_namespace)],
                          "ports": [{"port": METRICS_PORT, "protocol": "TCP"}]})
        k8s.networking.v1.NetworkPolicy(
            f"{name}-ingress",
            metadata=kube.metadata("postgres-ingress", args.namespace, "database"),
            spec={"pod_selector": {"match_labels": {CLUSTER_LABEL: CLUSTER}}, "policy_types": ["Ingress"],
                  "ingress": rules},
            opts=kube.child(self),
        )


def cluster_spec(args: CloudNativePgArgs, secret_name: pulumi.Input[str]) -> dict[str, Any]:
    """The Cluster's spec (CloudNativePG 1.30 field names, checked against its CRD by `mlops validate`)."""
    spec: dict[str, Any] = {
        "instances": args.instances,
        "imageName": args.image,
        # a single instance has no standby to fail over to: its PDB would only block node drains
        "enablePDB": args.instances > 1,
        "affinity": {"enablePodAntiAffinity": True, "topologyKey": TOPOLOGY_KEY,
                     "podAntiAffinityType": args.anti_affinity},
        "bootstrap": {"initdb": {"database": args.database, "owner": args.username, "secret": {"name": secret_name}}},
        # the owner creates the extra databases (the databases Job); its password stays the Secret's
        "managed": {"roles": [{"name": args.username, "ensure": "present", "login": True, "createdb": True,
                               "passwordSecret": {"name": secret_name}}]},
        "storage": {"size": f"{args.storage_gi}Gi",
                    **({"storageClass": args.storage_class} if args.storage_class else {})},
        "resources": args.resources,
        "postgresql": {"parameters": {}},
    }
    if args.synchronous:
        # quorum commit: a commit waits for `synchronous` standbys, any of them
        spec["postgresql"]["synchronous"] = {"method": "any", "number": args.synchronous,
                                             "dataDurability": "required"}
    if args.backup is not None:
        spec["postgresql"]["parameters"]["archive_timeout"] = args.backup.archive_timeout
        spec["backup"] = backup_spec(args.backup)
    return spec


def backup_spec(target: BackupTarget) -> dict[str, Any]:
    """`backup`: continuous WAL archive and base backups through barman-cloud (in-tree at 1.30)."""
    secret = target.credentials_secret
    store: dict[str, Any] = {
        "destinationPath": target.destination_path,
        "serverName": target.server_name,
        "s3Credentials": {"accessKeyId": {"name": secret, "key": ACCESS_KEY_ID},
                          "secretAccessKey": {"name": secret, "key": ACCESS_SECRET_KEY}},
        "wal": {"compression": target.wal_compression, "maxParallel": 2},
        "data": {"compression": target.data_compression},
    }
    if target.endpoint_url is not None:
        store["endpointURL"] = target.endpoint_url
    return {"retentionPolicy": target.retention_policy, "target": "prefer-standby", "barmanObjectStore": store}
