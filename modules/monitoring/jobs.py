"""What the platform's scheduled metric jobs (delivery, drift) share: an MLflow login from a Secret
and a hardened CronJob that nothing calls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules import kube


def mlflow_env(tracking_uri: pulumi.Input[str], secret: str) -> list[dict[str, Any]]:
    """MLflow's address and the job's own user (keys username, password: modules/mlflow/users.py)."""
    return [{"name": "MLFLOW_TRACKING_URI", "value": tracking_uri},
            kube.secret_env("MLFLOW_TRACKING_USERNAME", secret, "username"),
            kube.secret_env("MLFLOW_TRACKING_PASSWORD", secret, "password"),
            {"name": "HOME", "value": "/tmp"}]


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
