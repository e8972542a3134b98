"""The drift job of one served model on the cluster: a CronJob running `python -m mlops.drift`.

    drift-<model>  CronJob  python -m mlops.drift --model M --alias A [--shadow C] --log-uri U …

It reads the request sample the model's pods write (modules/serving/mlserver-image/mlops_mlserver.py
`InferenceSampler`) with its own object-store keys (read and delete: it prunes the days past the
retention), loads the alias's training reference as the `drift` MLflow user (READ on the models'
registered models and their training experiments, whose runs hold the reference), and pushes the
scores to the Pushgateway (docs/decisions/0017-drift-monitoring.md). The image is the evaluation's
(modules/evaluation/Dockerfile): it holds mlops/drift.py, the MLflow client, scipy and boto3.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi

from modules.mlflow.users import MlflowPermission, MlflowUser
from modules.monitoring.jobs import SampleJobArgs, metric_cron_job, mlflow_env, store_env

UID = 10001  # the evaluation image's non-root user
COMPONENT = "monitoring"
MLFLOW_USER = "drift"
MLFLOW_SECRET = "mlflow-drift"  # keys username, password (modules/mlflow/users.py)


def drift_mlflow_user(namespace: pulumi.Input[str], models: Mapping[str, str]) -> MlflowUser:
    """READ on each monitored registered model (the alias) and its training experiment (the
    reference is an artifact of the run behind the alias): `models` maps model -> experiment."""
    permissions = [MlflowPermission(kind, name, "READ") for model, experiment in sorted(models.items())
                   for kind, name in (("registered_model", model), ("experiment", experiment))]
    return MlflowUser(MLFLOW_USER, namespace, MLFLOW_SECRET, tuple(permissions))


@dataclass(frozen=True, kw_only=True)
class DriftArgs(SampleJobArgs):
    min_samples: int
    tracking_uri: pulumi.Input[str]
    shadow: str | None = None  # the shadow candidate's alias: its agreement with `alias`
    tracking_secret: str = MLFLOW_SECRET


def command(args: DriftArgs) -> list[pulumi.Input[str]]:
    shadow = ["--shadow", args.shadow] if args.shadow else []
    return ["python", "-m", "mlops.drift", "--model", args.model, "--alias", args.alias, *shadow,
            "--log-uri", args.log_uri, "--window-hours", f"{args.window_hours:g}",
            "--min-samples", str(args.min_samples), "--retention-days", str(args.retention_days),
            "--pushgateway", args.pushgateway_url]


class Drift(pulumi.ComponentResource):
    cron_job_name: pulumi.Output[str]

    def __init__(self, name: str, args: DriftArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:monitoring:Drift", name, None, opts)
        env = mlflow_env(args.tracking_uri, args.tracking_secret)
        env += store_env(self, name, args.namespace, COMPONENT, args.s3_credentials, args.s3_endpoint)
        container = {"name": "drift", "image": args.image, "command": command(args), "env": env,
                     "resources": dict(args.resources)}
        # MLflow downloads the reference (129 KiB) and the day objects through /tmp
        cron = metric_cron_job(self, name, name, args.namespace, COMPONENT, args.schedule, args.time_zone, UID,
                               container, "256Mi", args.deadline_seconds)
        self.cron_job_name = cron.metadata.name
        self.register_outputs({"cron_job_name": self.cron_job_name})

