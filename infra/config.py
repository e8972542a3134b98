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


class TlsConfig(Model):
    enabled: bool = Field(description="HTTPS on the gateway via cert-manager; default: not dev")
    issuer: Literal["selfsigned", "letsencrypt"] = Field(
        default="selfsigned", description="letsencrypt needs public DNS for gateway.domain and tls.email")
    email: str | None = Field(default=None, description="ACME account e-mail (letsencrypt)")
    cert_manager_version: str = Field(description="cert-manager Helm chart version")


class GatewayConfig(Model):
    """Istio ingress gateway: one entry point for models, MLflow and Grafana."""

    istio_version: str = Field(description="Istio Helm charts version (base, istiod, gateway)")
    domain: str = Field(description="hosts are mlflow.<domain>, grafana.<domain>; models under /seldon/ on any host")
    service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"] = Field(
        description="Service type of the ingress gateway (minikube: `minikube tunnel` serves LoadBalancer)")
    replicas: int = Field(ge=1, le=10)
    istiod_resources: Resources
    gateway_resources: Resources
    tls: TlsConfig


class SeldonConfig(Model):
    version: str = Field(description="seldon-core-operator chart version; 1.17.1 is the last Apache-2.0 release")
    mlserver_image_version: str = Field(description="seldonio/mlserver tag for MLflow models (V2 protocol)")
    manager_resources: Resources
    executor_resources: Resources


class ModelSourceConfig(Model):
    """Exactly one of: `uri` (a registry version's artifacts, served by a prepackaged runtime) or
    `image` (a custom model server image)."""

    uri: str | None = Field(default=None, description="s3://, gs:// or https:// artifact URI of a model version")
    runtime: Literal["mlflow", "sklearn"] = "mlflow"
    image: Image | None = None
    protocol: Literal["seldon", "v2"] = Field(default="seldon", description="protocol of a custom image")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSourceConfig:
        if (self.uri is None) == (self.image is None):
            raise ValueError("exactly one of uri (registry model) or image (custom server) is allowed")
        if self.uri is not None and not self.uri.startswith(("s3://", "gs://", "https://")):
            raise ValueError(f"uri {self.uri!r}: an s3://, gs:// or https:// URI is allowed "
                             "(resolve models:/name@alias to its artifact URI first)")
        return self


class ModelAutoscalingConfig(Model):
    min_replicas: int = Field(ge=1, le=100)
    max_replicas: int = Field(ge=1, le=100)
    target_cpu_percent: int = Field(default=70, ge=10, le=100)

    @model_validator(mode="after")
    def _bounds(self) -> ModelAutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas {self.min_replicas} is above maxReplicas {self.max_replicas}")
        return self


class ServedModelConfig(Model):
    source: ModelSourceConfig
    replicas: int = Field(default=1, ge=1, le=100)
    resources: Resources = Resources(cpu="100m", memory="256Mi", memory_limit="1Gi")
    autoscaling: ModelAutoscalingConfig | None = None
    candidate: ModelSourceConfig | None = Field(default=None, description="shadow or canary version")
    candidate_mode: Literal["shadow", "canary"] = "shadow"
    canary_percent: int = Field(default=10, ge=1, le=99)


class ServingConfig(Model):
    engine: Literal["seldon"] = Field(description="serving engine behind modules/serving/contract.py")
    seldon: SeldonConfig
    models: dict[str, ServedModelConfig] = Field(
        default_factory=dict, description="models to serve, by name (a DNS label)")

    @field_validator("models")
    @classmethod
    def _model_names(cls, v: dict[str, ServedModelConfig]) -> dict[str, ServedModelConfig]:
        bad = [name for name in v if not _DNS_LABEL.match(name)]
        if bad:
            raise ValueError(f"model names {bad}: DNS labels (lowercase letters, digits, '-') are allowed")
        return v


class MonitoringResources(Model):
    prometheus: Resources
    alertmanager: Resources
    grafana: Resources
    sidecar: Resources
    operator: Resources
    kube_state_metrics: Resources
    node_exporter: Resources
    small: Resources


class MonitoringConfig(Model):
    chart_version: str = Field(description="kube-prometheus-stack Helm chart version")
    retention: str = Field(description="Prometheus retention, e.g. '2d', '15d'")
    storage_gi: int | None = Field(default=None, ge=1, le=4096,
                                   description="Prometheus volume size; unset = no persistent volume (dev)")
    grafana_admin_password: SecretStr | None = Field(
        default=None, description="secret; generated (and exported as a secret) when unset")
    resources: MonitoringResources

    @field_validator("retention")
    @classmethod
    def _retention(cls, v: str) -> str:
        if not re.match(r"^\d+(h|d|w|y)$", v):
            raise ValueError("a duration such as '12h', '2d', '15d' or '4w' is allowed")
        return v


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
    gateway: GatewayConfig
    serving: ServingConfig
    monitoring: MonitoringConfig
    gcp: GcpConfig | None = None
    aws: AwsConfig | None = None

    @property
    def protected(self) -> bool:
        """Stateful resources refuse deletion outside `dev` unless the stack says otherwise."""
        return self.protect if self.protect is not None else self.environment != "dev"
