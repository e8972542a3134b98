"""`serving`: the engine and the models it serves."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from infra.config.base import DNS_LABEL, Image, Model, Resources
from infra.config.drift import DriftJobConfig, ModelMonitoringConfig
from infra.config.feedback import DEMO_METRICS, FEEDBACK_DIRECTORY


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


class SageMakerConfig(Model):
    """`serving.sagemaker`, read when `engine: sagemaker` (eks only; modules/serving/sagemaker.py,
    docs/decisions/0021-sagemaker-engine.md). A model's `replicas` or `autoscaling.min/maxReplicas`
    are its variant's instance counts; its `resources` do not apply (the instance type sizes it)."""

    instance_type: str = Field(default="ml.m5.large", pattern=r"^ml\.[a-z0-9-]+\.[a-z0-9]+$",
                               description="real-time inference instance type of every variant, priced in "
                                           "pricing/aws-sagemaker-eu-west-1.yaml")
    invocations_per_instance: int = Field(default=100, ge=1, le=100000, description="autoscaling target: "
                                          "SageMakerVariantInvocationsPerInstance, requests per instance per minute")
    scale_in_cooldown: int = Field(default=300, ge=0, le=3600, description="seconds between scale-in steps")
    scale_out_cooldown: int = Field(default=60, ge=0, le=3600, description="seconds between scale-out steps")
    startup_timeout: int = Field(default=600, ge=60, le=3600, description="seconds for the model download and "
                                 "for the container to answer /ping (SageMaker allows 60-3600)")


class VertexConfig(Model):
    """`serving.vertex`, read when `engine: vertex` (gke only; modules/serving/vertex.py,
    docs/decisions/0022-vertex-engine.md). A model's `replicas` or `autoscaling.min/maxReplicas`
    (and `targetCpuPercent`) size its deployed models; its `resources` do not apply (the machine
    type sizes them)."""

    machine_type: str = Field(default="n1-standard-2", pattern=r"^[a-z][a-z0-9]*-[a-z]+(-[0-9]+)?$",
                              description="Compute Engine machine type of every deployed model's nodes, priced in "
                                          "pricing/gcp-vertex-europe-west1.yaml")


ALIAS = r"^[\w-]+$"  # MLflow's alias rule (mlflow.utils.validation); "latest" and v<N> are reserved


