"""Tenants: one namespace per student or team, fenced so that 60 of them share a cluster fairly.

Per tenant: a namespace (Pod Security enforced, labelled `mlops-stack/tenant`), a ResourceQuota
(requests, limits, pods and served models), a LimitRange (every container runs with the same
default and at most the same maximum), a NetworkPolicy that denies all ingress except from the
gateway, Prometheus, the platform and the tenant's own pods, and the Role its CI deploys with
(modules/ci/rbac.py's model-deployer rules in its namespace, plus reading its own MLflow login).
Where no keyless cloud identity exists, a namespaced deploy token (a ServiceAccount token) is the
CI's credential (docs/decisions/0015-tenant-ci-access.md). The caller declares the MLflow logins of
`tenant_mlflow_users` in the platform's one MlflowUsers (one reconcile Job for everyone).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules import kube
from modules.ci.rbac import RULES as DEPLOYER_RULES
from modules.mlflow.users import MlflowPermission, MlflowUser

TENANT_LABEL = "mlops-stack/tenant"
MEMBERS_ANNOTATION = "mlops-stack/members"
REPOSITORIES_ANNOTATION = "mlops-stack/repositories"
MODELS_COUNT = "count/seldondeployments.machinelearning.seldon.io"
CI_ROLE = "tenant-ci"  # the model deployer's rules (modules/ci/rbac.py) + reading its own MLflow login
DEPLOYER = "ci-deployer"  # the deploy token's ServiceAccount (and `<DEPLOYER>-token` its Secret)
MLFLOW_SECRET = "mlflow-tenant"  # the tenant's own MLflow login (keys username, password), for its CI
READER_SECRET = "mlflow-model-reader"  # the tenant's read-only login its model pods load aliases with
# Seldon 1.17.1's executor: http and metrics on 8000, grpc on 5001; MLServer's metrics on 6000
# (operator/controllers/seldondeployment_engine.go, operator/constants/constants.go)
# and a shared server's MLServer without executor on 9000 (modules/serving/density.py)
MODEL_PORTS = (8000, 5001, 9000)
METRICS_PORTS = (8000, 6000)
INGRESS_POLICY = "tenant-ingress"


@dataclass(frozen=True)
class TenantSpec:
    name: str  # also the namespace: endpoints are /seldon/<tenant>/<model>/…
    pod_security: str
    quota: Mapping[str, str]  # ResourceQuota `hard`
    limits: Mapping[str, Any]  # the LimitRange's Container item: default, defaultRequest, max
    members: Sequence[str] = ()
    repositories: Sequence[str] = ()
    ci_subjects: Sequence[Mapping[str, pulumi.Input[str]]] = ()  # keyless cloud identities of its repositories


@dataclass(frozen=True)
class TenantsArgs:
    tenants: Sequence[TenantSpec]
    gateway_namespace: str  # where the ingress gateway's pods run (istio-system)
    monitoring_namespace: pulumi.Input[str]
    platform_namespace: pulumi.Input[str]  # the platform's own callers (evaluation Jobs)
    deploy_tokens: bool = True  # a ServiceAccount token per tenant for its CI (no keyless identity here)


def tenant_mlflow_users(tenant: str, namespace: pulumi.Input[str], experiments: Sequence[str],
                        models: Sequence[str]) -> list[MlflowUser]:
    """The tenant's MLflow login (EDIT on its experiments and registered models, nothing else) with
    its Secret in the tenant namespace, and a read-only login for its model pods. The models are
    created empty by the Job, so no other user can register a tenant's name first and own it."""
    writer = MlflowUser(f"tenant-{tenant}", namespace, MLFLOW_SECRET, tuple(
        [MlflowPermission("experiment", e, "EDIT") for e in experiments]
        + [MlflowPermission("registered_model", m, "EDIT", create=True) for m in models]))
    reader = MlflowUser(reader_username(tenant), namespace, READER_SECRET,
                        tuple(MlflowPermission("registered_model", m, "READ") for m in models))
    return [writer, reader]


def reader_username(tenant: str) -> str:
    """`tenant-<name>.reader`: '.' never occurs in a tenant name, so no tenant's login can be another's."""
    return f"tenant-{tenant}.reader"


def quota_hard(cpu: str, memory: str, cpu_limit: str, memory_limit: str, pods: int, models: int) -> dict[str, str]:
    return {"requests.cpu": cpu, "requests.memory": memory, "limits.cpu": cpu_limit, "limits.memory": memory_limit,
            "pods": str(pods), MODELS_COUNT: str(models)}


