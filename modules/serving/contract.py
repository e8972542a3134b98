"""The serving layer's interface: workloads ask for "this model, served like this" and never name
the engine. Seldon Core v1 (`seldon.py`), KServe (`kserve.py`), SageMaker and Vertex AI implement it.

Every engine implements the three source kinds. `RegistryAlias` is the normal one and carries a
behaviour, not just a location (docs/decisions/0006-serve-by-alias.md): the pods resolve the alias
against MLflow with a read-only identity, download through MLflow's proxied artifacts (no bucket
credentials in the serving namespace), follow the alias without a redeploy, keep serving the old
version when a new one fails to load, and report the served version (V2 metadata, response
`model_version`, `mlops_model_version_info`, `mlops_model_load_failures_total`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi

Runtime = Literal["mlflow"]


@dataclass(frozen=True)
class RegistryModel:
    """A model logged with MLflow, served by a prepackaged V2 (MLServer) runtime.

    `uri` is the artifact location of a registry version (`s3://…`, `gs://…`) as resolved from an
    alias such as `models:/NEOs@champion` (`mlops resolve-model`); engines download from it.
    """

    uri: str
    runtime: Runtime = "mlflow"


@dataclass(frozen=True)
class RegistryAlias:
    """The version a registry alias points at (`models:/<model>@<alias>`), followed as it moves."""

    model: str  # registered model name, e.g. "NEOs"
    alias: str  # e.g. "champion", "challenger"
    runtime: Runtime = "mlflow"
    poll_seconds: int = 30  # how often the serving pods look the alias up


@dataclass(frozen=True)
class RegistryAccess:
    """How model servers reach the registry: the in-cluster tracking URL and a Secret (keys
    `username`, `password`) of an MLflow user with READ permission, in the serving namespace."""

    tracking_uri: pulumi.Input[str]
    credentials_secret: pulumi.Input[str]


@dataclass(frozen=True)
class InferenceLog:
    """Where alias models keep a sample of their requests for the drift job
    (docs/decisions/0017-drift-monitoring.md): `uri` is a prefix in the object store
    (`s3://<bucket>/inference-log`), `rate` the share kept (0-1]. `credentials_secret` (keys
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, in the serving namespace) and `endpoint_url` are for
    an in-cluster store; None: the service account's workload identity writes."""

    uri: pulumi.Input[str]
    rate: float
    flush_seconds: int = 60
    credentials_secret: pulumi.Input[str] | None = None
    endpoint_url: pulumi.Input[str] | None = None

    def env(self) -> list[dict[str, Any]]:
        """The sampler's environment (modules/serving/mlserver-image/mlops_mlserver.py SampleSettings)."""
        env: list[dict[str, Any]] = [
            {"name": "MLOPS_INFERENCE_LOG_URI", "value": self.uri},
            {"name": "MLOPS_INFERENCE_LOG_RATE", "value": repr(self.rate)},
            {"name": "MLOPS_INFERENCE_LOG_FLUSH_SECONDS", "value": str(self.flush_seconds)},
        ]
        if self.endpoint_url is not None:
            env.append({"name": "MLFLOW_S3_ENDPOINT_URL", "value": self.endpoint_url})
        if self.credentials_secret is not None:
            env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": self.credentials_secret, "key": key}}}
                    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
        return env


@dataclass(frozen=True)
class CustomImage:
    """A model server image (e.g. a Seldon Python wrapper class) built by the model pipeline.

    With `follows`, the server loads and follows that registry alias itself, as the mnist server
    does (workloads/mnist/serving.py): engines give it `MODEL_URI=models:/<model>@<alias>`,
    `MODEL_POLL_SECONDS`, the read-only MLflow login (`MLFLOW_TRACKING_*`) and, when sampled, the
    `MLOPS_INFERENCE_LOG_*` settings — the same contract as the project's MLServer runtime."""

    image: str
    protocol: Literal["seldon", "v2"] = "seldon"
    env: Mapping[str, str] = field(default_factory=dict)
    follows: RegistryAlias | None = None


ModelSource = RegistryModel | RegistryAlias | CustomImage


