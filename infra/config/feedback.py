"""Label feedback of a served classifier (docs/decisions/0018-label-feedback.md):
`serving.models.<name>.monitoring.feedback`, the job that scores the sampled answers against the
labels sent back for them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from infra.config.base import Model, cron_expression

# the demo workloads' registered models and the metric each one is judged by (workloads/neo: F1 of
# the hazardous class; workloads/mnist: accuracy over ten digits)
DEMO_METRICS = {"NEOs": "f1", "mnist": "accuracy"}
FEEDBACK_DIRECTORY = "feedback"  # mlops/feedback.py LABELS: beside the aliases' samples


class FeedbackConfig(Model):
    """Needs the request sample (monitoring.sampleRate > 0): labels join the sampled answers by request id."""

    schedule: str = Field(default="47 * * * *", description="cron of the feedback job (workloads.timeZone)")
    window_hours: float = Field(default=24, gt=0, le=24 * 31, description="hours of sampled answers each run scores")
    min_labels: int = Field(default=50, ge=1, description="labelled rows below which no quality is pushed")
    metric: Literal["accuracy", "f1"] | None = Field(default=None, description="what is computed; default: the "
                                                     "demo model's (NEOs: f1, mnist: accuracy)")
    positive_class: str = Field(default="1", min_length=1, description="the class F1 is computed for")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        return cron_expression(v)
