"""The energy workload on any stack: a training Job, the daily `prod`/`pre` forecast CronJobs and the
daily quality monitor, all running the workload image with credentials from the platform's Secrets.

    energy-train    Job      (demo: seed synthetic readings) → train from the tables → register
    energy-prod     CronJob  predict --alias champion   --table energy_prod   (schedule, default 11:00)
    energy-pre      CronJob  predict --alias challenger --table energy_pre    (shadow, same schedule)
    energy-monitor  CronJob  yesterday's MAPE of both → model_quality_mape{model,alias} (Pushgateway)

Every CronJob sets `spec.timeZone` explicitly (the platform's zone, by default Europe/Madrid):
11:00 means 11:00 local time all year, not whatever zone the controller happens to run in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules import kube
from workloads.common.deploy import DATABASE_KEY, TRACKING_KEYS, WorkloadContext

UID = 10001  # the image's non-root user (workloads/energy/Dockerfile)
COMPONENT = "energy"
MODEL_NAME = "energy-forecast"  # = workloads.energy.train.MODEL_NAME (not imported: keeps mlflow out of the program)


@dataclass(frozen=True)
class Resources:
    """Requests (what the scheduler reserves) and a memory limit; no CPU limit, so a short batch job
    may use idle CPU instead of being throttled."""

    cpu: str
    memory: str
    memory_limit: str

    def spec(self) -> dict[str, Any]:
        return {"requests": {"cpu": self.cpu, "memory": self.memory}, "limits": {"memory": self.memory_limit}}


@dataclass(frozen=True)
class EnergyArgs:
    context: WorkloadContext
    schedule: str = "0 11 * * *"  # predict tomorrow, daily at 11:00 local time (as in the source)
    monitor_schedule: str = "0 10 * * *"  # score yesterday once its readings are in, before new forecasts
    latitude: float | None = None  # site coordinates: forecast-day temperature from Open-Meteo;
    longitude: float | None = None  # without them, from the energy_weather table
    demo_data: bool = False  # the training Job first writes synthetic readings (a demo stack has no meters)
    train_resources: Resources = field(default_factory=lambda: Resources("1", "1Gi", "2Gi"))
    batch_resources: Resources = field(default_factory=lambda: Resources("250m", "512Mi", "1Gi"))


def _check(args: EnergyArgs) -> None:
    image = args.context.image
    tag = image.rsplit("/", 1)[-1]
    if "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
        raise ValueError(f"energy image {image!r}: pin it by tag (not 'latest') or digest")
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
        self._env = [
            {"name": "MLFLOW_TRACKING_URI", "value": ctx.tracking_uri},
            *(kube.secret_env(key, ctx.tracking_secret, key) for key in TRACKING_KEYS),
            kube.secret_env("DATABASE_URL", ctx.database_secret, DATABASE_KEY),
            {"name": "TZ", "value": ctx.timezone},
            {"name": "HOME", "value": "/tmp"},
        ]
        train = self._container("train", ["python", "-m", "workloads.energy.train", "--from-database", "--register"],
                                args.train_resources)
        seed = self._container("seed-demo-data", ["python", "-m", "workloads.energy.ingest", "--synthetic"],
                               args.batch_resources)
        job = k8s.batch.v1.Job(
            f"{name}-train",
            metadata=kube.metadata("energy-train", ctx.namespace, COMPONENT),
            spec={
                "backoff_limit": 2,
                "active_deadline_seconds": 3600,
                "template": self._pod("energy-train", [train], [seed] if args.demo_data else []),
            },
            # a new image or setting means a new training run: replace the (immutable) Job. `pulumi up`
            # waits for it (and reports a failed training) up to the Job's own deadline, not the
            # provider's default 10 minutes; the CronJobs come after it, so they never run modelless.
            opts=kube.child(self, replace_on_changes=["spec"], delete_before_replace=True,
                            custom_timeouts=pulumi.CustomTimeouts(create="65m", update="65m")),
        )
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
        self.job_name = job.metadata.name
        self.cron_job_names = pulumi.Output.all(*(c.metadata.name for c in crons))
        self.register_outputs({"job_name": self.job_name, "cron_job_names": self.cron_job_names})

    def _container(self, name: str, command: list[str], resources: Resources) -> dict[str, Any]:
        return {
            "name": name,
            "image": self._args.context.image,
            "command": command,
            "env": list(self._env),
            "resources": resources.spec(),
            "security_context": kube.CONTAINER_SECURITY,
            "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
        }

    def _pod(self, app: str, containers: list[dict], init_containers: Sequence[dict] = ()) -> dict[str, Any]:
        ctx = self._args.context
        spec: dict[str, Any] = {
            "restart_policy": "Never",  # a failed run is retried as a new pod (backoff_limit), logs kept
            "automount_service_account_token": False,
            "security_context": kube.pod_security(UID),
            "containers": containers,
            "volumes": [{"name": "tmp", "empty_dir": {"size_limit": "1Gi"}}],
        }
        if init_containers:
            spec["init_containers"] = list(init_containers)
        if ctx.service_account is not None:
            spec["service_account_name"] = ctx.service_account
        return {"metadata": {"labels": kube.labels(app, COMPONENT)}, "spec": spec}

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
                             "template": self._pod(app, [container])}
                },
            },
            opts=kube.child(self, depends_on=depends_on),
        )
