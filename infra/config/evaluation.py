"""`evaluation`: the professor's scheduled evaluation of the tenants' models (modules/evaluation).

A CronJob in the platform namespace runs `python -m mlops.evaluate` (mlops/evaluate.py) from the
evaluation image on `schedule`, over every tenant model of `tenants` (empty: all), with the
held-out data of `dataset`, and records the leaderboard in MLflow and on a Pushgateway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from infra.config.base import Image, Model, Resources, cron_expression

# built from modules/evaluation/Dockerfile (`make up` on minikube; `images.mode: build` elsewhere)
EVALUATION_IMAGE = Image(repository="mlops-stack/evaluation", tag="1")


class EvaluationConfig(Model):
    enabled: bool = Field(default=False, description="deploy the evaluation CronJob")
    schedule: str = Field(default="0 6 * * *", description="cron of the evaluation runs (workloads.timeZone)")
    dataset: Literal["neo", "mnist"] = Field(default="neo", description="task and held-out data (energy is a batch "
                                                                         "model: its MAPE monitor scores it)")
    tenants: list[str] = Field(default_factory=list, description="tenants to evaluate; empty: every tenant")
    data_url: str | None = Field(default=None, description="neo: http(s):// URL of nasa.csv the Job downloads "
                                                            "(mnist: the test set from PyTorch's mirror)")
    rows: int | None = Field(default=None, ge=1, description="evaluate on the first N held-out rows only")
    batch_size: int = Field(default=32, ge=1, le=1000, description="rows per request")
    timeout_seconds: float = Field(default=10.0, gt=0, le=300, description="per request")
    image: Image = Field(default=EVALUATION_IMAGE, description="image built from modules/evaluation/Dockerfile")
    # peak RSS measured here: 216 MB for a neo run without MLflow, 253 MB with the imports of MLflow's client
    resources: Resources = Field(default=Resources(cpu="100m", memory="384Mi", memory_limit="768Mi"),
                                 description="the evaluation pod's requests and memory limit")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        return cron_expression(v)

    @model_validator(mode="after")
    def _data(self) -> EvaluationConfig:
        if self.enabled and self.dataset == "neo" and self.data_url is None:
            raise ValueError("dataUrl is required for dataset neo: an http(s):// URL of nasa.csv the Job can reach")
        if self.data_url is not None and not self.data_url.startswith(("http://", "https://")):
            raise ValueError(f"dataUrl {self.data_url!r}: an http(s):// URL the Job can reach is allowed")
        if self.data_url is not None and self.dataset != "neo":
            raise ValueError(f"dataUrl is read for dataset neo only (dataset {self.dataset!r} downloads its own)")
        return self

    def check_tenants(self, tenants: Mapping[str, Any]) -> None:
        """Cross-section check (StackConfig): the tenants exist and serve models (tenants require
        serving.engine seldon, whose executor Services the CronJob calls)."""
        if not self.enabled:
            return
        unknown = sorted(set(self.tenants) - set(tenants))
        if unknown:
            raise ValueError(f"evaluation.tenants: {unknown} are not tenants of this stack; known: {sorted(tenants)}")
        if not any(tenants[t].models for t in (self.tenants or tenants)):
            raise ValueError("evaluation.enabled: the evaluated tenants serve no model (tenants.<name>.models)")
