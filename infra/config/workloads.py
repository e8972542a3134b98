"""`workloads`: the demo models' Jobs and CronJobs."""

from __future__ import annotations

from functools import cache
from zoneinfo import available_timezones

from pydantic import Field, field_validator, model_validator

from infra.config.base import Image, Model, Resources, cron_expression
from infra.config.retraining import (EnergyRetrainConfig, MnistRetrainConfig, NeoRetrainConfig, RetrainConfig,
                                     RetrainingConfig)


class EnergyWorkloadConfig(Model):
    """Next-day consumption forecasts: training Job, daily prod/pre forecasts, daily MAPE monitor."""

    enabled: bool = Field(default=False, description="deploy the energy workload")
    image: Image = Field(description="image built from workloads/energy/Dockerfile (CI tags it with the git SHA)")
    schedule: str = Field(description="cron of the daily forecasts (energy-prod / energy-pre)")
    monitor_schedule: str = Field(description="cron of the daily MAPE monitor")
    ingest_schedule: str = Field(description="cron of energy-ingest (demoData only): yesterday's synthetic "
                                             "readings and the weather through tomorrow; keep it before "
                                             "monitorSchedule")
    demo_data: bool = Field(description="the training Job first writes synthetic readings, and the energy-ingest "
                                        "CronJob the readings of each new day")
    latitude: float | None = Field(default=None, ge=-90, le=90, description="site, for Open-Meteo forecasts")
    longitude: float | None = Field(default=None, ge=-180, le=180, description="site, for Open-Meteo forecasts")
    retrain: EnergyRetrainConfig = Field(description="what starts the training Job again (infra/config/retraining.py)")

    @field_validator("schedule", "monitor_schedule", "ingest_schedule")
    @classmethod
    def _schedules(cls, v: str) -> str:
        return cron_expression(v)

    def warnings(self) -> list[str]:
        """Where the forecast day's temperature comes from, when that is not the site's own forecast."""
        key = "mlops-stack:workloads.energy"
        if not self.enabled:
            return []
        if self.latitude is None and not self.demo_data:
            return [f"{key}.latitude/longitude: not set, so energy-prod and energy-pre read tomorrow's temperature "
                    "from the energy_weather table: fill it daily through tomorrow (python -m "
                    "workloads.energy.ingest --weather CSV) or they fail; set both for Open-Meteo's forecast"]
        if self.latitude is not None and self.demo_data:
            return [f"{key}.demoData: synthetic readings follow synthetic weather, while the forecasts use "
                    "Open-Meteo's real forecast for the coordinates: expect a higher MAPE; unset latitude/longitude "
                    "for the demo's own weather (the energy_weather table)"]
        return []


class NeoWorkloadConfig(Model):
    """Hazardous-NEO classifier: a training Job registering `NEOs` (serve it from `serving.models`)."""

    enabled: bool = Field(default=False, description="deploy the neo training Job")
    image: Image = Field(description="image built from workloads/neo/Dockerfile (CI tags it with the git SHA)")
    data_url: str | None = Field(default=None, description="http(s):// URL of nasa.csv the Job downloads; "
                                                           "required when enabled")
    retrain: NeoRetrainConfig = Field(description="what starts the training Job again (infra/config/retraining.py)")

    @model_validator(mode="after")
    def _data(self) -> NeoWorkloadConfig:
        if self.enabled and self.data_url is None:
            raise ValueError("dataUrl is required when enabled: an http(s):// URL of nasa.csv")
        if self.data_url is not None and not self.data_url.startswith(("http://", "https://")):
            raise ValueError(f"dataUrl {self.data_url!r}: an http(s):// URL the Job can reach is allowed")
        return self


class MnistWorkloadConfig(Model):
    """MNIST digits: a training Job on the real MNIST registering `mnist` (served as a custom image)."""

    enabled: bool = Field(default=False, description="deploy the mnist training Job (downloads MNIST over HTTPS)")
    image: Image = Field(description="image built from workloads/mnist/Dockerfile, target train")
    epochs: int = Field(ge=1, le=100, description="training epochs over the 60,000 images")
    retrain: MnistRetrainConfig = Field(description="what starts the training Job again (infra/config/retraining.py)")
    demo: bool = Field(default=False, description="serve the drawing page at models.<domain>/demo/mnist/; needs a "
                                                  "serving.models entry running the mnist-server image (Seldon "
                                                  "protocol)")


# reads every file of the zone database (tens of ms); a plan parses its config twice (CLI, program)
_time_zones = cache(available_timezones)


class WorkloadsConfig(Model):
    time_zone: str = Field(description="IANA zone of every workload CronJob (spec.timeZone)")
    pushgateway_image: Image
    pushgateway_resources: Resources
    energy: EnergyWorkloadConfig
    neo: NeoWorkloadConfig
    mnist: MnistWorkloadConfig
    retraining: RetrainingConfig

    @property
    def any_enabled(self) -> bool:
        return self.energy.enabled or self.neo.enabled or self.mnist.enabled

    @property
    def retrained(self) -> dict[str, RetrainConfig]:
        """The enabled workloads with a retraining trigger, by name."""
        named = {"energy": self.energy, "neo": self.neo, "mnist": self.mnist}
        return {name: w.retrain for name, w in named.items() if w.enabled and w.retrain.triggers}

    @model_validator(mode="after")
    def _retraining(self) -> WorkloadsConfig:
        self.retraining._active = bool(self.retrained)
        return self

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        if v not in _time_zones():
            raise ValueError("an IANA time zone such as 'Europe/Madrid' or 'Etc/UTC' is allowed")
        return v
