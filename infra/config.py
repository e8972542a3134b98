"""The stack's typed configuration: one pydantic model, platform/environment defaults, readable errors.

A stack file only states what differs from the defaults of its platform and environment
(`defaults.py`). Everything is parsed once, before any resource is declared, into frozen objects;
components receive the parts they need, never the whole config.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.alias_generators import to_camel

from infra.config_images import ImagesConfig

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
    def version(self) -> str:
        """What follows `repository:` in a reference: the tag, and the digest when pinned."""
        return f"{self.tag}@{self.digest}" if self.digest else self.tag

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.version}"


class KubernetesConfig(Model):
    context: str | None = Field(default=None, description="kubeconfig context (minikube/existing)")
    kubeconfig: str | None = Field(default=None, description="kubeconfig path; default ~/.kube/config")
    version: str = Field(description="Kubernetes minor version the manifests are validated against")
    storage_class: str | None = Field(default=None, description="StorageClass for PVCs; unset = cluster default")
    load_balancers: bool = Field(description="the cluster gives LoadBalancer Services an address (a cloud, "
                                             "MetalLB, kube-vip…); without one the gateway must not be a LoadBalancer")

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
    workloads: str = Field(description="training and batch Jobs of the demo workloads")

    @field_validator("*")
    @classmethod
    def _label(cls, v: str) -> str:
        if not _DNS_LABEL.match(v):
            raise ValueError("a DNS label (lowercase letters, digits, '-', at most 63) is allowed")
        return v


class Backup(Model):
    enabled: bool = Field(description="in-cluster: nightly dumps to the backups bucket; gke/eks: point-in-time "
                                      "recovery and retentionDays of managed backups (else 1 day)")
    schedule: str = Field(description="cron schedule, in timeZone (in-cluster only)")
    time_zone: str = "Etc/UTC"
    retention_days: int = Field(ge=1, le=3650, description="days of backups kept (RDS: at most 35)")
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
        description="Service type of the ingress gateway: ClusterIP (minikube: `make up` port-forwards it), "
                    "NodePort (existing: 30080/30443), LoadBalancer (gke/eks; needs kubernetes.loadBalancers)")
    replicas: int = Field(ge=1, le=10)
    istiod_resources: Resources
    gateway_resources: Resources
    tls: TlsConfig


class SeldonConfig(Model):
    version: str = Field(description="seldon-core-operator chart version; 1.17.1 is the last Apache-2.0 release")
    mlserver_image: Image = Field(description="MLServer image for registry models (V2 protocol), built from "
                                              "modules/serving/mlserver-image: our MLflow and scikit-learn pins")
    mlflow_runtime: str = Field(pattern=r"^[A-Za-z_][\w.]*\.[A-Za-z_]\w*$",
                                description="MLServer class for registry models: mlops_mlserver.MLflowRuntime "
                                            "(in the project's image: 400 for inputs the signature rejects) or "
                                            "the stock mlserver_mlflow.MLflowRuntime")
    manager_resources: Resources
    executor_resources: Resources


class ModelSourceConfig(Model):
    """Exactly one of: `uri` (a registry version's artifacts, served by a prepackaged runtime) or
    `image` (a custom model server image)."""

    uri: str | None = Field(default=None, description="s3://, gs:// or https:// artifact URI of a model version")
    runtime: Literal["mlflow"] = Field(default="mlflow", description="registry models run on the project's "
                                       "MLServer image with its MLflow runtime")
    image: Image | None = None
    protocol: Literal["seldon", "v2"] = Field(default="seldon", description="protocol of a custom image")

    @field_validator("runtime", mode="before")
    @classmethod
    def _runtime(cls, v: object) -> object:
        if v == "sklearn":
            raise ValueError("'sklearn' is not served: Seldon's SKLEARN_SERVER image (seldonio/mlserver:1.3.5-sklearn) "
                             "loads .joblib/.pkl files, and MLflow 3 saves scikit-learn models as skops; use "
                             "'mlflow' (the default), which loads any MLflow model flavour")
        return v

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
    runbook_base_url: str | None = Field(
        default=None, pattern=r"^https?://\S+$",
        description="where alerts' runbook links point, e.g. https://github.com/<org>/<repo>/blob/main; "
                    "unset = relative docs/runbooks.md#<alert>")
    resources: MonitoringResources

    @field_validator("retention")
    @classmethod
    def _retention(cls, v: str) -> str:
        if not re.match(r"^\d+(h|d|w|y)$", v):
            raise ValueError("a duration such as '12h', '2d', '15d' or '4w' is allowed")
        return v


def _cron(v: str) -> str:
    if not _CRON.match(v):
        raise ValueError("a cron expression with 5 fields such as '0 11 * * *' is allowed")
    return v


class EnergyWorkloadConfig(Model):
    """Next-day consumption forecasts: training Job, daily prod/pre forecasts, daily MAPE monitor."""

    enabled: bool = Field(default=False, description="deploy the energy workload")
    image: Image = Field(description="image built from workloads/energy/Dockerfile (CI tags it with the git SHA)")
    schedule: str = Field(description="cron of the daily forecasts (energy-prod / energy-pre)")
    monitor_schedule: str = Field(description="cron of the daily MAPE monitor")
    demo_data: bool = Field(description="the training Job first writes synthetic readings")
    latitude: float | None = Field(default=None, ge=-90, le=90, description="site, for Open-Meteo forecasts")
    longitude: float | None = Field(default=None, ge=-180, le=180, description="site, for Open-Meteo forecasts")

    @field_validator("schedule", "monitor_schedule")
    @classmethod
    def _schedules(cls, v: str) -> str:
        return _cron(v)


class NeoWorkloadConfig(Model):
    """Hazardous-NEO classifier: a training Job registering `NEOs` (serve it from `serving.models`)."""

    enabled: bool = Field(default=False, description="deploy the neo training Job")
    image: Image = Field(description="image built from workloads/neo/Dockerfile (CI tags it with the git SHA)")
    data_url: str | None = Field(default=None, description="http(s):// URL of nasa.csv the Job downloads; "
                                                           "required when enabled")

    @model_validator(mode="after")
    def _data(self) -> NeoWorkloadConfig:
        if self.enabled and self.data_url is None:
            raise ValueError("dataUrl is required when enabled: an http(s):// URL of nasa.csv")
        if self.data_url is not None and not self.data_url.startswith(("http://", "https://")):
            raise ValueError(f"dataUrl {self.data_url!r}: an http(s):// URL the Job can reach is allowed")
        return self


class MnistWorkloadConfig(Model):
    """MNIST digits: a training Job on the real MNIST registering `mnist` (served as a custom image)."""

    enabled: bool = Field(default=False, description="deploy the mnist training Job (downloads MNIST over HTTPS)")
    image: Image = Field(description="image built from workloads/mnist/Dockerfile, target train")
    epochs: int = Field(ge=1, le=100, description="training epochs over the 60,000 images")


class WorkloadsConfig(Model):
    time_zone: str = Field(description="IANA zone of every workload CronJob (spec.timeZone)")
    pushgateway_image: Image
    pushgateway_resources: Resources
    energy: EnergyWorkloadConfig
    neo: NeoWorkloadConfig
    mnist: MnistWorkloadConfig

    @property
    def any_enabled(self) -> bool:
        return self.energy.enabled or self.neo.enabled or self.mnist.enabled

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import available_timezones

        if v not in available_timezones():
            raise ValueError("an IANA time zone such as 'Europe/Madrid' or 'Etc/UTC' is allowed")
        return v


class GithubConfig(Model):
    """The repository whose workflows get keyless cloud identities (gke/eks): GitHub's OIDC tokens
    are trusted only for these subjects, see docs of `ciIdentities` in the README."""

    repository: str = Field(description="owner/name of the GitHub repository")
    deploy_ref: str = Field(default="refs/heads/main", description="ref whose pushes build and deploy models")
    infra_environment: str | None = Field(
        default=None, description="GitHub environment of the `pulumi up` job; default 'production' on prod, "
                                  "else the stack's environment")
    models_environment: str | None = Field(
        default=None, description="GitHub environment gating champion promotion; default models-<stack>")
    aws_oidc_provider_arn: str | None = Field(
        default=None, description="an existing GitHub OIDC provider of the account (one per account); "
                                  "unset = the stack creates it")

    @field_validator("repository")
    @classmethod
    def _repository(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}", v):
            raise ValueError("'owner/name' of a GitHub repository is allowed")
        return v

    @field_validator("deploy_ref")
    @classmethod
    def _ref(cls, v: str) -> str:
        if not re.fullmatch(r"refs/(heads|tags)/[A-Za-z0-9._/-]+", v):
            raise ValueError("a full ref such as 'refs/heads/main' is allowed")
        return v


class RunnersConfig(Model):
    """A self-hosted runner scale set inside the cluster (actions-runner-controller), for clusters
    GitHub cannot reach: runners connect out to GitHub, nothing connects in."""

    enabled: bool = Field(default=False, description="install the controller and a runner scale set")
    github_config_url: str | None = Field(
        default=None, description="https://github.com/<owner> or https://github.com/<owner>/<repo>")
    github_token: SecretStr | None = Field(
        default=None, description="secret; a token allowed to register runners there")
    scale_set_name: str = Field(description="`runs-on:` label of the jobs that use these runners")
    min_runners: int = Field(ge=0, le=50, description="idle runners kept warm")
    max_runners: int = Field(ge=1, le=50, description="upper bound of concurrent jobs")
    chart_version: str = Field(description="gha-runner-scale-set(-controller) chart version")
    runner_image: Image
    deploy_scope: Literal["serving", "cluster"] = Field(
        description="what jobs may change: 'serving' (deploy models) or 'cluster' (cluster-admin, for pulumi up)")
    resources: Resources
    controller_resources: Resources

    @field_validator("github_config_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"https://github\.com/[A-Za-z0-9-]+(/[A-Za-z0-9._-]+)?", v):
            raise ValueError("https://github.com/<owner> or https://github.com/<owner>/<repo> is allowed")
        return v

    @field_validator("scale_set_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _DNS_LABEL.match(v):
            raise ValueError("a DNS label (lowercase letters, digits, '-') is allowed")
        return v

    @model_validator(mode="after")
    def _complete(self) -> RunnersConfig:
        if self.min_runners > self.max_runners:
            raise ValueError(f"minRunners {self.min_runners} is above maxRunners {self.max_runners}")
        if self.enabled and (self.github_config_url is None or self.github_token is None):
            raise ValueError("enabled runners need githubConfigUrl and githubToken (a secret)")
        return self


class CiConfig(Model):
    github: GithubConfig | None = Field(default=None, description="keyless CI identities (gke/eks only)")
    runners: RunnersConfig


def _private_cidr(v: str) -> str:
    try:
        network = ipaddress.ip_network(v, strict=True)
    except ValueError:
        raise ValueError("an IPv4 network in CIDR notation such as '10.0.0.0/16' is allowed") from None
    if network.version != 4 or not network.is_private:
        raise ValueError("a private (RFC 1918) IPv4 range is allowed")
    return v


def _cidr(v: str) -> str:
    try:
        ipaddress.ip_network(v, strict=True)
    except ValueError:
        raise ValueError("a network in CIDR notation such as '203.0.113.0/24' is allowed") from None
    return v


_NAME_PREFIX = Field(default=None, description="prefix of physical names (cluster, database, identities, "
                                                "buckets); default `mlops-<stack>`")


class NodePool(Model):
    """Identical nodes; machine types and bounds live here so a cost tool can read them."""

    machine_type: str = Field(description="GCE machine type (gke) / EC2 instance type (eks)")
    min_nodes: int = Field(ge=0, le=1000, description="autoscaling lower bound (per zone on regional GKE)")
    max_nodes: int = Field(ge=1, le=1000, description="autoscaling upper bound (per zone on regional GKE)")
    spot: bool = Field(default=False, description="spot capacity: cheaper, can be reclaimed at any time")
    disk_gi: int = Field(default=50, ge=20, le=16384, description="boot disk size")

    @model_validator(mode="after")
    def _bounds(self) -> NodePool:
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"minNodes {self.min_nodes} is above maxNodes {self.max_nodes}")
        return self


class GkeNodePool(NodePool):
    @field_validator("machine_type")
    @classmethod
    def _gce(cls, v: str) -> str:
        if not re.match(r"^[a-z][a-z0-9]*-[a-z0-9]+(-[0-9]+){0,2}$", v):
            raise ValueError("a Compute Engine machine type such as 'e2-standard-4' is allowed")
        return v


class EksNodePool(NodePool):
    @field_validator("machine_type")
    @classmethod
    def _ec2(cls, v: str) -> str:
        if not re.match(r"^[a-z][a-z0-9-]*\.(nano|micro|small|medium|large|metal|[0-9]*xlarge)$", v):
            raise ValueError("an EC2 instance type such as 'm6i.large' is allowed")
        return v

    @property
    def arm64(self) -> bool:
        """Graviton families (t4g, m7g, c7gn, r8g…) need the arm64 node image."""
        return bool(re.match(r"^[a-z]+[0-9]+g[a-z]*\.", self.machine_type))


class GkeNodePools(Model):
    system: GkeNodePool = Field(description="kube-system and platform services (MLflow)")
    workload: GkeNodePool = Field(description="model servers and jobs")


class EksNodePools(Model):
    system: EksNodePool = Field(description="kube-system and platform services (MLflow)")
    workload: EksNodePool = Field(description="model servers and jobs")


def cloud_sql_tier_problem(tier: str) -> str | None:
    """Why `tier` is not a Cloud SQL tier PostgreSQL can run on, or None (rules of the Cloud SQL docs)."""
    if tier in ("db-f1-micro", "db-g1-small"):
        return None
    if m := re.fullmatch(r"db-custom-([0-9]+)-([0-9]+)", tier):
        cpus, mib = int(m[1]), int(m[2])
        if not (cpus == 1 or (cpus % 2 == 0 and 2 <= cpus <= 96)):
            return f"{cpus} vCPUs: 1 or an even number from 2 to 96 is allowed"
        if mib % 256 or mib < 3840 or not 0.9 * 1024 * cpus <= mib <= 6.5 * 1024 * cpus:
            return (f"{mib} MiB for {cpus} vCPU(s): a multiple of 256 MiB, at least 3840, and 0.9-6.5 GiB "
                    "per vCPU is allowed")
        return None
    if re.fullmatch(r"db-perf-optimized-N-(2|4|8|16|32|48|64|80|96|128)", tier):
        return None
    return ("'db-f1-micro', 'db-g1-small', 'db-custom-<vCPUs>-<MiB>' (Enterprise) or "
            "'db-perf-optimized-N-<vCPUs>' (Enterprise Plus) is allowed")


class CloudSqlConfig(Model):
    """Cloud SQL for PostgreSQL (private IP only). Backups follow `database.backup`."""

    version: str = Field(default="POSTGRES_17", description="Cloud SQL database version")
    tier: str = Field(description="machine tier; the edition follows from it")
    storage_gi: int = Field(ge=10, le=65536, description="SSD size; grows automatically")
    high_availability: bool = Field(description="REGIONAL availability (standby in another zone)")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not re.fullmatch(r"POSTGRES_1[3-8]", v):
            raise ValueError("'POSTGRES_13' to 'POSTGRES_18' is allowed")
        return v

    @field_validator("tier")
    @classmethod
    def _tier(cls, v: str) -> str:
        if problem := cloud_sql_tier_problem(v):
            raise ValueError(problem)
        return v

    @property
    def edition(self) -> str:
        return "ENTERPRISE_PLUS" if self.tier.startswith("db-perf-optimized-") else "ENTERPRISE"


# RDS for PostgreSQL instance families (curated; AWS checks the exact size at create time).
RDS_BURSTABLE = ("t3", "t4g")
RDS_FAMILIES = RDS_BURSTABLE + ("m5", "m5d", "m6g", "m6gd", "m6i", "m6id", "m7g", "m7i", "m8g",
                                "r5", "r5b", "r5d", "r6g", "r6gd", "r6i", "r6id", "r7g", "r7i", "r8g", "x2g")


def rds_class_problem(instance_class: str) -> str | None:
    """Why `instance_class` is not an RDS for PostgreSQL class, or None."""
    m = re.fullmatch(r"db\.([a-z0-9]+)\.([a-z0-9]+)", instance_class)
    if not m:
        return "an RDS instance class such as 'db.t4g.micro' or 'db.m6g.large' is allowed"
    family, size = m[1], m[2]
    if family not in RDS_FAMILIES:
        return f"db.{family} is not offered for PostgreSQL 13+; allowed families: " + ", ".join(
            f"db.{f}" for f in RDS_FAMILIES)
    sizes = ("micro", "small", "medium", "large", "xlarge", "2xlarge") if family in RDS_BURSTABLE else None
    if sizes is not None and size not in sizes:
        return f"db.{family} comes in sizes {', '.join(sizes)}"
    if sizes is None and not re.fullmatch(r"large|xlarge|(2|4|8|12|16|24|32|48)xlarge", size):
        return f"db.{family} comes in sizes large, xlarge, 2xlarge … 48xlarge"
    return None


class RdsConfig(Model):
    """RDS for PostgreSQL in private subnets. Backups follow `database.backup`."""

    engine_version: str = Field(default="17", description="major (or major.minor) version")
    instance_class: str = Field(description="RDS instance class")
    storage_gi: int = Field(ge=20, le=65536, description="gp3 storage allocated at creation")
    max_storage_gi: int = Field(ge=20, le=65536, description="storage autoscaling ceiling")
    high_availability: bool = Field(description="Multi-AZ standby")

    @field_validator("engine_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not re.fullmatch(r"1[3-8](\.[0-9]+)?", v):
            raise ValueError("a PostgreSQL version from '13' to '18' (optionally with the minor) is allowed")
        return v

    @field_validator("instance_class")
    @classmethod
    def _class(cls, v: str) -> str:
        if problem := rds_class_problem(v):
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _ceiling(self) -> RdsConfig:
        if self.max_storage_gi < self.storage_gi:
            raise ValueError(f"maxStorageGi {self.max_storage_gi} is below storageGi {self.storage_gi}")
        return self


class GcpNetwork(Model):
    """Node subnet and its secondary ranges (VPC-native GKE)."""

    subnet_cidr: str = Field(default="10.10.0.0/20", description="nodes (and internal load balancers)")
    pods_cidr: str = Field(default="10.16.0.0/14", description="secondary range for Pods")
    services_cidr: str = Field(default="10.20.0.0/20", description="secondary range for Services")

    @field_validator("*")
    @classmethod
    def _private(cls, v: str) -> str:
        return _private_cidr(v)

    @model_validator(mode="after")
    def _disjoint(self) -> GcpNetwork:
        ranges = {"subnetCidr": self.subnet_cidr, "podsCidr": self.pods_cidr, "servicesCidr": self.services_cidr}
        names = list(ranges)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if ipaddress.ip_network(ranges[a]).overlaps(ipaddress.ip_network(ranges[b])):
                    raise ValueError(f"{b} {ranges[b]} overlaps {a} {ranges[a]}")
        return self


class GcpConfig(Model):
    """Google Cloud (platform `gke`): VPC, GKE, Cloud SQL, GCS, Artifact Registry, Workload Identity."""

    project: str = Field(description="Google Cloud project id")
    region: str = Field(default="europe-west1", description="region of every resource")
    zone: str = Field(default="b", description="zone letter in `region` of a zonal cluster, e.g. b → europe-west1-b")
    regional: bool = Field(description="regional cluster (control plane and nodes in 3 zones) instead of zonal")
    autopilot: bool = Field(default=False, description="GKE Autopilot (regional only; node pools are Google's)")
    release_channel: Literal["RAPID", "REGULAR", "STABLE", "EXTENDED"] = Field(description="GKE release channel")
    private_endpoint: bool = Field(default=False, description="control plane reachable only from the VPC")
    authorized_networks: list[str] = Field(default=[], description="CIDRs allowed to reach the control plane; [] = any")
    network: GcpNetwork = GcpNetwork()
    node_pools: GkeNodePools
    database: CloudSqlConfig
    registry: str = Field(default="mlops", description="Artifact Registry Docker repository id")
    noncurrent_version_days: int = Field(ge=1, le=3650, description="days a replaced object version is kept")
    name_prefix: str | None = _NAME_PREFIX

    @field_validator("project")
    @classmethod
    def _project(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", v):
            raise ValueError("a project id (6-30 lowercase letters, digits, '-', starting with a letter) is allowed")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z]+-[a-z]+[0-9]+", v):
            raise ValueError("a Google Cloud region such as 'europe-west1' is allowed")
        return v

    @field_validator("zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        return _zone_letter(v)

    @field_validator("authorized_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        return [_cidr(c) for c in v]

    @field_validator("name_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        return _name_prefix(v)

    @field_validator("registry")
    @classmethod
    def _registry(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?", v):
            raise ValueError("a repository id (lowercase letters, digits, '-') is allowed")
        return v

    @property
    def location(self) -> str:
        return self.region if self.regional else f"{self.region}-{self.zone}"


CLOUDWATCH_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                             2922, 3288, 3653)


class AwsConfig(Model):
    """AWS (platform `eks`): VPC, EKS, RDS, S3, ECR, IAM roles for service accounts."""

    region: str = Field(default="eu-west-1", description="region of every resource")
    zones: list[str] = Field(description="availability-zone letters in `region`, e.g. [a, b] → eu-west-1a, "
                                         "eu-west-1b")
    vpc_cidr: str = Field(default="10.0.0.0/16",
                          description="VPC range, split into a private and a public subnet per zone")
    nat_gateways: Literal["single", "perZone"] = Field(
        description="one NAT gateway, or one per zone (no cross-zone egress dependency)")
    private_endpoint: bool = Field(default=False, description="control plane reachable only from the VPC")
    authorized_networks: list[str] = Field(default=[],
                                           description="CIDRs allowed to reach the public endpoint; [] = any")
    node_pools: EksNodePools
    database: RdsConfig
    registry: str = Field(default="mlops", description="ECR namespace: images are <registry>/<image>")
    registry_images: list[str] = Field(
        default=["mlflow-server", "mlserver", "energy", "neo", "mnist", "mnist-server"], min_length=1,
        description="ECR repositories created under `registry` (ECR creates none on push)")
    log_retention_days: int = Field(description="control-plane log retention (a CloudWatch value: 1, 3, 5, 7, "
                                                "14, 30, 60, 90, 120, 150, 180, 365, …)")
    noncurrent_version_days: int = Field(ge=1, le=3650, description="days a replaced object version is kept")
    name_prefix: str | None = _NAME_PREFIX

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-[0-9]", v):
            raise ValueError("an AWS region such as 'eu-west-1' is allowed")
        return v

    @field_validator("zones")
    @classmethod
    def _zones(cls, v: list[str]) -> list[str]:
        for letter in v:
            _zone_letter(letter)
        if len(v) < 2 or len(set(v)) != len(v):
            raise ValueError("at least two different zone letters are allowed (EKS and RDS span two or more zones)")
        return v

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, v: int) -> int:
        if v not in CLOUDWATCH_RETENTION_DAYS:
            raise ValueError("a CloudWatch retention is allowed: " + ", ".join(map(str, CLOUDWATCH_RETENTION_DAYS)))
        return v

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc(cls, v: str) -> str:
        _private_cidr(v)
        if not 16 <= ipaddress.ip_network(v).prefixlen <= 20:
            raise ValueError("a prefix length from /16 to /20 is allowed (room for a subnet pair per zone)")
        return v

    @field_validator("authorized_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        return [_cidr(c) for c in v]

    @field_validator("name_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        return _name_prefix(v)

    @field_validator("registry")
    @classmethod
    def _registry(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9]+([._-][a-z0-9]+)*", v):
            raise ValueError("an ECR namespace (lowercase letters, digits, '.', '_', '-') is allowed")
        return v

    @field_validator("registry_images")
    @classmethod
    def _images(cls, v: list[str]) -> list[str]:
        for image in v:
            if not re.fullmatch(r"[a-z0-9]+([._-][a-z0-9]+)*", image):
                raise ValueError(f"{image!r}: image names of lowercase letters, digits, '.', '_', '-' are allowed")
        return v


def _zone_letter(v: str) -> str:
    if not re.fullmatch(r"[a-z]", v):
        raise ValueError("a zone letter such as 'b' is allowed")
    return v


def _name_prefix(v: str | None) -> str | None:
    if v is not None and not re.fullmatch(r"[a-z][a-z0-9-]{1,15}[a-z0-9]", v):
        raise ValueError("3-17 lowercase letters, digits and '-' (starting with a letter) are allowed")
    return v


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
    ci: CiConfig
    workloads: WorkloadsConfig
    images: ImagesConfig
    gcp: GcpConfig | None = None
    aws: AwsConfig | None = None

    @property
    def protected(self) -> bool:
        """Stateful resources refuse deletion outside `dev` unless the stack says otherwise."""
        return self.protect if self.protect is not None else self.environment != "dev"
