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

import pulumi

from workloads.common.deploy import PodTemplate, Resources, WorkloadContext, require_pinned, tracking_env

UID = 10001  # the image's non-root user (workloads/mnist/Dockerfile)
COMPONENT = "mnist"
DATA_DIR = "/data/mnist"


@dataclass(frozen=True)
class MnistArgs:
    context: WorkloadContext
    epochs: int = 10
    # one CPU: training runs one thread (workloads.mnist.model.TrainConfig.threads)
    train_resources: Resources = field(default_factory=lambda: Resources("1", "2Gi", "3Gi"))
    deadline_seconds: int = 7200  # 60,000 images x 10 epochs on one CPU: well under an hour


def _check(args: MnistArgs) -> None:
    require_pinned(args.context.image, "mnist")
    if not 1 <= args.epochs <= 100:
        raise ValueError(f"mnist epochs {args.epochs}: allowed 1..100")


class MnistWorkload(pulumi.ComponentResource):
    """The MNIST training Job; the image holds the code, the context's Secret the credentials."""

    job_name: pulumi.Output[str]

    def __init__(self, name: str, args: MnistArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:workloads:Mnist", name, None, opts)
        _check(args)
        pods = PodTemplate(args.context, COMPONENT, UID)
        train = pods.container("train", ["python", "-m", "workloads.mnist.train", "--source", "mnist",
                                         "--data-dir", DATA_DIR, "--epochs", str(args.epochs), "--register"],
                               tracking_env(args.context), args.train_resources,
                               mounts=[{"name": "data", "mount_path": "/data"}])
        job = pods.training_job(self, f"{name}-train", "mnist-train", [train], args.deadline_seconds,
                                volumes=[{"name": "data", "empty_dir": {"size_limit": "256Mi"}}])  # 11 MB gzipped
        self.job_name = job.metadata.name
        self.register_outputs({"job_name": self.job_name})
