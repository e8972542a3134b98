"""The Job that creates the databases beside MLflow's (its auth store, the workloads' tables).

The same Job serves both database sources: the in-cluster CloudNativePG cluster (through its `-rw`
Service) and an external PostgreSQL (`database.external`). It runs on every `pulumi up` that
changes the list, because bootstrap SQL runs only once, on an empty cluster: a database added later
(the energy workload's) would never exist. `\\gexec` runs the CREATE only when the name is missing,
so on a server whose DBA made the databases (owner without CREATEDB) the Job only checks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from modules import kube

JOB = "postgres-databases"
CLIENT_UID = 26  # the `postgres` user of CloudNativePG's operand images (any non-root uid runs psql)

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
WAIT_SECONDS = 600  # a new CloudNativePG cluster initialises its primary first (initdb + bootstrap)


@dataclass(frozen=True)
class DatabasesJobArgs:
    namespace: pulumi.Input[str]
    image: str  # any image with psql and pg_isready
    host: pulumi.Input[str]
    port: int
    database: str  # connected to first; the owner's own database
    databases: Sequence[str]
    credentials_secret: pulumi.Input[str]  # keys `username` and `password`
    sslmode: str = "disable"


def databases_job(name: str, args: DatabasesJobArgs, opts: pulumi.ResourceOptions) -> k8s.batch.v1.Job:
    """A Job's template is immutable: a changed list (or image) replaces the Job, which then runs again."""
    secret = args.credentials_secret
    job = k8s.batch.v1.Job(
        f"{name}-databases",
        metadata=kube.metadata(JOB, args.namespace, "database"),
        spec={
            "backoff_limit": 4,
            "template": {
                "metadata": {"labels": kube.labels(JOB, "database")},
                "spec": {
                    "restart_policy": "OnFailure",
                    "automount_service_account_token": False,
                    "security_context": kube.pod_security(CLIENT_UID),
                    "containers": [{
                        "name": "psql",
                        "image": args.image,
                        "command": ["sh", "-c", _CREATE_DATABASES],
                        "env": [
                            kube.secret_env("PGUSER", secret, "username"),
                            kube.secret_env("PGPASSWORD", secret, "password"),
                            *kube.env({
                                "PGHOST": args.host, "PGPORT": str(args.port), "PGDATABASE": args.database,
                                "PGSSLMODE": args.sslmode, "DATABASES": " ".join(args.databases),
                                "WAIT_SECONDS": str(WAIT_SECONDS),
                            }),
                        ],
                        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                        "security_context": kube.CONTAINER_SECURITY,
                        "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
                    }],
                    "volumes": [{"name": "tmp", "empty_dir": {}}],
                },
            },
        },
        opts=pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(replace_on_changes=["spec"], delete_before_replace=True)),
    )
    # nothing calls the Job
    kube.ingress_policy(f"{name}-databases", args.namespace, "database", JOB, [],
                        pulumi.ResourceOptions(parent=opts.parent))
    return job
