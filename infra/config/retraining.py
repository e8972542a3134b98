"""`workloads.<name>.retrain` and `workloads.retraining`: what starts a workload's training again
(docs/decisions/0016-retraining-trigger.md).

Each trigger ends at the same in-cluster receiver (modules/retraining), which starts the workload's
own training Job once at a time per model and not again within `cooldownMinutes`:
- `schedule`: a CronJob that asks the receiver on that cron;
- `newData`: a CronJob that checks for new data on its cron and asks the receiver when there is
  some (energy: `minRows` more readings than the champion was trained on; neo: `dataUrl` no longer
  holds the table the champion was trained on);
- `qualityDrop`: Alertmanager delivers `ModelQualityDegraded` of the workload's model;
- `drift`: Alertmanager delivers `ModelDrift` of the workload's model.

`promote` adds the workload's own promotion gate after the training in the same Job (the pipeline's
`ci/promote` code and margin), so a retrained challenger that beats the champion is promoted.
"""

from __future__ import annotations

from pydantic import Field, PrivateAttr, field_validator, model_validator

from infra.config.base import Image, Model, Resources, cron_expression

TRIGGERS = ("schedule", "newData", "qualityDrop", "drift")
# the model each workload registers (MODEL_NAME in workloads/<name>/train.py): its alerts' `model` label
REGISTERED_MODELS = {"energy": "energy-forecast", "neo": "NEOs", "mnist": "mnist"}
MAX_COOLDOWN_MINUTES = 7 * 24 * 60  # retraining Jobs are kept a week (their TTL): the cool-down reads them


class NewDataConfig(Model):
    schedule: str = Field(description="cron of the new-data check (workloads.timeZone)")
    min_rows: int | None = Field(default=None, ge=1,
                                 description="energy (required): readings more than the champion was trained "
                                             "on that start a retraining; neo: null (a changed file starts one)")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        return cron_expression(v)


class RetrainConfig(Model):
    """A workload's retraining triggers; all off = no retraining but by hand."""

    schedule: str | None = Field(default=None, description="cron of scheduled retraining (workloads.timeZone); "
                                                           "null = none")
    new_data: NewDataConfig | None = Field(default=None, description="retrain when new data arrived (energy and neo; "
                                                                         "mnist: null); null = never")
    quality_drop: bool = Field(default=False, description="retrain when ModelQualityDegraded fires for the model")
    drift: bool = Field(default=False, description="retrain when ModelDrift fires for the model")
    cooldown_minutes: int = Field(default=360, ge=0, le=MAX_COOLDOWN_MINUTES,
                                  description="no new retraining within this long after the last one started")
    promote: bool = Field(default=True, description="after a retraining, run the workload's promotion gate in the "
                                                    "same Job: champion moves only if the challenger beats it")
    promote_margin: float = Field(default=0.0, ge=0, description="the gate's margin (the pipeline's PROMOTE_MARGIN): "
                                                                 "neo F1, mnist accuracy, energy MAPE (a fraction)")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        return None if v is None else cron_expression(v)

    @property
    def triggers(self) -> tuple[str, ...]:
        on = {"schedule": self.schedule is not None, "newData": self.new_data is not None,
              "qualityDrop": self.quality_drop, "drift": self.drift}
        return tuple(t for t in TRIGGERS if on[t])


class RetrainingConfig(Model):
    """The retraining receiver, deployed when an enabled workload has a trigger (`enabled` is derived)."""

    image: Image = Field(description="image built from modules/retraining/image")
    resources: Resources = Field(description="the receiver's requests and memory limit")
    _active: bool = PrivateAttr(default=False)

    @property
    def enabled(self) -> bool:
        """Set by WorkloadsConfig; `used_images` (infra/images.py) skips the image of a disabled section."""
        return self._active


class EnergyRetrainConfig(RetrainConfig):
    promote_days: int = Field(default=7, ge=1, le=60, description="the days of shadow forecasts (energy_pre beside "
                              "energy_prod, with actuals) the gate compares (the pipeline's PROMOTE_DAYS)")

    @model_validator(mode="after")
    def _rows(self) -> EnergyRetrainConfig:
        if self.new_data is not None and self.new_data.min_rows is None:
            raise ValueError("newData.minRows is required: the readings since the last training that start one, "
                             "e.g. 720")
        return self


class NeoRetrainConfig(RetrainConfig):
    @model_validator(mode="after")
    def _file(self) -> NeoRetrainConfig:
        if self.new_data is not None and self.new_data.min_rows is not None:
            raise ValueError(f"newData.minRows is {self.new_data.min_rows}; neo retrains when dataUrl holds another "
                             "table than the champion's (its digest), not on a row count: allowed null")
        return self


class MnistRetrainConfig(RetrainConfig):
    @model_validator(mode="after")
    def _fixed(self) -> MnistRetrainConfig:
        if self.new_data is not None:
            raise ValueError("newData is set; mnist trains on the fixed MNIST set: allowed null")
        return self
