"""The stack's typed configuration: one pydantic model, platform/environment defaults, readable errors.

A stack file only states what differs from the defaults of its platform and environment
(`defaults.py`). Everything is parsed once, before any resource is declared, into frozen objects;
components receive the parts they need, never the whole config.

One module per section, named as the section (`infra/config/<section>.py`), like `modules/`.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from infra.config.aws import AwsConfig
from infra.config.base import Environment, Image, Model, Platform, Resources, cpu_millicores, memory_mib
from infra.config.ci import CiConfig
from infra.config.cluster import KubernetesConfig, Namespaces
from infra.config.data import DatabaseConfig, ObjectStoreConfig
from infra.config.evaluation import EvaluationConfig
from infra.config.gateway import GatewayConfig
from infra.config.gcp import GcpConfig
from infra.config.images import ImagesConfig
from infra.config.mlflow import MlflowConfig
from infra.config.monitoring import MonitoringConfig
from infra.config.serving import ModelSourceConfig, ServedModelConfig, ServingConfig
from infra.config.tenants import TenantDefaults, Tenants
from infra.config.workloads import WorkloadsConfig

# what the rest of the project imports from `infra.config`
__all__ = ["Image", "ModelSourceConfig", "Resources", "ServedModelConfig", "StackConfig", "cpu_millicores",
           "memory_mib"]


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
    # after namespaces and serving: tenants are checked against both (infra/config/tenants.py)
    tenant_defaults: TenantDefaults = TenantDefaults()
    tenants: Tenants = Field(default_factory=dict, description="name -> tenant; fromFile: a YAML class list")
    evaluation: EvaluationConfig = EvaluationConfig()

    @model_validator(mode="after")
    def _evaluated_tenants(self) -> StackConfig:
        self.evaluation.check_tenants(self.tenants)
        return self

    @property
    def protected(self) -> bool:
        """Stateful resources refuse deletion outside `dev` unless the stack says otherwise."""
        return self.protect if self.protect is not None else self.environment != "dev"