class ModelSourceConfig(Model):
    """Exactly one of: `alias` (+ `model`: the registry version an alias points at, followed as it
    moves), `uri` (one version's artifacts, pinned) or `image` (a custom model server image). An
    `image` with `model` + `alias` is a custom server that loads and follows that alias itself (the
    mnist server; modules/serving/contract.py CustomImage.follows)."""

    model: str | None = Field(default=None, min_length=1, max_length=256, pattern=r"^[^/:]+$",
                              description="registered model name (with alias); a candidate inherits the source's")
    alias: str | None = Field(default=None, pattern=ALIAS, max_length=255,
                               description="registry alias to serve, e.g. champion")
    uri: str | None = Field(default=None, description="s3://, gs:// or https:// artifact URI of a model version")
    runtime: Literal["mlflow"] = Field(default="mlflow", description="registry models run on the project's "
                                       "MLServer image with its MLflow runtime")
    image: Image | None = Field(default=None, description="custom model server image; with model + alias the "
                                "server follows that alias (MODEL_URI, MODEL_POLL_SECONDS, read-only login)")
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
        if self.image is not None:
            return "image" if self.uri is None else None
        kinds = [k for k, v in (("alias", self.alias), ("uri", self.uri)) if v is not None]
        return kinds[0] if len(kinds) == 1 else None

    @model_validator(mode="after")
    def _one_source(self) -> ModelSourceConfig:
        if self.model is not None and self.alias is None and self.uri is None and self.image is None:
            raise ValueError(f"model {self.model!r} is given without alias: add alias (e.g. champion)")
        if self.kind is None:
            raise ValueError("exactly one of alias (+ model: follow a registry alias), uri (one version's "
                             "artifacts) or image (custom server; with model + alias it follows that alias) "
                             "is allowed")
        if self.alias is not None and self.model is None:
            raise ValueError(f"alias {self.alias!r} needs model: the registered model name (e.g. model: NEOs)")
        if self.model is not None and self.alias is None:
            raise ValueError(f"model {self.model!r} is given without alias: add alias (e.g. champion); a uri "
                             "names no registered model")
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

    @model_validator(mode="after")
    def _candidate_protocol(self) -> ServedModelConfig:
        """Seldon and KServe route one protocol per model: a candidate answers the same requests."""
        speaks = lambda s: s.protocol if s.image is not None else "v2"  # noqa: E731
        if self.candidate is not None and speaks(self.candidate) != speaks(self.source):
            raise ValueError(f"candidate speaks {speaks(self.candidate)!r} and source {speaks(self.source)!r}: a "
                             "candidate must answer the same requests (a custom image's protocol, v2 otherwise); "
                             "give the candidate the source's image kind")
        return self

    @property
    def aliases(self) -> list[ModelSourceConfig]:
        return [s for s in (self.source, self.candidate) if s is not None and s.alias is not None]

    @model_validator(mode="after")
    def _sampling_source(self) -> ServedModelConfig:
        rate = self.monitoring.sample_rate
        if rate > 0 and self.source.alias is None:
            raise ValueError(f"monitoring.sampleRate {rate}: only a model served by alias (source: {{model, alias}}, "
                             "or a custom image with model + alias whose server samples, as mnist's does) can "
                             "sample; a pinned uri or an image without an alias has no sampler (leave sampleRate at 0)")
        return self

    @property
    def feedback_metric(self) -> str:
        """What monitoring.feedback computes: its `metric`, else the demo model's."""
        feedback = self.monitoring.feedback
        assert feedback is not None
        metric = feedback.metric or DEMO_METRICS.get(self.source.model or "")
        if metric is None:
            raise ValueError(f"monitoring.feedback.metric: registered model {self.source.model!r} is no demo "
                             f"workload's; set it to one of accuracy, f1")
        return metric

    @model_validator(mode="after")
    def _feedback_needs_the_sample(self) -> ServedModelConfig:
        """Labels are joined to the sampled answers by request id: no sample, nothing to score. The
        labels live in the `feedback` folder beside the aliases' samples, so no alias may be called so."""
        if self.monitoring.feedback is None:
            return self
        if self.monitoring.sample_rate <= 0:
            raise ValueError("monitoring.feedback needs monitoring.sampleRate > 0: labels are joined to the "
                             "sampled requests by request id (1 scores every labelled request)")
        if FEEDBACK_DIRECTORY in {s.alias for s in self.aliases}:
            raise ValueError(f"alias {FEEDBACK_DIRECTORY!r} is where monitoring.feedback keeps the labels; "
                             "serve another alias name")
        self.feedback_metric  # noqa: B018 (raises for a model without a known metric)
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
    engine: Literal["seldon", "kserve", "sagemaker", "vertex"] = Field(
        description="serving engine behind modules/serving/contract.py; sagemaker: eks only, vertex: gke only")
    seldon: SeldonConfig
    kserve: KServeConfig = KServeConfig()
    sagemaker: SageMakerConfig = SageMakerConfig()
    vertex: VertexConfig = VertexConfig()
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
        aliased = [name for name, model in self.models.items() if any(s.kind == "alias" for s in model.aliases)]
        if aliased and not self.seldon.mlflow_runtime.startswith("mlops_mlserver."):
            raise ValueError(f"models {aliased} are served by alias, which needs the project's MLServer image and "
                             f"runtime; serving.seldon.mlflowRuntime is {self.seldon.mlflow_runtime!r}: use "
                             "mlops_mlserver.MLflowRuntime (and the image from modules/serving/mlserver-image)")
        return self

    @field_validator("models")
    @classmethod
    def _model_names(cls, v: dict[str, ServedModelConfig]) -> dict[str, ServedModelConfig]:
        return dns_model_names(v)


