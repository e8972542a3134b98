"""PostgreSQL inside the cluster, on the official `postgres` image (no Bitnami), with dumps to S3.

One StatefulSet with a PVC is enough for MLflow's metadata on a laptop or a small on-prem cluster;
the clouds use Cloud SQL / RDS instead (their platform modules). Backups are `pg_dump` per
database, uploaded to the backups bucket by a CronJob and pruned after `retention_days`. The
databases beside MLflow's (its auth store, the workloads' tables) are made by a Job on every
`pulumi up` that changes their list, not by the image's init scripts (empty data directory only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from modules import kube
from modules.platform.cloud import ready_value
from modules.platform.contract import Database, S3Credentials

POSTGRES_UID = 999  # the `postgres` user of the official Debian-based image
PORT = 5432
METRICS_PORT = 9187


@dataclass(frozen=True)
class PostgresBackupArgs:
    schedule: str
    time_zone: str
    retention_days: int
    image: str
    bucket: pulumi.Input[str]
    endpoint_url: pulumi.Input[str]
    credentials: S3Credentials


@dataclass(frozen=True)
class InClusterPostgresArgs:
    namespace: pulumi.Input[str]
    image: str
    database: str
    username: str
    storage_gi: int
    resources: dict[str, Any]
    client_namespaces: Sequence[pulumi.Input[str]]
    storage_class: str | None = None
    extra_databases: Sequence[str] = ()
    backup: PostgresBackupArgs | None = None
    protect: bool = False
    exporter_image: str | None = None  # postgres_exporter sidecar, scraped on port `metrics`
    monitoring_namespace: pulumi.Input[str] | None = None  # may reach the metrics port


# Runs on every `pulumi up` that changes the list (the Job is replaced then): the image's
# docker-entrypoint-initdb.d runs only on an empty data directory, so a database added later
# (the energy workload's) would never exist. `\gexec` runs the CREATE only when the name is missing.
_CREATE_DATABASES = """set -eu
deadline=$(($(date +%s) + WAIT_SECONDS))
until pg_isready --quiet; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "postgres at $PGHOST:$PGPORT accepts no connections within ${WAIT_SECONDS}s" >&2
    exit 1
  fi
  sleep 2
done
for db in $DATABASES; do
  psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 -v db="$db" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\\gexec
SQL
done
present=$(psql --no-psqlrc -v ON_ERROR_STOP=1 -tAc "SELECT datname FROM pg_database")
for db in $DATABASES; do
  if ! echo "$present" | grep -qxF "$db"; then
    echo "database $db is missing after CREATE DATABASE" >&2
    exit 1
  fi
done
echo "databases present: $DATABASES"
"""
WAIT_SECONDS = 300  # the StatefulSet is awaited first; this covers a restart in between

_BACKUP = """set -eu
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
for db in $DATABASES; do
  pg_dump --format=custom --host="$PGHOST" --username="$PGUSER" --dbname="$db" --file="/backup/$db.dump"
done
echo "$stamp" > /backup/STAMP
"""

_UPLOAD = """set -eu
stamp=$(cat /backup/STAMP)
aws s3 cp /backup "s3://$BUCKET/postgres/$stamp/" --recursive --endpoint-url "$S3_ENDPOINT"
cutoff=$(date -u -d "-$RETENTION_DAYS days" +%Y-%m-%dT%H%M%SZ)
aws s3 ls "s3://$BUCKET/postgres/" --endpoint-url "$S3_ENDPOINT" | awk '/PRE/ {print $2}' | tr -d / |
while read -r old; do
  if [ "$old" \\< "$cutoff" ]; then
    aws s3 rm "s3://$BUCKET/postgres/$old/" --recursive --endpoint-url "$S3_ENDPOINT"
  fi
