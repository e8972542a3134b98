"""The delivery (DORA) metrics on the cluster: a CronJob running `python -m mlops.delivery --push`.

    delivery  CronJob  python -m mlops.delivery --model M … --window-days N --prometheus P --push G

It reads the promoted models' version tags (mlops/delivery.py) as the `delivery` MLflow user, READ
on those registered models only (its Secret in the platform namespace, where the CronJob runs),
takes the quality alerts' firing episodes from Prometheus for the time to restore, and pushes the
gauges to the Pushgateway (one group per model). The image is the evaluation's
(modules/evaluation/Dockerfile): it holds mlops/delivery.py and the MLflow and Prometheus
clients; the workload images have neither the `mlops` package nor every model's code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from modules.mlflow.users import MlflowPermission, MlflowUser
from modules.monitoring.jobs import metric_cron_job, mlflow_env

UID = 10001  # the evaluation image's non-root user
COMPONENT = "monitoring"
NAME = "delivery-metrics"
MLFLOW_USER = "delivery"
MLFLOW_SECRET = "mlflow-delivery"  # keys username, password (modules/mlflow/users.py)


def delivery_mlflow_user(namespace: pulumi.Input[str], models: Sequence[str]) -> MlflowUser:
    """READ on the measured registered models: their versions' tags are all the job reads."""
    return MlflowUser(MLFLOW_USER, namespace, MLFLOW_SECRET,
                      tuple(MlflowPermission("registered_model", m, "READ") for m in models))


@dataclass(frozen=True)
class DeliveryArgs:
    namespace: pulumi.Input[str]  # the platform namespace
    image: pulumi.Input[str]
    schedule: str
    time_zone: str
    models: Sequence[str]
    window_days: int
    tracking_uri: pulumi.Input[str]
    pushgateway_url: pulumi.Input[str]
    prometheus_url: pulumi.Input[str]
    resources: Mapping[str, Any]
    tracking_secret: str = MLFLOW_SECRET
    deadline_seconds: int = 600


def command(args: DeliveryArgs) -> list[str]:
    models = [arg for m in args.models for arg in ("--model", m)]
    return ["python", "-m", "mlops.delivery", *models, "--window-days", str(args.window_days)]


class Delivery(pulumi.ComponentResource):
    cron_job_name: pulumi.Output[str]

    def __init__(self, name: str, args: DeliveryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:monitoring:Delivery", name, None, opts)
        env = [*mlflow_env(args.tracking_uri, args.tracking_secret),
               {"name": "PUSHGATEWAY_URL", "value": args.pushgateway_url},
               {"name": "PROMETHEUS_URL", "value": args.prometheus_url}]
        container = {"name": "delivery", "image": args.image, "command": command(args), "env": env,
                     "resources": dict(args.resources)}
        cron = metric_cron_job(self, name, NAME, args.namespace, COMPONENT, args.schedule, args.time_zone, UID,
                               container, "64Mi", args.deadline_seconds)
        self.cron_job_name = cron.metadata.name
        self.register_outputs({"cron_job_name": self.cron_job_name})