GRAVITON = re.compile(r"^ml\.[a-z]+[0-9]+g[a-z]*\.")  # SageMaker's Arm instance types (ml.c7g, ml.m6g ...)


@dataclass(frozen=True)
class ManagedEngine:
    """What a managed engine (endpoints beside the cluster) needs from the stack."""

    platform: str  # the only platform whose registry, buckets and IAM it uses
    service: str  # its name in messages
    uses: str  # what of the platform it uses
    scheme: str  # of the registry versions' artifact prefixes it downloads
    registry: str  # where the stack pushes the MLServer image
    machine_key: str  # its machine/instance type key under serving.<engine>
    decision: str


MANAGED_ENGINES = {
    "sagemaker": ManagedEngine("eks", "SageMaker endpoints", "the eks platform's ECR, S3 buckets, KMS key and IAM",
                               "s3", "ECR", "instanceType", "docs/decisions/0021-sagemaker-engine.md"),
    "vertex": ManagedEngine("gke", "Vertex AI endpoints", "the gke platform's project, Artifact Registry, GCS "
                            "buckets and IAM", "gs", "Artifact Registry", "machineType",
                            "docs/decisions/0022-vertex-engine.md"),
}


def managed_engine_problems(platform: str, serving: ServingConfig, mlserver_in_registry: bool,
                            image_platforms: tuple[str, ...]) -> list[tuple[str, Any, str]]:
    """(key, value, why) for what a managed engine (`sagemaker`, `vertex`) cannot serve: another
    platform than its cloud's, a model not pinned to a version's artifact prefix (the service
    downloads model data itself, so the container follows no alias), an MLServer image outside the
    stack's registry, or one built without the machine type's architecture; on Vertex also a
    shadow candidate (Vertex splits traffic, it does not mirror it)."""
    engine = MANAGED_ENGINES.get(serving.engine)
    if engine is None:
        return []
    name = serving.engine
    if platform != engine.platform:
        return [("serving.engine", name, f"{engine.service} use {engine.uses}: allowed on platform "
                 f"{engine.platform} only; on {platform} allowed seldon or kserve")]
    problems = []
    for model_name, model in serving.models.items():
        for part, source in (("source", model.source), ("candidate", model.candidate)):
            if source is None or (source.uri or "").startswith(f"{engine.scheme}://"):
                continue
            key = f"serving.models.{model_name}.{part}.{source.kind}"
            value = source.alias if source.kind == "alias" else source.uri if source.kind == "uri" else source.image.ref
            problems.append((key, value, f"engine {name} serves a registry version's {engine.scheme.upper()} prefix: "
                             f"allowed {part}: {{uri: {engine.scheme}://…}}; resolve an alias with `mlops "
                             f"resolve-model --name {source.model or '<model>'} --alias {source.alias or 'champion'}` "
                             f"at deploy time ({engine.decision})"))
        if name == "vertex" and model.candidate is not None and model.candidate_mode == "shadow":
            problems.append((f"serving.models.{model_name}.candidateMode", "shadow", "Vertex AI endpoints split "
                             "traffic between deployed models and copy none: allowed canary (with canaryPercent)"))
    if not mlserver_in_registry:
        problems.append(("serving.seldon.mlserverImage", serving.seldon.mlserver_image.ref, f"engine {name} pulls "
                         f"the project's MLServer image from the stack's {engine.registry}: allowed images.mode build "
                         "without images.registry" + (", with mlserver in aws.registryImages" if name == "sagemaker"
                                                      else "")))
    machine = serving.sagemaker.instance_type if name == "sagemaker" else serving.vertex.machine_type
    needed = "linux/arm64" if name == "sagemaker" and GRAVITON.match(machine) else "linux/amd64"
    if needed not in image_platforms:
        problems.append((f"serving.{name}.{engine.machine_key}", machine, f"its instances run {needed} and the "
                         f"stack builds the MLServer image for {', '.join(image_platforms)}: add {needed} to "
                         "images.platforms, or pick an instance type of that architecture"))
    return problems
