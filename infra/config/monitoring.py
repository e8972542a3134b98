"""`monitoring`: kube-prometheus-stack sizes, retention and alerting."""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator

from infra.config.alerting import AlertingConfig
from infra.config.base import Model, Resources


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
    alerting: AlertingConfig = Field(default=AlertingConfig(),
                                     description="Alertmanager receivers, routes, grouping and inhibitions")

    @field_validator("retention")
    @classmethod
    def _retention(cls, v: str) -> str:
        if not re.match(r"^\d+(h|d|w|y)$", v):
            raise ValueError("a duration such as '12h', '2d', '15d' or '4w' is allowed")
        return v
