"""The NEO workload on any stack: one training Job that reads the table from a URL, selects and
fits the classifier, and registers it in MLflow as a new version of `NEOs` (alias `champion` for
the first version, `challenger` after that).

    neo-train  Job  python -m workloads.neo.train --register   (NEO_DATA = args.data_url)

Serving is not declared here: the platform serves a registry version from `serving.models`
(modules/serving, MLServer's MLflow runtime over the V2 protocol); see workloads/neo/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from workloads.common.deploy import PodTemplate, Resources, WorkloadContext, require_pinned, tracking_env

UID = 10001  # the image's non-root user (workloads/neo/Dockerfile)
COMPONENT = "neo"


@dataclass(frozen=True)
class NeoArgs:
    context: WorkloadContext
    data_url: pulumi.Input[str]  # http(s):// URL of nasa.csv (the image carries no data, nor an S3 client)
    train_resources: Resources = field(default_factory=lambda: Resources("500m", "1Gi", "2Gi"))
    deadline_seconds: int = 1800  # model selection takes ~10 s on 1 CPU; a stuck run is stopped


def _check(args: NeoArgs) -> None:
    require_pinned(args.context.image, "neo")
    if isinstance(args.data_url, str) and not args.data_url.startswith(("http://", "https://")):
        raise ValueError(f"neo data_url {args.data_url!r}: give an http(s):// URL the Job can reach")


class NeoWorkload(pulumi.ComponentResource):
    """The NEO training Job; the image holds the code, the context's Secret the credentials."""

    job_name: pulumi.Output[str]

    def __init__(self, name: str, args: NeoArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:workloads:Neo", name, None, opts)
        _check(args)
        pods = PodTemplate(args.context, COMPONENT, UID)
        train = pods.container("train", ["python", "-m", "workloads.neo.train", "--register"],
                               [*tracking_env(args.context), {"name": "NEO_DATA", "value": args.data_url}],
                               args.train_resources)
        job = pods.training_job(self, f"{name}-train", "neo-train", [train], args.deadline_seconds)
        self.job_name = job.metadata.name
        self.register_outputs({"job_name": self.job_name})
