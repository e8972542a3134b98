"""The platform's namespaces, each with its Pod Security Standard level."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_kubernetes as k8s

from modules.kube import PART_OF, child

PodSecurity = Literal["privileged", "baseline", "restricted"]


@dataclass(frozen=True)
class NamespacesArgs:
    # purpose ("platform", "mlflow", ...) -> (namespace name, Pod Security Standard enforced)
    namespaces: Mapping[str, tuple[str, PodSecurity]]


class Namespaces(pulumi.ComponentResource):
    """Creates one namespace per purpose; `names[purpose]` resolves once it exists."""

    names: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: NamespacesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:core:Namespaces", name, None, opts)
        self.names = {}
        for purpose, (namespace, level) in args.namespaces.items():
            created = k8s.core.v1.Namespace(
                f"{name}-{purpose}",
                metadata={
                    "name": namespace,
                    "labels": {
                        "app.kubernetes.io/part-of": PART_OF,
                        "mlops-stack/purpose": purpose,
                        "pod-security.kubernetes.io/enforce": level,
                        "pod-security.kubernetes.io/warn": "restricted",
                    },
                },
                opts=child(self),
            )
            self.names[purpose] = created.metadata.name
        self.register_outputs({"names": self.names})
