"""`workloads`: the demo models' Jobs and CronJobs."""

from __future__ import annotations


from pydantic import Field, field_validator, model_validator

from infra.config.base import Image, Model, Resources, cron_expression


class EnergyWorkloadConfig(Model):
    """Next-day consumption forecasts: training Job, daily prod/pre forecasts, daily MAPE monitor."""

    enabled: bool = Field(default=False, description="deploy the energy workload")
    image: Image = Field(description="image built from workloads/energy/Dockerfile (CI tags it with the git SHA)")
    schedule: str = Field(description="cron of the daily forecasts (energy-prod / energy-pre)")
    monitor_schedule: str = Field(description="cron of the daily MAPE monitor")
    demo_data: bool = Field(description="the training Job first writes synthetic readings")
    latitude: float | None = Field(default=None, ge=-90, le=90, description="site, for Open-Meteo forecasts")
    longitude: float | None = Field(default=None, ge=-180, le=180, description="site, for Open-Meteo forecasts")

    @field_validator("schedule", "monitor_schedule")
    @classmethod
    def _schedules(cls, v: str) -> str:
        return cron_expression(v)


class NeoWorkloadConfig(Model):
    """Hazardous-NEO classifier: a training Job registering `NEOs` (serve it from `serving.models`)."""

    enabled: bool = Field(default=False, description="deploy the neo training Job")
    image: Image = Field(description="image built from workloads/neo/Dockerfile (CI tags it with the git SHA)")
    data_url: str | None = Field(default=None, description="http(s):// URL of nasa.csv the Job downloads; "
                                                           "required when enabled")

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
    demo: bool = Field(default=False, description="serve the drawing page at models.<domain>/demo/mnist/; needs a "
                                                  "serving.models entry running the mnist-server image (Seldon "
                                                  "protocol)")


class WorkloadsConfig(Model):
    time_zone: str = Field(description="IANA zone of every workload CronJob (spec.timeZone)")
    pushgateway_image: Image
    pushgateway_resources: Resources
    energy: EnergyWorkloadConfig
    neo: NeoWorkloadConfig
    mnist: MnistWorkloadConfig

    @property
    def any_enabled(self) -> bool:
        return self.energy.enabled or self.neo.enabled or self.mnist.enabled

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import available_timezones

        if v not in available_timezones():
            raise ValueError("an IANA time zone such as 'Europe/Madrid' or 'Etc/UTC' is allowed")
        return v
