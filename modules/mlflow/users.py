"""Declarative MLflow users and permissions.

MLflow's basic-auth app keeps users and per-resource permissions in its own database and manages
them only through its REST API, so a one-shot Job (from the MLflow image) reconciles the desired
state declared here against the running server: see modules/mlflow/image/mlops_users.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from modules import kube
from modules.mlflow import UID

JOB = "mlflow-users"
STATE_KEY = "state.json"
STATE_HASH = "mlops-stack/desired-state-sha256"  # pod-template annotation: a new state replaces the Job
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "DENY", "NO_PERMISSIONS")
COMMAND = ["python", "-m", "mlops_users"]  # modules/mlflow/image/mlops_users.py, on the image's PYTHONPATH


@dataclass(frozen=True)
class MlflowPermission:
    kind: Literal["experiment", "registered_model"]
    # experiment name (created empty when missing) or registered model name (granted by name; it
    # need not exist yet: MLflow applies the grant once training registers the model)
    name: str
    # NO_PERMISSIONS is applied as MLflow 3.17's per-resource DENY (it no longer grants NO_PERMISSIONS)
    permission: Literal["READ", "USE", "EDIT", "MANAGE", "DENY", "NO_PERMISSIONS"]
    # registered_model: the Job creates it empty when missing. MLflow lets any user create a model and
    # makes the creator its MANAGE owner, so a name reserved for one user (a tenant's) is claimed first
    create: bool = False


@dataclass(frozen=True)
class MlflowUser:
    username: str
    secret_namespace: pulumi.Input[str]  # where the user's credentials Secret is created
    secret_name: str  # that Secret: keys "username" and "password"
    permissions: Sequence[MlflowPermission] = ()


@dataclass(frozen=True)
class MlflowUsersArgs:
    namespace: pulumi.Input[str]  # MLflow's namespace: the reconcile Job runs there
    image: pulumi.Input[str]  # the MLflow server image (has mlflow + requests + mlops_users.py)
    tracking_url: pulumi.Input[str]  # in-cluster URL of the server
    admin_secret: pulumi.Input[str]  # Secret in `namespace` with key "admin-password" (Mlflow's "mlflow-server")
    admin_username: str
    users: Sequence[MlflowUser]
    resources: Mapping[str, Any]
    protect: bool = False  # keep the generated passwords from `pulumi destroy` (not dev)


class MlflowUsers(pulumi.ComponentResource):
    """Users with generated passwords, their Secrets, and the Job that applies them to MLflow.

    The Job must run after the server is up: pass `opts` with `kube.after([mlflow])` (a
    component's own `depends_on` does not reach its children).
    """

    secrets: dict[str, pulumi.Output[str]]  # username -> Secret name (in its secret_namespace)
    passwords: dict[str, pulumi.Output[str]]  # username -> generated password (secret), for stack outputs
    ready: pulumi.Resource  # the reconcile Job; consumers depend on it

    def __init__(self, name: str, args: MlflowUsersArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:mlflow:MlflowUsers", name, None, opts)
        _check(args)
        self.secrets = {}
        self.passwords = {}
        declared: list[pulumi.Output[dict[str, Any]]] = []
        for user in args.users:
            password = random.RandomPassword(f"{name}-{user.username}-password", length=32, special=False,
                                             opts=kube.child(self, protect=args.protect)).result
            secret = k8s.core.v1.Secret(
                f"{name}-{user.username}",
                metadata=kube.metadata(user.secret_name, user.secret_namespace, "tracking"),
                type="Opaque",
                string_data={"username": user.username, "password": pulumi.Output.secret(password)},
                opts=kube.child(self),
            )
            self.secrets[user.username] = secret.metadata.name
            self.passwords[user.username] = pulumi.Output.secret(password)
            declared.append(password.apply(lambda p, u=user: _desired(u, p)))
        state = pulumi.Output.secret(pulumi.Output.all(*declared).apply(
            lambda users: json.dumps({"users": users}, sort_keys=True)))
        state_secret = k8s.core.v1.Secret(
            f"{name}-state",
            metadata=kube.metadata(f"{JOB}-state", args.namespace, "tracking"),
            type="Opaque",
            string_data={STATE_KEY: state},
            opts=kube.child(self),
        )
        # a digest of random passwords reveals nothing; kept plain so a plan shows when the Job reruns
        digest = pulumi.Output.unsecret(state.apply(lambda s: hashlib.sha256(s.encode()).hexdigest()))
        self.ready = self._job(name, args, state_secret.metadata.name, digest)
        kube.ingress_policy(name, args.namespace, "tracking", JOB, [], kube.child(self))
        self.register_outputs({"secrets": self.secrets, "job": self.ready.metadata.name})

    def _job(self, name: str, args: MlflowUsersArgs, state_secret: pulumi.Input[str],
             digest: pulumi.Input[str]) -> k8s.batch.v1.Job:
        env = [
            *kube.env({"MLFLOW_TRACKING_URI": args.tracking_url, "MLFLOW_TRACKING_USERNAME": args.admin_username,
                       "MLOPS_USERS_WAIT_SECONDS": "300"}),
            kube.secret_env("MLFLOW_TRACKING_PASSWORD", args.admin_secret, "admin-password"),
            kube.secret_env("MLOPS_USERS_STATE", state_secret, STATE_KEY),
        ]
        return k8s.batch.v1.Job(
            f"{name}-reconcile",
            metadata=kube.metadata(JOB, args.namespace, "tracking"),
            spec={
                "backoff_limit": 3,
                "active_deadline_seconds": 600,  # Pulumi awaits a Job for 10 minutes
                "template": {
                    "metadata": {"labels": kube.labels(JOB, "tracking"), "annotations": {STATE_HASH: digest}},
                    "spec": {
                        "restart_policy": "Never",  # failed pods stay, with their logs
                        "automount_service_account_token": False,  # it calls MLflow, never Kubernetes
                        "security_context": kube.pod_security(UID),
                        "containers": [{
                            "name": "reconcile",
                            "image": args.image,
                            "command": COMMAND,
                            "env": env,
                            "resources": dict(args.resources),
                            "security_context": kube.CONTAINER_SECURITY,
                        }],
                    },
                },
            },
            # a new desired state (hash), image or server: replace the Job so it runs again
            opts=kube.child(self, replace_on_changes=["spec"], delete_before_replace=True),
        )


def _desired(user: MlflowUser, password: str) -> dict[str, Any]:
    return {"username": user.username, "password": password, "permissions": [_grant(p) for p in user.permissions]}


def _grant(p: MlflowPermission) -> dict[str, Any]:
    """`create` only when set, so the state (and the Job's hash) of users without it stays as it was."""
    return {"kind": p.kind, "name": p.name, "permission": p.permission, **({"create": True} if p.create else {})}


def _check(args: MlflowUsersArgs) -> None:
    """Plan-time errors for what the Job would otherwise fail on (or silently get wrong)."""
    names = [u.username for u in args.users]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"MlflowUsers users: usernames {duplicates} are declared twice; declare each once")
    if args.admin_username in names:
        raise ValueError(f"MlflowUsers users: {args.admin_username!r} is the admin, which the server manages "
                         "(MLFLOW_AUTH_ADMIN_*); remove it from users")
    for user in args.users:
        if not user.username or ":" in user.username:
            raise ValueError(f"MlflowUsers users: username {user.username!r} must be non-empty without ':' "
                             "(HTTP basic auth)")
        for p in user.permissions:
            if p.kind not in ("experiment", "registered_model") or not p.name or p.permission not in PERMISSIONS:
                raise ValueError(f"MlflowUsers user {user.username}: permission {p} needs kind 'experiment' "
                                 f"or 'registered_model', a name and a permission in {PERMISSIONS}")
            if p.create and p.kind != "registered_model":
                raise ValueError(f"MlflowUsers user {user.username}: permission {p}: create applies to "
                                 "registered_model only (experiments are always created when missing)")
