"""`serving`: the engine and the models it serves."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from infra.config.base import DNS_LABEL, Image, Model, Resources


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
        bad = [name for name in v if not DNS_LABEL.match(name)]
        if bad:
            raise ValueError(f"model names {bad}: DNS labels (lowercase letters, digits, '-') are allowed")
        return v
