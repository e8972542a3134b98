"""`monitoring`: kube-prometheus-stack sizes, retention and alerting."""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator

from infra.config.alerting import AlertingConfig
from infra.config.base import Image, Model, Resources, cron_expression
from infra.config.evaluation import EVALUATION_IMAGE


class MonitoringResources(Model):
    prometheus: Resources
    alertmanager: Resources
    grafana: Resources
    sidecar: Resources
    operator: Resources
    kube_state_metrics: Resources
    node_exporter: Resources
    small: Resources


class DeliveryConfig(Model):
    """The delivery (DORA) metrics CronJob (modules/monitoring/delivery.py). Off by default: it runs
    the evaluation image, which a stack then builds (and, on eks, needs in aws.registryImages)."""

    enabled: bool = Field(default=False, description="push lead time, deployment frequency, change failure "
                                                     "rate and time to restore of the promoted models")
    schedule: str = Field(default="17 * * * *", description="cron of the runs (workloads.timeZone)")
    window_days: int = Field(default=30, ge=1, le=365, description="days back each figure covers")
    models: list[str] = Field(default_factory=list, description="registered models to measure; empty: those "
                                                                "served by alias and the enabled workloads'")
    image: Image = Field(default=EVALUATION_IMAGE, description="image with mlops/delivery.py "
                                                               "(modules/evaluation/Dockerfile)")
    # peak RSS measured here: 264 MiB (tests/test_delivery.py, the image's file set with the full MLflow client)
    resources: Resources = Field(default=Resources(cpu="20m", memory="320Mi", memory_limit="512Mi"),
                                 description="the delivery pod's requests and memory limit")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        return cron_expression(v)


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
    alerting: AlertingConfig = Field(default=AlertingConfig(),
                                     description="Alertmanager receivers, routes, grouping and inhibitions")
    delivery: DeliveryConfig = Field(default=DeliveryConfig(), description="delivery (DORA) metrics CronJob")

    @field_validator("retention")
    @classmethod
    def _retention(cls, v: str) -> str:
        if not re.match(r"^\d+(h|d|w|y)$", v):
            raise ValueError("a duration such as '12h', '2d', '15d' or '4w' is allowed")
        return v
