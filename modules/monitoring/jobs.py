"""What the platform's scheduled metric jobs (delivery, drift, feedback) share: an MLflow login from a
Secret, the object-store keys of the request sample, and a hardened CronJob that nothing calls."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules import kube
from modules.platform.contract import S3Credentials


@dataclass(frozen=True, kw_only=True)
class SampleJobArgs:
    """What a scheduled job over one model's request sample is given (drift, feedback)."""
    namespace: pulumi.Input[str]  # the platform namespace
    image: pulumi.Input[str]
    schedule: str
    time_zone: str
    model: str  # registered model name (the alerts' `model` label)
    alias: str
    log_uri: pulumi.Input[str]
    window_hours: float
    retention_days: int
    pushgateway_url: pulumi.Input[str]
    resources: Mapping[str, Any]
    # static keys of the in-cluster store (and its endpoint); None: the cloud's workload identity
    s3_credentials: S3Credentials | None = None
    s3_endpoint: pulumi.Input[str] | None = None
    deadline_seconds: int = 1800


def mlflow_env(tracking_uri: pulumi.Input[str], secret: str) -> list[dict[str, Any]]:
    """MLflow's address and the job's own user (keys username, password: modules/mlflow/users.py)."""
    return [{"name": "MLFLOW_TRACKING_URI", "value": tracking_uri},
            kube.secret_env("MLFLOW_TRACKING_USERNAME", secret, "username"),
            kube.secret_env("MLFLOW_TRACKING_PASSWORD", secret, "password"),
            {"name": "HOME", "value": "/tmp"}]


def store_env(parent: pulumi.Resource, name: str, namespace: pulumi.Input[str], component: str,
              credentials: S3Credentials | None, endpoint: pulumi.Input[str] | None) -> list[dict[str, Any]]:
    """How a job reaches the request sample: the in-cluster store's endpoint and the job's own keys
    from a Secret `<name>-store`; neither on a cloud store with workload identity (None, None)."""
    env: list[dict[str, Any]] = []
    if endpoint is not None:
        env.append({"name": "MLFLOW_S3_ENDPOINT_URL", "value": endpoint})
    if credentials is not None:
        keys = k8s.core.v1.Secret(
            f"{name}-store",
            metadata=kube.metadata(f"{name}-store", namespace, component),
            type="Opaque",
            string_data={"AWS_ACCESS_KEY_ID": pulumi.Output.secret(credentials.access_key_id),
                         "AWS_SECRET_ACCESS_KEY": pulumi.Output.secret(credentials.secret_access_key)},
            opts=kube.child(parent),
        )
        env += [kube.secret_env(key, keys.metadata.name, key) for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    return env


def metric_cron_job(parent: pulumi.Resource, logical: str, app: str, namespace: pulumi.Input[str],
                    component: str, schedule: str, time_zone: str, uid: int, container: Mapping[str, Any],
                    tmp_size: str, deadline_seconds: int) -> k8s.batch.v1.CronJob:
    """One run at a time (a late run is skipped, not stacked), non-root without a service-account
    token, `/tmp` the only writable path (`tmp_size`), and a no-ingress NetworkPolicy."""
    pod = {
        "restart_policy": "Never",
        "automount_service_account_token": False,
        "security_context": kube.pod_security(uid),
        "containers": [{**container, "security_context": kube.CONTAINER_SECURITY,
                        "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}]}],
        "volumes": [{"name": "tmp", "empty_dir": {"size_limit": tmp_size}}],
    }
    cron = k8s.batch.v1.CronJob(
        logical,
        metadata=kube.metadata(app, namespace, component),
        spec={
            "schedule": schedule,
            "time_zone": time_zone,
            "concurrency_policy": "Forbid",
            "starting_deadline_seconds": 3600,
            "successful_jobs_history_limit": 1,
            "failed_jobs_history_limit": 3,
            "job_template": {"spec": {
                "backoff_limit": 1,
                "active_deadline_seconds": deadline_seconds,
                "template": {"metadata": {"labels": kube.labels(app, component)}, "spec": pod},
            }},
        },
        opts=kube.child(parent),
    )
    kube.ingress_policy(logical, namespace, component, app, [], kube.child(parent))  # nothing calls its pods
    return cron
