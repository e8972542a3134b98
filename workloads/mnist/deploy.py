"""The MNIST workload on any stack: one training Job that downloads the real MNIST (checksum-
verified), trains the CNN and registers it in MLflow as a new version of `mnist` (alias
`champion` for the first version, `challenger` after that).

    mnist-train  Job  python -m workloads.mnist.train --source mnist --register

The Job needs egress to the data mirror (`workloads.mnist.data.MIRROR`, HTTPS). Serving is not
declared here: the platform serves this same image from `serving.models` (a custom image speaking
the Seldon protocol, `workloads.mnist.serving.MnistClassifier`); see workloads/mnist/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules import kube
from workloads.common.deploy import TRACKING_KEYS, WorkloadContext

UID = 10001  # the image's non-root user (workloads/mnist/Dockerfile)
COMPONENT = "mnist"
DATA_DIR = "/data/mnist"


@dataclass(frozen=True)
class Resources:
    """Requests and a memory limit; no CPU limit, so the training run may use idle CPU."""

    cpu: str
    memory: str
    memory_limit: str

    def spec(self) -> dict[str, Any]:
        return {"requests": {"cpu": self.cpu, "memory": self.memory}, "limits": {"memory": self.memory_limit}}


@dataclass(frozen=True)
class MnistArgs:
    context: WorkloadContext
    epochs: int = 10
    # one CPU: training runs one thread (workloads.mnist.model.TrainConfig.threads)
    train_resources: Resources = field(default_factory=lambda: Resources("1", "2Gi", "3Gi"))
    deadline_seconds: int = 7200  # 60,000 images x 10 epochs on one CPU: well under an hour


def _check(args: MnistArgs) -> None:
    image = args.context.image
    tag = image.rsplit("/", 1)[-1]
    if "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
        raise ValueError(f"mnist image {image!r}: pin it by tag (not 'latest') or digest")
    if not 1 <= args.epochs <= 100:
        raise ValueError(f"mnist epochs {args.epochs}: allowed 1..100")


class MnistWorkload(pulumi.ComponentResource):
    """The MNIST training Job; the image holds the code, the context's Secret the credentials."""

    job_name: pulumi.Output[str]

    def __init__(self, name: str, args: MnistArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:workloads:Mnist", name, None, opts)
        _check(args)
        ctx = args.context
        container = {
            "name": "train",
            "image": ctx.image,
            "command": ["python", "-m", "workloads.mnist.train", "--source", "mnist", "--data-dir", DATA_DIR,
                        "--epochs", str(args.epochs), "--register"],
            "env": [
                {"name": "MLFLOW_TRACKING_URI", "value": ctx.tracking_uri},
                *(kube.secret_env(key, ctx.tracking_secret, key) for key in TRACKING_KEYS),
                {"name": "HOME", "value": "/tmp"},
            ],
            "resources": args.train_resources.spec(),
            "security_context": kube.CONTAINER_SECURITY,
            "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}, {"name": "data", "mount_path": "/data"}],
        }
        pod: dict[str, Any] = {
            "restart_policy": "Never",  # a failed run is retried as a new pod (backoff_limit), logs kept
            "automount_service_account_token": False,
            "security_context": kube.pod_security(UID),
            "containers": [container],
            "volumes": [{"name": "tmp", "empty_dir": {"size_limit": "512Mi"}},
                        {"name": "data", "empty_dir": {"size_limit": "256Mi"}}],  # 4 files, 11 MB gzipped
        }
        if ctx.service_account is not None:
            pod["service_account_name"] = ctx.service_account
        job = k8s.batch.v1.Job(
            f"{name}-train",
            metadata=kube.metadata("mnist-train", ctx.namespace, COMPONENT),
            spec={
                "backoff_limit": 2,
                "active_deadline_seconds": args.deadline_seconds,
                "template": {"metadata": {"labels": kube.labels("mnist-train", COMPONENT)}, "spec": pod},
            },
            # a new image or setting means a new training run: replace the (immutable) Job
            opts=kube.child(self, replace_on_changes=["spec"], delete_before_replace=True),
        )
        self.job_name = job.metadata.name
        self.register_outputs({"job_name": self.job_name})
