"""The professor's evaluation on the cluster: a CronJob running `python -m mlops.evaluate`.

    evaluation  CronJob  python -m mlops.evaluate --dataset <d> --outputs /etc/mlops-evaluation/endpoints.json …

It runs in the platform namespace, the one tenant NetworkPolicies admit on Seldon's executor ports
(modules/tenants MODEL_PORTS), and calls each tenant model's executor Service directly
(`<model>-main.<tenant>.svc.cluster.local:8000`, Seldon 1.17.1's predictor Service name and engine
port): no gateway hop and no gateway authentication in between, the same path for every model. The
endpoints come from a ConfigMap (`{tenant: {model: url}}`, the format `mlops evaluate --outputs`
reads). Results: MLflow experiment `evaluation/<dataset>` as the `evaluation` MLflow user (EDIT on
that experiment only; its Secret sits in the platform namespace), the leaderboard page as that
experiment's `leaderboard` run artifact, and the gauges on the Pushgateway when there is one.

The image (modules/evaluation/Dockerfile) holds mlops/evaluate.py, mlops/catalog.py and the data
modules of the neo and mnist workloads, nothing else: the workload images have no `mlops` package
and no Prometheus client, and the evaluation must not depend on one tenant's task image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules import kube
from modules.mlflow.users import MlflowPermission, MlflowUser

UID = 10001  # the image's non-root user
COMPONENT = "evaluation"
MLFLOW_USER = "evaluation"
MLFLOW_SECRET = "mlflow-evaluation"  # keys username, password (modules/mlflow/users.py)
CONFIG_DIR = "/etc/mlops-evaluation"
ENDPOINTS_KEY = "endpoints.json"
SELDON_PREDICTOR = "main"  # modules/serving/seldon.py names the main predictor `main`
SELDON_ENGINE_PORT = 8000  # operator/constants (v1.17.1): the executor's HTTP port, the Service's `http`
SELDON_V2_NODE = "model"  # modules/serving/seldon.py NODE


def in_cluster_url(namespace: pulumi.Input[str], model: str, protocol: str) -> pulumi.Output[str]:
    """A tenant model's predictions endpoint on its Seldon executor Service (no gateway)."""
    path = f"v2/models/{SELDON_V2_NODE}/infer" if protocol == "v2" else "api/v1.0/predictions"
    return pulumi.Output.concat("http://", model, f"-{SELDON_PREDICTOR}.", namespace,
                                f".svc.cluster.local:{SELDON_ENGINE_PORT}/{path}")


def evaluation_mlflow_user(namespace: pulumi.Input[str], dataset: str) -> MlflowUser:
    """EDIT on `evaluation/<dataset>` only: it creates runs there, reads and writes nothing else."""
    return MlflowUser(MLFLOW_USER, namespace, MLFLOW_SECRET,
                      (MlflowPermission("experiment", f"evaluation/{dataset}", "EDIT"),))


@dataclass(frozen=True)
class EvaluationArgs:
    namespace: pulumi.Input[str]  # the platform namespace
    image: pulumi.Input[str]
    schedule: str
    time_zone: str
    dataset: str
    endpoints: Mapping[str, Mapping[str, pulumi.Input[str]]]  # tenant -> model -> URL
    tracking_uri: pulumi.Input[str]
    resources: Mapping[str, Any]
    tracking_secret: str = MLFLOW_SECRET
    pushgateway_url: pulumi.Input[str] | None = None
    data_url: str | None = None
    rows: int | None = None
    batch_size: int = 32
    timeout_seconds: float = 10.0
    deadline_seconds: int = 3600


def command(args: EvaluationArgs) -> list[str]:
    cmd = ["python", "-m", "mlops.evaluate", "--dataset", args.dataset, "--outputs", f"{CONFIG_DIR}/{ENDPOINTS_KEY}",
           "--batch-size", str(args.batch_size), "--timeout", f"{args.timeout_seconds:g}",
           "--html", "/tmp/leaderboard.html", "--json", "/tmp/results.json"]
    if args.data_url is not None:
        cmd += ["--data", args.data_url]
    elif args.dataset == "mnist":
        cmd += ["--data", "/tmp/mnist"]  # the real test set, downloaded and checked per run
    if args.rows is not None:
        cmd += ["--rows", str(args.rows)]
    return cmd


class Evaluation(pulumi.ComponentResource):
    cron_job_name: pulumi.Output[str]

    def __init__(self, name: str, args: EvaluationArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:evaluation:Evaluation", name, None, opts)
        if not args.endpoints:
            raise ValueError("Evaluation: no endpoint to evaluate (evaluation.tenants serve no model)")
        config = k8s.core.v1.ConfigMap(
            f"{name}-endpoints",
            metadata=kube.metadata("evaluation-endpoints", args.namespace, COMPONENT),
            data={ENDPOINTS_KEY: pulumi.Output.json_dumps(
                {tenant: dict(models) for tenant, models in sorted(args.endpoints.items())})},
            opts=kube.child(self),
        )
        env = [{"name": "MLFLOW_TRACKING_URI", "value": args.tracking_uri},
               kube.secret_env("MLFLOW_TRACKING_USERNAME", args.tracking_secret, "username"),
               kube.secret_env("MLFLOW_TRACKING_PASSWORD", args.tracking_secret, "password"),
               {"name": "HOME", "value": "/tmp"}]
        if args.pushgateway_url is not None:
            env.append({"name": "PUSHGATEWAY_URL", "value": args.pushgateway_url})
        container = {
            "name": "evaluate", "image": args.image, "command": command(args), "env": env,
            "resources": dict(args.resources), "security_context": kube.CONTAINER_SECURITY,
            "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"},
                              {"name": "endpoints", "mount_path": CONFIG_DIR, "read_only": True}],
        }
        pod = {
            "restart_policy": "Never",
            "automount_service_account_token": False,
            "security_context": kube.pod_security(UID),
            "containers": [container],
            "volumes": [{"name": "tmp", "empty_dir": {"size_limit": "256Mi"}},
                        {"name": "endpoints", "config_map": {"name": config.metadata.name}}],
        }
        cron = k8s.batch.v1.CronJob(
            name,
            metadata=kube.metadata("evaluation", args.namespace, COMPONENT),
            spec={
                "schedule": args.schedule,
                "time_zone": args.time_zone,
                "concurrency_policy": "Forbid",  # one run at a time: runs never compete for the models
                "starting_deadline_seconds": 3600,
                "successful_jobs_history_limit": 3,
                "failed_jobs_history_limit": 3,
                "job_template": {"spec": {
                    "backoff_limit": 1,
                    "active_deadline_seconds": args.deadline_seconds,
                    "template": {"metadata": {"labels": kube.labels("evaluation", COMPONENT)}, "spec": pod},
                }},
            },
            opts=kube.child(self),
        )
        # nothing calls the evaluation's pods
        kube.ingress_policy(name, args.namespace, COMPONENT, "evaluation", [], kube.child(self))
        self.cron_job_name = cron.metadata.name
        self.register_outputs({"cron_job_name": self.cron_job_name})
