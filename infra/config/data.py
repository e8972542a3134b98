"""`database` and `objectStore`: the platform's PostgreSQL and S3-compatible storage."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from infra.config.backup import Offsite
from infra.config.base import BUCKET_NAME, Image, Model, Resources, cron_expression

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class Backup(Model):
    enabled: bool = Field(description="in-cluster: continuous WAL archive and base backups to the backups "
                                      "bucket (CloudNativePG, point-in-time recovery); gke/eks: point-in-time "
                                      "recovery and retentionDays of managed backups (else 1 day)")
    schedule: str = Field(description="cron schedule of the base backups, in timeZone (in-cluster only)")
    time_zone: str = Field(default="Etc/UTC", description="in-cluster: Etc/UTC only (CloudNativePG's "
                                                          "ScheduledBackup has no time zone)")
    retention_days: int = Field(ge=1, le=3650, description="recovery window: days of base backups and WALs "
                                                           "kept (RDS: at most 35)")
    offsite: Offsite | None = Field(default=None, description="in-cluster: copy the backups and the MLflow "
                                                              "artifacts to a second S3-compatible store")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        return cron_expression(v)


def _pg_identifier(v: str) -> str:
    if not re.match(r"^[a-z_][a-z0-9_]{0,62}$", v):
        raise ValueError("a lowercase PostgreSQL identifier ([a-z_][a-z0-9_]*) is allowed")
    return v


class ExternalDatabase(Model):
    """An existing PostgreSQL server (minikube/existing): the stack runs none of its own."""

    host: str = Field(min_length=1, description="host name or address the cluster's pods reach")
    port: int = Field(default=5432, ge=1, le=65535)
    sslmode: Literal["disable", "require", "verify-full"] = "require"
    username: str = Field(description="owner of database.name (and of the extra databases; with CREATEDB, "
                                      "the stack creates them, else the DBA must)")
    password: str = Field(min_length=1, description="secret: `pulumi config set --secret --path "
                                                    "database.external.password`")

    @field_validator("username")
    @classmethod
    def _identifier(cls, v: str) -> str:
        return _pg_identifier(v)


class DatabaseConfig(Model):
    """PostgreSQL for MLflow: CloudNativePG or an existing server on minikube/existing, managed in the clouds."""

    name: str = "mlruns"
    username: str = "mlflow"
    image: Image = Field(description="CloudNativePG operand image (a `system` image: it carries barman-cloud)")
    operator_version: str = Field(description="cloudnative-pg Helm chart version (operator 1.30 at 0.29.0)")
    operator_resources: Resources
    instances: int = Field(ge=1, le=9, description="in-cluster: PostgreSQL instances (1 primary + standbys)")
    synchronous: int = Field(ge=0, le=8, description="standbys a commit waits for (quorum); 0: asynchronous")
    anti_affinity: Literal["preferred", "required"] = Field(
        description="instances on different nodes: required (else pending) or preferred")
    storage_gi: int = Field(ge=1, le=16384)
    resources: Resources
    backup: Backup
    external: ExternalDatabase | None = Field(default=None, description="an existing PostgreSQL instead of the "
                                                                        "in-cluster one")

    @field_validator("name", "username")
    @classmethod
    def _identifier(cls, v: str) -> str:
        return _pg_identifier(v)

    @model_validator(mode="after")
    def _standbys(self) -> DatabaseConfig:
        if self.synchronous >= self.instances:
            raise ValueError(f"synchronous {self.synchronous} needs at least {self.synchronous + 1} instances "
                             f"(a primary and that many standbys); got instances {self.instances}: lower "
                             "database.synchronous or raise database.instances")
        return self


class Buckets(Model):
    """Buckets by purpose. Training data copies live in `artifacts`, through MLflow's proxied
    artifacts (docs/decisions/0023-dataset-copies.md): there is no `datasets` bucket."""

    artifacts: str
    backups: str

    @model_validator(mode="before")
    @classmethod
    def _no_datasets_bucket(cls, data: Any) -> Any:
        if isinstance(data, dict) and "datasets" in data:
            raise ValueError(f"datasets {data['datasets']!r}: the datasets bucket is gone — every training run's "
                             "data is copied once per digest into the artifacts bucket through MLflow (experiment "
                             "'datasets', docs/decisions/0023-dataset-copies.md); remove the key (allowed: "
                             "artifacts, backups)")
        return data

    @field_validator("*")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not BUCKET_NAME.match(v):
            raise ValueError("an S3 bucket name (3-63 lowercase letters, digits, '.', '-') is allowed")
        return v


class ExternalObjectStore(Model):
    """An existing S3 API (Ceph RGW, a NAS's S3 endpoint): the stack runs no SeaweedFS; the buckets
    (`objectStore.buckets`) must exist."""

    endpoint: str = Field(pattern=r"^https?://[^/\s]+/?$", description="S3 endpoint URL the cluster's pods reach")
    region: str = Field(default="us-east-1", min_length=1)
    credentials_secret: str = Field(description="Secret in the platform namespace with keys accessKeyId and "
                                                "secretAccessKey (kubectl create secret generic NAME "
                                                "--from-literal=accessKeyId=... --from-literal=secretAccessKey=...)")

    @field_validator("credentials_secret")
    @classmethod
    def _secret_name(cls, v: str) -> str:
        if not DNS_SUBDOMAIN.match(v):
            raise ValueError("a Kubernetes Secret name (lowercase letters, digits, '-', '.') is allowed")
        return v


class ObjectStoreConfig(Model):
    """S3-compatible storage: SeaweedFS in-cluster on minikube/existing, GCS/S3 in the clouds."""

    image: Image
    storage_gi: int = Field(ge=1, le=65536)
    resources: Resources
    buckets: Buckets
    replicas: int = Field(ge=1, le=9, description="in-cluster SeaweedFS: 1 = one all-in-one pod; 3 or more = "
                                                  "3 Raft masters, `replicas` volume servers (every chunk on two "
                                                  "of them), 2 filers and 2 S3 gateways (docs/decisions/0001)")
    external: ExternalObjectStore | None = Field(default=None, description="minikube/existing: an existing "
                                                                          "S3 service instead of SeaweedFS")

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, v: int) -> int:
        if v == 2:
            raise ValueError("1 (all-in-one) or at least 3 is allowed: Raft needs 3 masters and replication "
                             "001 a second volume server to survive the loss of one")
        return v
