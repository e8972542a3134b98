"""`serving`: the engine and the models it serves."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from infra.config.base import DNS_LABEL, Image, Model, Resources
from infra.config.drift import DriftJobConfig, ModelMonitoringConfig


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


class KServeConfig(Model):
    """`serving.kserve`, read when `engine: kserve` (modules/serving/kserve.py). Models run on the
    MLServer image and runtime of `serving.seldon` (mlserverImage, mlflowRuntime)."""

    version: str = Field(default="v0.20.0", description="kserve-crd and kserve-resources chart version")
    deployment_mode: Literal["Standard", "Knative"] = Field(
        default="Standard", description="Standard: a Deployment + HPA per model, no Knative; Knative: "
                                        "serverless, needs Knative Serving (with net-istio) already installed")
    scale_to_zero: bool = Field(default=False, description="Knative mode only: models scale to zero when idle")
    # the chart's defaults (values.yaml v0.20.0: requests = limits), not measured here
    controller_resources: Resources = Resources(cpu="100m", memory="300Mi", cpu_limit="100m", memory_limit="300Mi")
    rbac_proxy_resources: Resources = Resources(cpu="100m", memory="300Mi", cpu_limit="100m", memory_limit="300Mi")

    @model_validator(mode="after")
    def _scale_to_zero(self) -> KServeConfig:
        if self.scale_to_zero and self.deployment_mode != "Knative":
            raise ValueError("serving.kserve.scaleToZero needs deploymentMode: Knative (Standard mode's HPA "
                             "keeps at least one replica)")
        return self


ALIAS = r"^[\w-]+$"  # MLflow's alias rule (mlflow.utils.validation); "latest" and v<N> are reserved


class ModelSourceConfig(Model):
    """Exactly one of: `alias` (+ `model`: the registry version an alias points at, followed as it
    moves), `uri` (one version's artifacts, pinned) or `image` (a custom model server image)."""

    model: str | None = Field(default=None, min_length=1, max_length=256, pattern=r"^[^/:]+$",
                              description="registered model name (with alias); a candidate inherits the source's")
    alias: str | None = Field(default=None, pattern=ALIAS, max_length=255,
                               description="registry alias to serve, e.g. champion")
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

    @field_validator("alias")
    @classmethod
    def _alias(cls, v: str | None) -> str | None:
        if v is not None and (v.lower() == "latest" or re.fullmatch(r"[vV]\d+", v)):
            raise ValueError(f"alias {v!r} is reserved by MLflow ('latest', v<N>); use e.g. champion or challenger")
        return v

    @property
    def kind(self) -> str | None:
        kinds = [k for k, v in (("alias", self.alias), ("uri", self.uri), ("image", self.image)) if v is not None]
        return kinds[0] if len(kinds) == 1 else None

    @model_validator(mode="after")
    def _one_source(self) -> ModelSourceConfig:
        if self.model is not None and self.alias is None and self.uri is None and self.image is None:
            raise ValueError(f"model {self.model!r} is given without alias: add alias (e.g. champion)")
        if self.kind is None:
            raise ValueError("exactly one of alias (+ model: follow a registry alias), uri (one version's "
                             "artifacts) or image (custom server) is allowed")
        if self.alias is not None and self.model is None:
            raise ValueError(f"alias {self.alias!r} needs model: the registered model name (e.g. model: NEOs)")
        if self.model is not None and self.alias is None:
            raise ValueError(f"model {self.model!r} goes with alias only (uri and image name no registered model)")
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
    """One served model. `source.model` + `source.alias` is the normal case; a candidate
    `{alias: challenger}` serves another alias of the same registered model."""

    source: ModelSourceConfig
    replicas: int = Field(default=1, ge=1, le=100)
    # measured: MLServer with the neo model and the mnist Seldon wrapper hold 425-437 MiB PSS
    resources: Resources = Resources(cpu="100m", memory="512Mi", memory_limit="1Gi")
    autoscaling: ModelAutoscalingConfig | None = None
    candidate: ModelSourceConfig | None = Field(default=None, description="shadow or canary version")
    candidate_mode: Literal["shadow", "canary"] = "shadow"
    canary_percent: int = Field(default=10, ge=1, le=99)
    monitoring: ModelMonitoringConfig = Field(default_factory=ModelMonitoringConfig, description="request sample and "
                                              "drift job (docs/decisions/0017-drift-monitoring.md)")

    @model_validator(mode="before")
    @classmethod
    def _candidate_inherits_model(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        source, candidate = data.get("source"), data.get("candidate")
        if isinstance(candidate, dict) and candidate.get("alias") is not None and candidate.get("model") is None:
            if not (isinstance(source, dict) and source.get("model")):
                raise ValueError("candidate.alias needs a registered model: give candidate.model, or serve the "
                                 "source by alias too (source: {model: …, alias: …})")
            data = {**data, "candidate": {**candidate, "model": source["model"]}}
        return data

    @property
    def aliases(self) -> list[ModelSourceConfig]:
        return [s for s in (self.source, self.candidate) if s is not None and s.alias is not None]

    @model_validator(mode="after")
    def _sampling_source(self) -> ServedModelConfig:
        rate = self.monitoring.sample_rate
        if rate > 0 and self.source.alias is None:
            raise ValueError(f"monitoring.sampleRate {rate}: only a model served by alias (source: {{model, alias}}) "
                             "can sample, in the project's MLServer runtime; a uri or image source has no sampler "
                             "(leave sampleRate at 0)")
        return self


class RegistryServingConfig(Model):
    poll_seconds: int = Field(default=30, ge=5, le=3600, description="how often alias models look their alias "
                              "up; a moved alias is served within this time (plus the new version's load)")


def dns_model_names(models: dict[str, ServedModelConfig]) -> dict[str, ServedModelConfig]:
    """Model names become Kubernetes object names and URL segments: DNS labels only."""
    bad = [name for name in models if not DNS_LABEL.match(name)]
    if bad:
        raise ValueError(f"model names {bad}: DNS labels (lowercase letters, digits, '-') are allowed")
    return models


class ServingConfig(Model):
    engine: Literal["seldon", "kserve"] = Field(description="serving engine behind modules/serving/contract.py")
    seldon: SeldonConfig
    kserve: KServeConfig = KServeConfig()
    models: dict[str, ServedModelConfig] = Field(
        default_factory=dict, description="models to serve, by name (a DNS label)")
    registry: RegistryServingConfig = RegistryServingConfig()
    drift: DriftJobConfig = Field(default_factory=DriftJobConfig, description="the drift CronJob of the models with "
                                  "monitoring.sampleRate > 0")

    @model_validator(mode="after")
    def _drift_jobs(self) -> ServingConfig:
        self.drift._sampling = any(m.monitoring.sample_rate > 0 for m in self.models.values())
        return self

    @model_validator(mode="after")
    def _alias_runtime(self) -> ServingConfig:
        aliased = [name for name, model in self.models.items() if model.aliases]
        if aliased and not self.seldon.mlflow_runtime.startswith("mlops_mlserver."):
            raise ValueError(f"models {aliased} are served by alias, which needs the project's MLServer image and "
                             f"runtime; serving.seldon.mlflowRuntime is {self.seldon.mlflow_runtime!r}: use "
                             "mlops_mlserver.MLflowRuntime (and the image from modules/serving/mlserver-image)")
        return self

    @field_validator("models")
    @classmethod
    def _model_names(cls, v: dict[str, ServedModelConfig]) -> dict[str, ServedModelConfig]:
        return dns_model_names(v)
