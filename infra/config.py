"""The stack's typed configuration: one pydantic model, platform/environment defaults, readable errors.

A stack file only states what differs from the defaults of its platform and environment
(`defaults.py`). Everything is parsed once, before any resource is declared, into frozen objects;
components receive the parts they need, never the whole config.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.alias_generators import to_camel

Platform = Literal["minikube", "existing", "gke", "eks"]
Environment = Literal["dev", "staging", "prod"]

_CPU = re.compile(r"^(\d+(\.\d+)?|\d+m)$")
_MEMORY = re.compile(r"^\d+(Ki|Mi|Gi|Ti)$")
_CRON = re.compile(r"^(\S+\s+){4}\S+$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class Model(BaseModel):
    """Base for every section: camelCase keys as in Pulumi stack files, unknown keys rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


def cpu_millicores(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else int(float(quantity) * 1000)


def memory_mib(quantity: str) -> int:
    factor = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}[quantity[-2:]]
    return int(int(quantity[:-2]) * factor)


class Resources(Model):
    """Container requests and limits as Kubernetes quantities ("250m", "512Mi")."""

    cpu: str = Field(description="CPU request")
    memory: str = Field(description="memory request")
    cpu_limit: str | None = Field(default=None, description="CPU limit; unset = no CPU throttling")
    memory_limit: str = Field(description="memory limit")

    @field_validator("cpu", "cpu_limit")
    @classmethod
    def _cpu(cls, v: str | None) -> str | None:
        if v is not None and not _CPU.match(v):
            raise ValueError("a CPU quantity such as '250m' or '1' is allowed")
        return v

    @field_validator("memory", "memory_limit")
    @classmethod
    def _memory(cls, v: str) -> str:
        if not _MEMORY.match(v):
            raise ValueError("a memory quantity such as '256Mi' or '1Gi' is allowed")
        return v

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> Resources:
        if memory_mib(self.memory_limit) < memory_mib(self.memory):
            raise ValueError(f"memoryLimit {self.memory_limit} is below memory {self.memory}")
        if self.cpu_limit and cpu_millicores(self.cpu_limit) < cpu_millicores(self.cpu):
            raise ValueError(f"cpuLimit {self.cpu_limit} is below cpu {self.cpu}")
        return self

    def to_k8s(self) -> dict:
        limits = {"memory": self.memory_limit}
        if self.cpu_limit:
            limits["cpu"] = self.cpu_limit
        return {"requests": {"cpu": self.cpu, "memory": self.memory}, "limits": limits}


class Image(Model):
    """A container image pinned by tag (never `latest`), optionally by digest too."""

    repository: str
    tag: str
    digest: str | None = None

    @field_validator("tag")
    @classmethod
    def _not_latest(cls, v: str) -> str:
        if v in ("", "latest") or not re.match(r"^[\w][\w.\-]{0,127}$", v):
            raise ValueError("a pinned version tag is allowed (not 'latest')")
        return v

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^sha256:[0-9a-f]{64}$", v):
            raise ValueError("'sha256:' followed by 64 hex digits is allowed")
        return v

    @property
    def ref(self) -> str:
        ref = f"{self.repository}:{self.tag}"
        return f"{ref}@{self.digest}" if self.digest else ref


class KubernetesConfig(Model):
    context: str | None = Field(default=None, description="kubeconfig context (minikube/existing)")
    kubeconfig: str | None = Field(default=None, description="kubeconfig path; default ~/.kube/config")
    version: str = Field(description="Kubernetes minor version the manifests are validated against")
    storage_class: str | None = Field(default=None, description="StorageClass for PVCs; unset = cluster default")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not re.match(r"^1\.(2[5-9]|3[0-7])$", v):
            raise ValueError("a Kubernetes minor version from '1.25' to '1.37' is allowed")
        return v


class Namespaces(Model):
    platform: str
    mlflow: str
    serving: str
    monitoring: str

    @field_validator("*")
    @classmethod
    def _label(cls, v: str) -> str:
        if not _DNS_LABEL.match(v):
            raise ValueError("a DNS label (lowercase letters, digits, '-', at most 63) is allowed")
        return v


class Backup(Model):
    enabled: bool
    schedule: str = Field(description="cron schedule, in timeZone")
    time_zone: str = "Etc/UTC"
    retention_days: int = Field(ge=1, le=3650)
    image: Image = Field(description="image with the S3 client that uploads the dump")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if not _CRON.match(v):
            raise ValueError("a 5-field cron expression such as '0 2 * * *' is allowed")
        return v


class DatabaseConfig(Model):
    """PostgreSQL for MLflow: in-cluster on minikube/existing, managed in the clouds."""

    name: str = "mlruns"
    username: str = "mlflow"
    image: Image
    storage_gi: int = Field(ge=1, le=16384)
    resources: Resources
    backup: Backup

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
        if not _BUCKET.match(v):
            raise ValueError("an S3 bucket name (3-63 lowercase letters, digits, '.', '-') is allowed")
        return v


class ObjectStoreConfig(Model):
    """S3-compatible storage: SeaweedFS in-cluster on minikube/existing, GCS/S3 in the clouds."""

    image: Image
    storage_gi: int = Field(ge=1, le=65536)
    resources: Resources
    buckets: Buckets


class MlflowConfig(Model):
    image: Image
    replicas: int = Field(ge=1, le=20)
    workers: int = Field(ge=1, le=16, description="uvicorn workers per pod")
    resources: Resources
    admin_username: str = "admin"
    admin_password: SecretStr | None = Field(
        default=None, description="secret; generated (and exported as a secret) when unset"
    )
    default_permission: Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"] = "READ"


class GcpConfig(Model):
    """Place for the GKE platform (filled in by the GKE/EKS issue)."""

    project: str
    region: str = "europe-west1"


class AwsConfig(Model):
    """Place for the EKS platform (filled in by the GKE/EKS issue)."""

    region: str = "eu-west-1"


class StackConfig(Model):
    platform: Platform
    environment: Environment
    protect: bool | None = Field(default=None, description="protect stateful resources; default: not dev")
    kubernetes: KubernetesConfig
    namespaces: Namespaces
    database: DatabaseConfig
    object_store: ObjectStoreConfig
    mlflow: MlflowConfig
    gcp: GcpConfig | None = None
    aws: AwsConfig | None = None

    @property
    def protected(self) -> bool:
        """Stateful resources refuse deletion outside `dev` unless the stack says otherwise."""
        return self.protect if self.protect is not None else self.environment != "dev"