done
"""


class InClusterPostgres(pulumi.ComponentResource):
    """A single-instance PostgreSQL with generated credentials, a PVC and optional dumps to S3."""

    database: Database

    def __init__(self, name: str, args: InClusterPostgresArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:database:InClusterPostgres", name, None, opts)
        stateful = kube.child(self, protect=args.protect)
        password = random.RandomPassword(f"{name}-password", length=32, special=False, opts=stateful)
        credentials = k8s.core.v1.Secret(
            f"{name}-credentials",
            metadata=kube.metadata("postgres-credentials", args.namespace, "database"),
            type="Opaque",
            string_data={"username": args.username, "password": password.result},
            opts=stateful,
        )
        secret_name = credentials.metadata.name
        statefulset = k8s.apps.v1.StatefulSet(
            f"{name}-postgres",
            metadata=kube.metadata("postgres", args.namespace, "database"),
            spec={
                "service_name": "postgres",
                "replicas": 1,
                "selector": {"match_labels": kube.selector("postgres")},
                "template": {
                    "metadata": {"labels": kube.labels("postgres", "database")},
                    "spec": {
                        "security_context": kube.pod_security(POSTGRES_UID),
                        "automount_service_account_token": False,
                        "containers": [self._container(args, secret_name)] + (
                            [self._exporter(args, secret_name)] if args.exporter_image else []),
                        "volumes": [
                            {"name": "run", "empty_dir": {}},
                            {"name": "tmp", "empty_dir": {}},
                        ],
                    },
                },
                "volume_claim_templates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "access_modes": ["ReadWriteOnce"],
                            "storage_class_name": args.storage_class,
                            "resources": {"requests": {"storage": f"{args.storage_gi}Gi"}},
                        },
                    }
                ],
            },
            opts=stateful,
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=kube.metadata("postgres", args.namespace, "database"),
            spec={
                "selector": kube.selector("postgres"),
                "ports": [{"name": "postgres", "port": PORT, "target_port": "postgres"}] + (
                    [{"name": "metrics", "port": METRICS_PORT, "target_port": "metrics"}]
                    if args.exporter_image else []),
            },
            opts=kube.child(self),
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-ingress",
            metadata=kube.metadata("postgres-ingress", args.namespace, "database"),
            spec={
                "pod_selector": {"match_labels": kube.selector("postgres")},
                "policy_types": ["Ingress"],
                "ingress": [
                    {
                        "from_": [{"pod_selector": {}}]
                        + [
                            {"namespace_selector": {"match_labels": {"kubernetes.io/metadata.name": ns}}}
                            for ns in args.client_namespaces
                        ],
                        "ports": [{"port": PORT, "protocol": "TCP"}],
                    },
                    *([{"from_": [{"namespace_selector": {"match_labels": {
                        "kubernetes.io/metadata.name": args.monitoring_namespace}}}],
                        "ports": [{"port": METRICS_PORT, "protocol": "TCP"}]}]
                      if args.monitoring_namespace and args.exporter_image else []),
                ],
            },
            opts=kube.child(self),
        )
        databases = ([self._databases(name, args, secret_name, service.metadata.name, [statefulset, service])]
                     if args.extra_databases else [])
        if args.backup is not None:
            self._backup(name, args, args.backup, secret_name, depends_on=[statefulset, *databases])

        # consumers (MLflow's auth store, the workloads' tables) wait for the databases Job
        host = ready_value(
            pulumi.Output.concat(service.metadata.name, ".", args.namespace, ".svc.cluster.local"), *databases)
        self.database = Database(
            host=host,
            port=PORT,
            name=args.database,
            username=args.username,
            password=pulumi.Output.secret(password.result),
            extra_databases=tuple(args.extra_databases),
        )
        self.register_outputs({"host": host, "statefulset": statefulset.metadata.name})

    @staticmethod
    def _container(args: InClusterPostgresArgs, secret_name: pulumi.Input[str]) -> dict[str, Any]:
        ready = ["pg_isready", "--host=127.0.0.1", f"--username={args.username}", f"--dbname={args.database}"]
        return {
            "name": "postgres",
            "image": args.image,
            "ports": [{"name": "postgres", "container_port": PORT}],
            "env": [
                kube.secret_env("POSTGRES_USER", secret_name, "username"),
                kube.secret_env("POSTGRES_PASSWORD", secret_name, "password"),
                *kube.env(
                    {
                        "POSTGRES_DB": args.database,
                        "PGDATA": "/var/lib/postgresql/data/pgdata",
                    }
                ),
            ],
            "resources": args.resources,
            "security_context": kube.CONTAINER_SECURITY,
            "readiness_probe": kube.exec_probe(ready, period=10),
            "liveness_probe": {**kube.exec_probe(ready, period=20, failures=6), "initial_delay_seconds": 30},
            "volume_mounts": [
                {"name": "data", "mount_path": "/var/lib/postgresql/data"},
                {"name": "run", "mount_path": "/var/run/postgresql"},
                {"name": "tmp", "mount_path": "/tmp"},
            ],
        }

    def _databases(self, name: str, args: InClusterPostgresArgs, secret_name: pulumi.Input[str],
                   service: pulumi.Input[str], after: list[pulumi.Resource]) -> k8s.batch.v1.Job:
        """The Job creating every database beside `database` that is missing. A Job's template is
        immutable: a changed list (or image) replaces the Job, which then runs again."""
        job = k8s.batch.v1.Job(
            f"{name}-databases",
            metadata=kube.metadata("postgres-databases", args.namespace, "database"),
            spec={
                "backoff_limit": 4,
                "template": {
                    "metadata": {"labels": kube.labels("postgres-databases", "database")},
                    "spec": {
                        "restart_policy": "OnFailure",
                        "automount_service_account_token": False,
                        "security_context": kube.pod_security(POSTGRES_UID),
                        "containers": [{
                            "name": "psql",
                            "image": args.image,
                            "command": ["sh", "-c", _CREATE_DATABASES],
                            "env": [
                                kube.secret_env("PGUSER", secret_name, "username"),
                                kube.secret_env("PGPASSWORD", secret_name, "password"),
                                *kube.env({
                                    "PGHOST": service, "PGPORT": str(PORT), "PGDATABASE": args.database,
                                    "DATABASES": " ".join(args.extra_databases),
                                    "WAIT_SECONDS": str(WAIT_SECONDS),
                                }),
                            ],
                            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                          "limits": {"memory": "128Mi"}},
                            "security_context": kube.CONTAINER_SECURITY,
                            "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
                        }],
                        "volumes": [{"name": "tmp", "empty_dir": {}}],
                    },
                },
            },
            opts=kube.child(self, depends_on=after, replace_on_changes=["spec"], delete_before_replace=True),
        )
        # nothing calls the Job; it reaches PostgreSQL through postgres-ingress (same namespace)
        kube.ingress_policy(f"{name}-databases", args.namespace, "database", "postgres-databases", [],
                            kube.child(self))
        return job

    @staticmethod
    def _exporter(args: InClusterPostgresArgs, secret_name: pulumi.Input[str]) -> dict[str, Any]:
        return {
            "name": "metrics",
            "image": args.exporter_image,
            "ports": [{"name": "metrics", "container_port": METRICS_PORT}],
            "env": [
                kube.secret_env("DATA_SOURCE_USER", secret_name, "username"),
                kube.secret_env("DATA_SOURCE_PASS", secret_name, "password"),
                *kube.env({"DATA_SOURCE_URI": f"127.0.0.1:{PORT}/{args.database}?sslmode=disable"}),
            ],
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
            "security_context": kube.CONTAINER_SECURITY,
            "readiness_probe": kube.http_probe("/metrics", "metrics", period=30),
            "liveness_probe": kube.http_probe("/metrics", "metrics", period=60, failures=5),
        }

    def _backup(
        self,
        name: str,
        args: InClusterPostgresArgs,
        backup: PostgresBackupArgs,
        secret_name: pulumi.Input[str],
        depends_on: list[pulumi.Resource],
    ) -> None:
        s3 = k8s.core.v1.Secret(
            f"{name}-backup-s3",
            metadata=kube.metadata("postgres-backup-s3", args.namespace, "backup"),
            type="Opaque",
            string_data={
                "AWS_ACCESS_KEY_ID": backup.credentials.access_key_id,
                "AWS_SECRET_ACCESS_KEY": backup.credentials.secret_access_key,
            },
            opts=kube.child(self),
        )
        s3_name = s3.metadata.name
        databases = " ".join([args.database, *args.extra_databases])
        scratch = [{"name": "backup", "mount_path": "/backup"}, {"name": "tmp", "mount_path": "/tmp"}]
        dump = {
            "name": "dump",
            "image": args.image,
            "command": ["sh", "-c", _BACKUP],
            "env": [
                kube.secret_env("PGUSER", secret_name, "username"),
                kube.secret_env("PGPASSWORD", secret_name, "password"),
                *kube.env({"PGHOST": "postgres", "DATABASES": databases}),
            ],
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
            "security_context": kube.CONTAINER_SECURITY,
            "volume_mounts": scratch,
        }
        upload = {
            "name": "upload",
            "image": backup.image,
            "command": ["sh", "-c", _UPLOAD],
            "env": [
                {"name": k, "value_from": {"secret_key_ref": {"name": s3_name, "key": k}}}
                for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            ]
            + kube.env(
                {
                    "BUCKET": backup.bucket,
                    "S3_ENDPOINT": backup.endpoint_url,
                    "RETENTION_DAYS": str(backup.retention_days),
                    "HOME": "/tmp",
                    "AWS_DEFAULT_REGION": "us-east-1",
                }
            ),
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            "security_context": kube.CONTAINER_SECURITY,
            "volume_mounts": scratch,
        }
        k8s.batch.v1.CronJob(
            f"{name}-backup",
            metadata=kube.metadata("postgres-backup", args.namespace, "backup"),
            spec={
                "schedule": backup.schedule,
                "time_zone": backup.time_zone,
                "concurrency_policy": "Forbid",
                "successful_jobs_history_limit": 3,
                "failed_jobs_history_limit": 3,
                "job_template": {
                    "spec": {
                        "backoff_limit": 2,
                        "template": {
                            "metadata": {"labels": kube.labels("postgres-backup", "backup")},
                            "spec": {
                                "restart_policy": "OnFailure",
                                "automount_service_account_token": False,
                                "security_context": kube.pod_security(POSTGRES_UID),
                                "init_containers": [dump],
                                "containers": [upload],
                                "volumes": [
                                    {"name": "backup", "empty_dir": {}},
                                    {"name": "tmp", "empty_dir": {}},
                                ],
                            },
                        },
                    }
                },
            },
            opts=kube.child(self, depends_on=depends_on),
        )
