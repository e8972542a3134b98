"""`database` and `objectStore`: the platform's PostgreSQL and S3-compatible storage."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from infra.config.base import BUCKET_NAME, Image, Model, Resources, cron_expression


class Backup(Model):
    enabled: bool = Field(description="in-cluster: nightly dumps to the backups bucket; gke/eks: point-in-time "
                                      "recovery and retentionDays of managed backups (else 1 day)")
    schedule: str = Field(description="cron schedule, in timeZone (in-cluster only)")
    time_zone: str = "Etc/UTC"
    retention_days: int = Field(ge=1, le=3650, description="days of backups kept (RDS: at most 35)")
    image: Image = Field(description="image with the S3 client that uploads the dump")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        return cron_expression(v)


class DatabaseConfig(Model):
    """PostgreSQL for MLflow: in-cluster on minikube/existing, managed in the clouds."""

    name: str = "mlruns"
    username: str = "mlflow"
    image: Image
    storage_gi: int = Field(ge=1, le=16384)
    resources: Resources
    backup: Backup
    exporter_image: Image = Field(description="postgres_exporter sidecar (in-cluster database metrics)")

    @field_validator("name", "username")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not re.match(r"^[a-z_][a-z0-9_]{0,62}$", v):
            raise ValueError("a lowercase PostgreSQL identifier ([a-z_][a-z0-9_]*) is allowed")
        return v


class Buckets(Model):
    artifacts: str
    datasets: str
    backups: str

    @field_validator("*")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not BUCKET_NAME.match(v):
            raise ValueError("an S3 bucket name (3-63 lowercase letters, digits, '.', '-') is allowed")
        return v


class ObjectStoreConfig(Model):
    """S3-compatible storage: SeaweedFS in-cluster on minikube/existing, GCS/S3 in the clouds."""

    image: Image
    storage_gi: int = Field(ge=1, le=65536)
    resources: Resources
    buckets: Buckets
