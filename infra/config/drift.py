"""Drift monitoring of served models (docs/decisions/0017-drift-monitoring.md): per model, the
share of requests the serving runtime keeps (`serving.models.<name>.monitoring`), and the drift
CronJob that compares them with the training reference (`serving.drift`)."""

from __future__ import annotations

from pydantic import Field, PrivateAttr, field_validator

from infra.config.base import Image, Model, Resources, cron_expression
from infra.config.evaluation import EVALUATION_IMAGE
from infra.config.feedback import FeedbackConfig


class ModelMonitoringConfig(Model):
    """Off unless sampleRate > 0: a sample holds what callers sent (personal data: leave it at 0).
    Only registry-alias models sample (the project's MLServer runtime, `InferenceSampler`)."""

    sample_rate: float = Field(default=0.0, ge=0, le=1, description="share of requests (0-1) whose inputs and "
                               "outputs are kept for the drift job; 0: no sample, no drift job")
    flush_seconds: int = Field(default=60, ge=5, le=3600, description="how often a model pod writes its sample")
    drift_schedule: str = Field(default="41 * * * *", description="cron of the drift job (workloads.timeZone)")
    window_hours: float = Field(default=24, gt=0, le=24 * 31, description="hours of sample each run compares")
    retention_days: int = Field(default=7, ge=1, le=365, description="sample days kept in the object store")
    min_samples: int = Field(default=100, ge=1, description="rows below which no drift score is pushed")
    experiment: str | None = Field(default=None, min_length=1, description="MLflow experiment of the model's "
                                   "training runs (the drift job reads their reference); default: the demo "
                                   "workload's that registers the model")
    feedback: FeedbackConfig | None = Field(default=None, description="labels fed back by request id, scored "
                                            "as accuracy/F1 (docs/decisions/0018-label-feedback.md); off when absent")

    @field_validator("drift_schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        return cron_expression(v)


class DriftJobConfig(Model):
    """The drift CronJob (modules/monitoring/drift.py), one per model with sampleRate > 0."""

    _sampling: bool = PrivateAttr(default=False)  # set by ServingConfig: some model samples

    image: Image = Field(default=EVALUATION_IMAGE, description="image with mlops/drift.py "
                                                               "(modules/evaluation/Dockerfile)")
    # peak RSS measured here: 236 MiB (the job's imports with the full MLflow client, 22 features, 20 000 rows)
    resources: Resources = Field(default=Resources(cpu="50m", memory="320Mi", memory_limit="512Mi"),
                                 description="the drift pod's requests and memory limit")

    @property
    def enabled(self) -> bool:
        """Whether any model samples: infra/images.py builds the image only then (a dev stack stays small)."""
        return self._sampling
