"""The NEO workload on any stack: one training Job that reads the table from a URL, selects and
fits the classifier, and registers it in MLflow as a new version of `NEOs` (alias `champion` for
the first version, `challenger` after that).

    neo-train  Job  python -m workloads.neo.train --register   (NEO_DATA = args.data_url)

Serving is not declared here: the platform serves a registry version from `serving.models`
(modules/serving, MLServer's MLflow runtime over the V2 protocol); see workloads/neo/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules import kube
from workloads.common.deploy import TRACKING_KEYS, WorkloadContext

UID = 10001  # the image's non-root user (workloads/neo/Dockerfile)
COMPONENT = "neo"


@dataclass(frozen=True)
class Resources:
    """Requests and a memory limit; no CPU limit, so a short training run may use idle CPU."""

    cpu: str
    memory: str
    memory_limit: str

    def spec(self) -> dict[str, Any]:
        return {"requests": {"cpu": self.cpu, "memory": self.memory}, "limits": {"memory": self.memory_limit}}


@dataclass(frozen=True)
class NeoArgs:
    context: WorkloadContext
    data_url: pulumi.Input[str]  # http(s):// URL of nasa.csv (the image carries no data, nor an S3 client)
    train_resources: Resources = field(default_factory=lambda: Resources("500m", "1Gi", "2Gi"))
    deadline_seconds: int = 1800  # model selection takes ~10 s on 1 CPU; a stuck run is stopped


def _check(args: NeoArgs) -> None:
    image = args.context.image
    tag = image.rsplit("/", 1)[-1]
    if "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
        raise ValueError(f"neo image {image!r}: pin it by tag (not 'latest') or digest")
    if isinstance(args.data_url, str) and not args.data_url.startswith(("http://", "https://")):
        raise ValueError(f"neo data_url {args.data_url!r}: give an http(s):// URL the Job can reach")


class NeoWorkload(pulumi.ComponentResource):
    """The NEO training Job; the image holds the code, the context's Secret the credentials."""

    job_name: pulumi.Output[str]

    def __init__(self, name: str, args: NeoArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:workloads:Neo", name, None, opts)
        _check(args)
        ctx = args.context
        env = [
            {"name": "MLFLOW_TRACKING_URI", "value": ctx.tracking_uri},
            *(kube.secret_env(key, ctx.tracking_secret, key) for key in TRACKING_KEYS),
            {"name": "NEO_DATA", "value": args.data_url},
            {"name": "HOME", "value": "/tmp"},
        ]
        container = {
            "name": "train",
            "image": ctx.image,
            "command": ["python", "-m", "workloads.neo.train", "--register"],
            "env": env,
            "resources": args.train_resources.spec(),
            "security_context": kube.CONTAINER_SECURITY,
            "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
        }
        pod: dict[str, Any] = {
            "restart_policy": "Never",  # a failed run is retried as a new pod (backoff_limit), logs kept
            "automount_service_account_token": False,
            "security_context": kube.pod_security(UID),
            "containers": [container],
            "volumes": [{"name": "tmp", "empty_dir": {"size_limit": "512Mi"}}],
        }
        if ctx.service_account is not None:
            pod["service_account_name"] = ctx.service_account
        job = k8s.batch.v1.Job(
            f"{name}-train",
            metadata=kube.metadata("neo-train", ctx.namespace, COMPONENT),
            spec={
                "backoff_limit": 2,
                "active_deadline_seconds": args.deadline_seconds,
                "template": {"metadata": {"labels": kube.labels("neo-train", COMPONENT)}, "spec": pod},
            },
            # a new image or setting means a new training run: replace the (immutable) Job
            opts=kube.child(self, replace_on_changes=["spec"], delete_before_replace=True),
        )
        self.job_name = job.metadata.name
        self.register_outputs({"job_name": self.job_name})
