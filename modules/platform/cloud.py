"""What the GKE and EKS targets share: node pool and managed-PostgreSQL specs, and the kubeconfig.

Sizes arrive here as plain values (machine types, bounds, tiers), the same ones the stack config
states, so a cost tool can read either.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

PORT = 5432
NODE_POOL_LABEL = "mlops-stack/pool"  # nodeSelector key: "system" or "workload"


@dataclass(frozen=True)
class NodePoolSpec:
    name: str  # "system" | "workload"
    machine_type: str
    min_nodes: int
    max_nodes: int
    spot: bool
    disk_gi: int
    arm64: bool = False


@dataclass(frozen=True)
class ManagedPostgresSpec:
    """Cloud SQL / RDS: what MLflow needs, and how much durability the environment pays for."""

    database: str
    username: str
    extra_databases: Sequence[str]  # created beside `database`, owned by `username`
    version: str  # Cloud SQL "POSTGRES_17" / RDS "17"
    size: str  # Cloud SQL tier / RDS instance class
    storage_gi: int
    high_availability: bool
    backup_days: int  # automated backups kept
    point_in_time_recovery: bool


def exec_kubeconfig(name: pulumi.Input[str], server: pulumi.Input[str], ca_data: pulumi.Input[str],
                    exec_config: Mapping[str, Any]) -> pulumi.Output[str]:
    """A kubeconfig (secret) from the cluster's outputs whose user runs a credential plugin, so no
    token or key is ever stored: `gke-gcloud-auth-plugin` or `aws eks get-token`. `server` is a URL."""

    def render(values: list[Any]) -> str:
        cluster, endpoint, ca = values
        return json.dumps({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster, "cluster": {"server": endpoint, "certificate-authority-data": ca}}],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
            "current-context": cluster,
            "users": [{"name": cluster, "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                                          **exec_config}}}],
        }, indent=2)

    return pulumi.Output.secret(pulumi.Output.all(name, server, ca_data).apply(render))


def ready_value(value: pulumi.Input[str], *after: pulumi.CustomResource) -> pulumi.Output[str]:
    """`value`, resolved only once `after` exist: consumers (a Secret, an annotation) then wait for
    the grants or databases the value is useless without."""
    return pulumi.Output.all(value, *(r.id for r in after)).apply(lambda values: values[0])
