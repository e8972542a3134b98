"""What the platform hands a workload's deploy component: where to run and which Secrets to read.

The platform (infra/program.py) creates the namespace and the Secrets; a workload's component
(`workloads/<name>/deploy.py`) only declares its Jobs/CronJobs and references the Secrets by name,
so no credential ever appears in a workload manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules import kube

# Keys of the Secrets named below; both are created by the platform.
TRACKING_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
DATABASE_KEY = "DATABASE_URL"  # postgresql://user:password@host:5432/dbname


@dataclass(frozen=True)
class WorkloadContext:
    namespace: pulumi.Input[str]
    image: pulumi.Input[str]  # the workload image: content-addressed tag (git SHA) or the stack's build digest
    tracking_uri: pulumi.Input[str]  # in-cluster MLflow URL, e.g. http://mlflow.mlflow.svc:5000
    tracking_secret: pulumi.Input[str]  # Secret with TRACKING_KEYS
    database_secret: pulumi.Input[str] | None = None  # Secret with DATABASE_KEY (workload tables)
    service_account: pulumi.Input[str] | None = None  # its cloud identity may read the model bucket
    timezone: str = "Europe/Madrid"  # CronJob spec.timeZone, set explicitly
    pushgateway_url: pulumi.Input[str] | None = None  # where batch jobs push quality gauges (none: logs only)


@dataclass(frozen=True)
class Resources:
    """Requests (what the scheduler reserves) and a memory limit; no CPU limit, so a training or
    batch run may use idle CPU instead of being throttled."""

    cpu: str
    memory: str
    memory_limit: str

    def spec(self) -> dict[str, Any]:
        return {"requests": {"cpu": self.cpu, "memory": self.memory}, "limits": {"memory": self.memory_limit}}


def require_pinned(image: pulumi.Input[str], workload: str) -> None:
    """A workload image must name one build: a tag other than `latest`, or a digest (which the stack's own
    builds, Outputs, always carry)."""
    if not isinstance(image, str):
        return
    tag = image.rsplit("/", 1)[-1]
    if "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
        raise ValueError(f"{workload} image {image!r}: pin it by tag (not 'latest') or digest")


def tracking_env(ctx: WorkloadContext) -> list[dict[str, Any]]:
    """MLflow's URL and credentials (from the platform's Secret), and a writable HOME."""
    return [
        {"name": "MLFLOW_TRACKING_URI", "value": ctx.tracking_uri},
        *(kube.secret_env(key, ctx.tracking_secret, key) for key in TRACKING_KEYS),
        {"name": "HOME", "value": "/tmp"},
    ]


@dataclass(frozen=True)
class PodTemplate:
    """The pod every workload Job runs: the image's non-root user, a read-only root file system with
    an emptyDir on /tmp, no API token, and the context's service account (its cloud identity)."""

    ctx: WorkloadContext
    component: str
    uid: int
    tmp_size: str = "512Mi"

    def container(self, name: str, command: list[str], env: list[dict[str, Any]], resources: Resources,
                  mounts: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
        return {
            "name": name,
            "image": self.ctx.image,
            "command": command,
            "env": list(env),
            "resources": resources.spec(),
            "security_context": kube.CONTAINER_SECURITY,
            "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}, *mounts],
        }

    def template(self, app: str, containers: list[dict[str, Any]], init_containers: Sequence[dict] = (),
                 volumes: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "restart_policy": "Never",  # a failed run is retried as a new pod (backoff_limit), logs kept
            "automount_service_account_token": False,
            "security_context": kube.pod_security(self.uid),
            "containers": containers,
            "volumes": [{"name": "tmp", "empty_dir": {"size_limit": self.tmp_size}}, *volumes],
        }
        if init_containers:
            spec["init_containers"] = list(init_containers)
        if self.ctx.service_account is not None:
            spec["service_account_name"] = self.ctx.service_account
        return {"metadata": {"labels": kube.labels(app, self.component)}, "spec": spec}

    def training_job(self, parent: pulumi.Resource, logical: str, app: str, containers: list[dict[str, Any]],
                     deadline_seconds: int, init_containers: Sequence[dict] = (),
                     volumes: Sequence[dict[str, Any]] = ()) -> k8s.batch.v1.Job:
        """A training Job; `pulumi up` waits for it (and reports a failed run) up to its own deadline,
        not the provider's default 10 minutes, so what depends on the model comes after it."""
        wait = f"{deadline_seconds // 60 + 5}m"
        return k8s.batch.v1.Job(
            logical,
            metadata=kube.metadata(app, self.ctx.namespace, self.component),
            spec={
                "backoff_limit": 2,
                "active_deadline_seconds": deadline_seconds,
                "template": self.template(app, containers, init_containers, volumes),
            },
            # a new image or setting means a new training run: replace the (immutable) Job
            opts=kube.child(parent, replace_on_changes=["spec"], delete_before_replace=True,
                            custom_timeouts=pulumi.CustomTimeouts(create=wait, update=wait)),
        )
