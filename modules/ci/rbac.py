"""What a model deployment job may do in the cluster: manage SeldonDeployments in the serving
namespace and read their pods and logs, nothing else. Shared by in-cluster runners and the clouds'
keyless `models` identity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_kubernetes as k8s

from modules import kube

RULES = [
    {"api_groups": ["machinelearning.seldon.io"], "resources": ["seldondeployments"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    {"api_groups": [""], "resources": ["pods", "pods/log", "services", "events"],
     "verbs": ["get", "list", "watch"]},
]


class ModelDeployerAccess(pulumi.ComponentResource):
    def __init__(self, name: str, namespace: pulumi.Input[str], subjects: Sequence[Mapping[str, pulumi.Input[str]]],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:ci:ModelDeployerAccess", name, None, opts)
        role = k8s.rbac.v1.Role(
            name, metadata=kube.metadata(name, namespace, "ci"), rules=RULES, opts=kube.child(self))
        k8s.rbac.v1.RoleBinding(
            name,
            metadata=kube.metadata(name, namespace, "ci"),
            role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name},
            subjects=[dict(s) for s in subjects],
            opts=kube.child(self),
        )
        self.register_outputs({})
