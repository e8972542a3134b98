"""Small Kubernetes building blocks every component shares: labels, hardened pod settings, probes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

PART_OF = "mlops-stack"


def labels(name: str, component: str) -> dict[str, str]:
    """Recommended app labels; `name` is also the selector, so keep it stable."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "pulumi",
    }


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def metadata(name: str, namespace: pulumi.Input[str], component: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels(name, component), **extra}


def pod_security(uid: int) -> dict[str, Any]:
    """Pod-level settings that pass the `restricted` Pod Security Standard."""
    return {
        "run_as_non_root": True,
        "run_as_user": uid,
        "run_as_group": uid,
        "fs_group": uid,
        "fs_group_change_policy": "OnRootMismatch",
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


CONTAINER_SECURITY: dict[str, Any] = {
    "allow_privilege_escalation": False,
    "capabilities": {"drop": ["ALL"]},
    "read_only_root_filesystem": True,
}


def http_probe(path: str, port: int | str, period: int = 10, failures: int = 3) -> dict[str, Any]:
    return {
        "http_get": {"path": path, "port": port},
        "period_seconds": period,
        "timeout_seconds": 5,
        "failure_threshold": failures,
    }


def exec_probe(command: list[str], period: int = 10, failures: int = 3) -> dict[str, Any]:
    return {
        "exec_": {"command": command},
        "period_seconds": period,
        "timeout_seconds": 5,
        "failure_threshold": failures,
    }


def secret_env(name: str, secret: pulumi.Input[str], key: str) -> dict[str, Any]:
    """An env var read from a Secret, so no credential ever sits in a pod spec."""
    return {"name": name, "value_from": {"secret_key_ref": {"name": secret, "key": key}}}


def env(values: Mapping[str, pulumi.Input[str]]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def child(parent: pulumi.Resource, **kw: Any) -> pulumi.ResourceOptions:
    """Options for a component's child; the Kubernetes provider is inherited from the component."""
    return pulumi.ResourceOptions(parent=parent, **kw)


def ingress_policy(name: str, namespace: pulumi.Input[str], component: str, pods: str,
                   rules: list[dict[str, Any]], opts: pulumi.ResourceOptions) -> None:
    """A NetworkPolicy admitting only `rules` to the pods named `pods`; no rules = no ingress at all
    (one-shot Jobs, which nothing calls)."""
    import pulumi_kubernetes as k8s

    k8s.networking.v1.NetworkPolicy(
        f"{name}-ingress",
        metadata=metadata(f"{pods}-ingress", namespace, component),
        spec={"pod_selector": {"match_labels": selector(pods)}, "policy_types": ["Ingress"], "ingress": rules},
        opts=opts,
    )


def after(resources: list[pulumi.Resource]) -> pulumi.ResourceOptions:
    """`depends_on` that reaches a component's children. Pulumi gives a component's own
    `depends_on` to none of the resources it creates, so a SeldonDeployment would race the operator
    that installs its CRD; a transformation is inherited by every descendant and adds the wait there."""
    deps = list(resources)

    def wait(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult:
        return pulumi.ResourceTransformationResult(
            args.props, pulumi.ResourceOptions.merge(args.opts, pulumi.ResourceOptions(depends_on=deps)))

    return pulumi.ResourceOptions(depends_on=deps, transformations=[wait])
