"""The serving layer's interface: workloads ask for "this model, served like this" and never name
the engine. Seldon Core v1 implements it today (`seldon.py`); KServe can implement it later
without touching a workload.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

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
class CustomImage:
    """A model server image (e.g. a Seldon Python wrapper class) built by the model pipeline."""

    image: str
    protocol: Literal["seldon", "v2"] = "seldon"
    env: Mapping[str, str] = field(default_factory=dict)


ModelSource = RegistryModel | CustomImage


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
        default_factory=lambda: {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    )
    autoscaling: Autoscaling | None = None
    # a second version next to the main one: "shadow" gets a copy of the traffic, "canary" a share
    candidate: ModelSource | None = None
    candidate_mode: Literal["shadow", "canary"] = "shadow"
    canary_percent: int = 10
    service_account: str | None = None  # its workload identity reads the model bucket (clouds)
    storage_secret: pulumi.Input[str] | None = None  # storage-initializer credentials (in-cluster S3)


class DeployedModel(pulumi.ComponentResource):
    """What a serving engine returns for one model."""

    url: pulumi.Output[str]  # predictions endpoint through the gateway


class ServingEngine(abc.ABC):
    """An installed serving engine that can deploy models."""

    name: str

    @abc.abstractmethod
    def deploy(self, name: str, args: ModelDeploymentArgs,
               opts: pulumi.ResourceOptions | None = None) -> DeployedModel:
        """Declare one served model."""