def followed_alias(source: ModelSource | None) -> RegistryAlias | None:
    """The registry alias a source serves and follows: its own, or a custom server's `follows`."""
    if isinstance(source, RegistryAlias):
        return source
    return source.follows if isinstance(source, CustomImage) else None


@dataclass(frozen=True)
class Autoscaling:
    min_replicas: int
    max_replicas: int
    target_cpu_percent: int = 70


@dataclass(frozen=True)
class ModelDeploymentArgs:
    namespace: pulumi.Input[str]
    source: ModelSource
    replicas: int = 1
    resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    )
    autoscaling: Autoscaling | None = None
    # a second version next to the main one: "shadow" gets a copy of the traffic, "canary" a share
    candidate: ModelSource | None = None
    candidate_mode: Literal["shadow", "canary"] = "shadow"
    canary_percent: int = 10
    service_account: str | None = None  # its workload identity reads the model bucket (clouds)
    storage_secret: pulumi.Input[str] | None = None  # storage-initializer credentials (in-cluster S3)
    registry: RegistryAccess | None = None  # required when a source is a RegistryAlias
    placement: Mapping[str, Any] = field(default_factory=dict)  # Placement.pod_spec(): the workload pool
    # the engine's object (and URL) name when it differs from the Pulumi name: the same model name in
    # many tenant namespaces (modules/tenants) needs distinct Pulumi names
    object_name: str | None = None
    # a sample of the requests for the drift job (main source, and a shadow candidate); None: off
    inference_log: InferenceLog | None = None

    def __post_init__(self) -> None:
        aliased = [a for s in (self.source, self.candidate) if (a := followed_alias(s)) is not None]
        if aliased and self.registry is None:
            raise ValueError(f"models:/{aliased[0].model}@{aliased[0].alias} is served by alias: "
                             "ModelDeploymentArgs.registry (tracking URL + read-only credentials) is required")
        if self.inference_log is not None and followed_alias(self.source) is None:
            raise ValueError("inference_log: only a source that follows a registry alias samples (the project's "
                             "MLServer runtime, or a custom server with `follows`)")

    def inference_log_of(self, source: ModelSource) -> InferenceLog | None:
        """The sample settings of one of the two sources: a shadow sees the same requests as the main
        version (pairs for the agreement); a canary's share of other requests is not kept (no drift
        job reads, or prunes, it)."""
        if source is self.candidate and self.candidate_mode != "shadow":
            return None
        return self.inference_log if followed_alias(source) is not None else None


class DeployedModel(pulumi.ComponentResource):
    """What a serving engine returns for one model."""

    url: pulumi.Output[str]  # predictions endpoint through the gateway


@dataclass(frozen=True)
class SharedServerArgs:
    """Several alias models in one model server process (docs/decisions/0020-multi-model-serving.md):
    each keeps its own endpoint (the URL a dedicated deployment of it would have) and follows its
    own alias; they share the server's resources, its registry login and its fate."""

    namespace: pulumi.Input[str]
    object_name: str  # the engine's object name, e.g. models-0
    models: Mapping[str, RegistryAlias]  # endpoint (and V2) name -> the alias it serves
    registry: RegistryAccess
    resources: Mapping[str, Mapping[str, str]]
    placement: Mapping[str, Any] = field(default_factory=dict)
    inference_log: InferenceLog | None = None


class SharedServer(pulumi.ComponentResource):
    """What a serving engine returns for a shared server: each model's predictions endpoint."""

    urls: dict[str, pulumi.Output[str]]


class ServingEngine(abc.ABC):
    """An installed serving engine that can deploy models."""

    name: str

    @abc.abstractmethod
    def deploy(self, name: str, args: ModelDeploymentArgs,
               opts: pulumi.ResourceOptions | None = None) -> DeployedModel:
        """Declare one served model."""

    def deploy_shared(self, name: str, args: SharedServerArgs,
                      opts: pulumi.ResourceOptions | None = None) -> SharedServer:
        """Declare one server hosting several models; engines that cannot say so."""
        raise ValueError(f"serving engine {self.name} runs one model per server: serve its models with "
                         "serving.mode dedicated")