def _from(namespace: pulumi.Input[str]) -> dict[str, Any]:
    return {"namespace_selector": {"match_labels": {"kubernetes.io/metadata.name": namespace}}}


def _ports(ports: Sequence[int]) -> list[dict[str, Any]]:
    return [{"port": p, "protocol": "TCP"} for p in ports]


class Tenants(pulumi.ComponentResource):
    """`namespaces[tenant]` resolves once the tenant's namespace exists."""

    namespaces: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: TenantsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:tenants:Tenants", name, None, opts)
        self.namespaces = {}
        for tenant in args.tenants:
            self._tenant(name, tenant, args)
        self.register_outputs({"namespaces": self.namespaces})

    def _tenant(self, name: str, t: TenantSpec, args: TenantsArgs) -> None:
        prefix = f"{name}-{t.name}"
        namespace = k8s.core.v1.Namespace(
            prefix,
            metadata={
                "name": t.name,
                "labels": {"app.kubernetes.io/part-of": kube.PART_OF, "mlops-stack/purpose": "tenant",
                           TENANT_LABEL: t.name, "pod-security.kubernetes.io/enforce": t.pod_security,
                           "pod-security.kubernetes.io/warn": "restricted"},
                "annotations": {MEMBERS_ANNOTATION: ",".join(t.members),
                                REPOSITORIES_ANNOTATION: ",".join(t.repositories)},
            },
            opts=kube.child(self),
        )
        ns = namespace.metadata.name
        self.namespaces[t.name] = ns
        inside = kube.child(self)
        k8s.core.v1.ResourceQuota(f"{prefix}-quota", metadata=kube.metadata("tenant-quota", ns, "tenant"),
                                  spec={"hard": dict(t.quota)}, opts=inside)
        k8s.core.v1.LimitRange(f"{prefix}-limits", metadata=kube.metadata("tenant-limits", ns, "tenant"),
                               spec={"limits": [{"type": "Container", **t.limits}]}, opts=inside)
        self._policies(prefix, ns, args, inside)
        subjects = [dict(s) for s in t.ci_subjects]
        if args.deploy_tokens:
            subjects.append(self._deploy_token(prefix, ns, inside))
        role = k8s.rbac.v1.Role(f"{prefix}-ci", metadata=kube.metadata(CI_ROLE, ns, "ci"), rules=[
            *DEPLOYER_RULES,
            {"api_groups": [""], "resources": ["secrets"], "resource_names": [MLFLOW_SECRET], "verbs": ["get"]},
        ], opts=inside)
        k8s.rbac.v1.RoleBinding(
            f"{prefix}-ci", metadata=kube.metadata(CI_ROLE, ns, "ci"),
            role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name},
            subjects=subjects, opts=inside)

    def _policies(self, prefix: str, ns: pulumi.Output[str], args: TenantsArgs, opts: pulumi.ResourceOptions) -> None:
        """One policy selecting every pod: all ingress is denied except from the gateway and the
        platform on the model ports, Prometheus on the metrics ports, and the tenant's own pods (a
        Seldon graph's nodes call each other). Egress stays open: models load their alias from
        MLflow and resolve names through the cluster DNS."""
        rules = [
            {"from_": [_from(args.gateway_namespace), _from(args.platform_namespace)], "ports": _ports(MODEL_PORTS)},
            {"from_": [_from(args.monitoring_namespace)], "ports": _ports(METRICS_PORTS)},
            {"from_": [{"pod_selector": {}}]},
        ]
        k8s.networking.v1.NetworkPolicy(
            f"{prefix}-ingress", metadata=kube.metadata(INGRESS_POLICY, ns, "tenant"),
            spec={"pod_selector": {}, "policy_types": ["Ingress"], "ingress": rules}, opts=opts)

    def _deploy_token(self, prefix: str, ns: pulumi.Output[str],
                      opts: pulumi.ResourceOptions) -> dict[str, pulumi.Input[str]]:
        """A ServiceAccount bound to the tenant's Role only, and a long-lived token Secret the token
        controller fills in; the professor hands it to the tenant as its repository's secret."""
        account = k8s.core.v1.ServiceAccount(
            f"{prefix}-deployer", metadata=kube.metadata(DEPLOYER, ns, "ci"),
            automount_service_account_token=False, opts=opts)
        k8s.core.v1.Secret(
            f"{prefix}-deployer-token",
            metadata=kube.metadata(f"{DEPLOYER}-token", ns, "ci",
                                   annotations={"kubernetes.io/service-account.name": account.metadata.name}),
            type="kubernetes.io/service-account-token",
            opts=opts)
        return {"kind": "ServiceAccount", "name": DEPLOYER, "namespace": ns}
