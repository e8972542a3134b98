"""The energy workload on any stack: a training Job, the daily `prod`/`pre` forecast CronJobs and the
daily quality monitor, all running the workload image with credentials from the platform's Secrets.

    energy-train    Job      (demo: seed synthetic readings) → train from the tables → register
    energy-ingest   CronJob  demo only: the last days' synthetic readings, weather through tomorrow
                             (ingestSchedule, default 00:30: yesterday is complete before the monitor)
    energy-prod     CronJob  predict --alias champion   --table energy_prod   (schedule, default 11:00)
    energy-pre      CronJob  predict --alias challenger --table energy_pre    (shadow, same schedule)
    energy-monitor  CronJob  yesterday's MAPE of both → model_quality_mape{model,alias} (Pushgateway)

Every CronJob sets `spec.timeZone` explicitly (the platform's zone, by default Europe/Madrid):
11:00 means 11:00 local time all year, not whatever zone the controller happens to run in.

A demo stack has no meters, so `energy-ingest` plays the meter feed: the generator is
deterministic per (seed, user, day), so the days it writes hold the values the training Job's
120-day seed would have written for them (same `DEMO_USERS`, `DEMO_SEED`), and its upserts make
a re-run replace its rows. It writes `INGEST_DAYS` days, so a stack that was down for a weekend
heals its gap on the next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules import kube
from workloads.common.deploy import DATABASE_KEY, PodTemplate, Resources, WorkloadContext, require_pinned, tracking_env

UID = 10001  # the image's non-root user (workloads/energy/Dockerfile)
COMPONENT = "energy"
MODEL_NAME = "energy-forecast"  # = workloads.energy.train.MODEL_NAME (not imported: keeps mlflow out of the program)
DEMO_USERS, DEMO_SEED = 20, 0  # the demo's synthetic site: the seed Job and the daily ingest agree on it
SEED_DAYS, INGEST_DAYS = 120, 3


@dataclass(frozen=True)
class EnergyArgs:
    context: WorkloadContext
    schedule: str = "0 11 * * *"  # predict tomorrow, daily at 11:00 local time (as in the source)
    monitor_schedule: str = "0 10 * * *"  # score yesterday once its readings are in, before new forecasts
    ingest_schedule: str = "30 0 * * *"  # demo only: yesterday's synthetic readings, before the monitor
    latitude: float | None = None  # site coordinates: forecast-day temperature from Open-Meteo;
    longitude: float | None = None  # without them, from the energy_weather table
    demo_data: bool = False  # the training Job first writes synthetic readings (a demo stack has no meters)
    train_resources: Resources = field(default_factory=lambda: Resources("1", "1Gi", "2Gi"))
    batch_resources: Resources = field(default_factory=lambda: Resources("250m", "512Mi", "1Gi"))


def _synthetic(days: int) -> list[str]:
    """The demo site's readings for the `days` days before today, weather through tomorrow."""
    return ["python", "-m", "workloads.energy.ingest", "--synthetic", "--users", str(DEMO_USERS),
            "--seed", str(DEMO_SEED), "--days", str(days)]


def _check(args: EnergyArgs) -> None:
    require_pinned(args.context.image, "energy")
    if args.context.database_secret is None:
        raise ValueError("energy workload: WorkloadContext.database_secret is required (readings and predictions live in PostgreSQL)")
    if (args.latitude is None) != (args.longitude is None):
        raise ValueError("energy workload: give both latitude and longitude, or neither")


class EnergyWorkload(pulumi.ComponentResource):
    """Kubernetes objects of the energy forecast; the image holds the code, the Secrets the credentials."""

    job_name: pulumi.Output[str]
    cron_job_names: pulumi.Output[list[str]]

    def __init__(self, name: str, args: EnergyArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:workloads:Energy", name, None, opts)
        _check(args)
        self._args = args
        ctx = args.context
        self._pods = PodTemplate(ctx, COMPONENT, UID, tmp_size="1Gi")
        self._env = [
            *tracking_env(ctx),
            kube.secret_env("DATABASE_URL", ctx.database_secret, DATABASE_KEY),
            {"name": "TZ", "value": ctx.timezone},
        ]
        train = self._container("train", ["python", "-m", "workloads.energy.train", "--from-database", "--register"],
                                args.train_resources)
        seed = self._container("seed-demo-data", _synthetic(SEED_DAYS), args.batch_resources)
        # the CronJobs come after the training Job, so they never run modelless
        job = self._pods.training_job(self, f"{name}-train", "energy-train", [train], 3600,
                                      init_containers=[seed] if args.demo_data else [])
        weather = (["--latitude", str(args.latitude), "--longitude", str(args.longitude)]
                   if args.latitude is not None else [])
        crons = [
            self._cron(f"{name}-{cron}", f"energy-{cron}", args.schedule, self._container(
                "predict", ["python", "-m", "workloads.energy.predict", "--alias", alias, "--table", table, *weather],
                args.batch_resources), depends_on=[job])
            for cron, alias, table in (("prod", "champion", "energy_prod"), ("pre", "challenger", "energy_pre"))
        ]
        monitor = self._container("monitor", ["python", "-m", "workloads.energy.monitor", "--model", MODEL_NAME,
                                              "--pair", "champion=energy_prod", "--pair", "challenger=energy_pre"],
                                  args.batch_resources)
        if ctx.pushgateway_url is not None:
            monitor["env"] = [*monitor["env"], {"name": "PUSHGATEWAY_URL", "value": ctx.pushgateway_url}]
        crons.append(self._cron(f"{name}-monitor", "energy-monitor", args.monitor_schedule, monitor, depends_on=[job]))
        if args.demo_data:
            crons.append(self._cron(f"{name}-ingest", "energy-ingest", args.ingest_schedule,
                                    self._container("ingest", _synthetic(INGEST_DAYS), args.batch_resources),
                                    depends_on=[job]))
        self.job_name = job.metadata.name
        self.cron_job_names = pulumi.Output.all(*(c.metadata.name for c in crons))
        self.register_outputs({"job_name": self.job_name, "cron_job_names": self.cron_job_names})

    def _container(self, name: str, command: list[str], resources: Resources) -> dict[str, Any]:
        return self._pods.container(name, command, self._env, resources)

    def _cron(self, logical: str, app: str, schedule: str, container: dict[str, Any],
              depends_on: list[pulumi.Resource]) -> k8s.batch.v1.CronJob:  # fmt: skip
        return k8s.batch.v1.CronJob(
            logical,
            metadata=kube.metadata(app, self._args.context.namespace, COMPONENT),
            spec={
                "schedule": schedule,
                "time_zone": self._args.context.timezone,
                "concurrency_policy": "Forbid",
                "starting_deadline_seconds": 3600,  # a missed 11:00 still runs if the cluster is back by 12:00
                "successful_jobs_history_limit": 3,
                "failed_jobs_history_limit": 3,
                "job_template": {
                    "spec": {"backoff_limit": 2, "active_deadline_seconds": 1800,
                             "template": self._pods.template(app, [container])}
                },
            },
            opts=kube.child(self, depends_on=depends_on),
        )
