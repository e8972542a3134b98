"""Reconcile MLflow basic-auth users and their permissions with a declared desired state.

Run by the `mlflow-users` Job of modules/mlflow/users.py (`python -m mlops_users`), as the admin:
- MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD: the server and its admin;
- MLOPS_USERS_STATE: JSON {"users": [{"username", "password", "permissions": [{"kind", "name",
  "permission"}]}]};
- MLOPS_USERS_WAIT_SECONDS: how long to wait for the server to answer /health (default 300).

For each declared user: create it if missing, make it a non-admin, set its password unless it
already logs in with it, and grant each permission (created, or updated when it differs). Users
and grants it does not declare are reported, never changed: MLflow gives a model's creator MANAGE
on it, and revoking that would break the pipeline that made it. Exit 1 on any failure, 2 on a bad
state; no password is ever printed.

MLflow 3.17 keeps per-user grants as rows of the user's synthetic role `__user_<id>__` (REST:
/api/3.0/mlflow/users/permissions/grant, roles/permissions/update); the per-resource
experiments|registered-models/permissions/* endpoints of MLflow 2 are gone.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import requests

TIMEOUT = 30
KINDS = ("experiment", "registered_model")
# NO_PERMISSIONS is not grantable on a resource since MLflow 3.17 (an absent grant plus the
# default permission means "no access"); DENY is what overrides a more generous default.
ALIASES = {"NO_PERMISSIONS": "DENY"}
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "DENY")


class Failure(Exception):
    """One reconcile step failed; the message names the user, the resource and the fix."""


@dataclass(frozen=True)
class Grant:
    kind: str
    name: str
    permission: str
    create: bool = False  # registered_model: create it empty when missing (nobody else can claim the name)


@dataclass(frozen=True)
class User:
    username: str
    password: str
    grants: tuple[Grant, ...]


def parse_state(raw: str) -> list[User]:
    """The declared users; ValueError names what is wrong (never a password)."""
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"MLOPS_USERS_STATE is not JSON ({error.msg} at {error.pos})") from None
    users = []
    for i, entry in enumerate(document.get("users", []) if isinstance(document, dict) else [None]):
        if not isinstance(entry, dict) or not entry.get("username") or not entry.get("password"):
            raise ValueError(f"MLOPS_USERS_STATE users[{i}]: a non-empty username and password are required")
        grants = []
        for p in entry.get("permissions", []):
            permission = ALIASES.get(p.get("permission"), p.get("permission"))
            if p.get("kind") not in KINDS or not p.get("name") or permission not in PERMISSIONS:
                raise ValueError(f"MLOPS_USERS_STATE user {entry['username']}: permission {p!r} needs kind in "
                                 f"{KINDS}, a name and permission in {PERMISSIONS + tuple(ALIASES)}")
            grants.append(Grant(p["kind"], p["name"], permission, p.get("create") is True))
        users.append(User(entry["username"], entry["password"], tuple(grants)))
    return users


class Server:
    """The MLflow REST API as the admin."""

    def __init__(self, url: str, username: str, password: str):
        self.url = url.rstrip("/")
        self.admin = username
        self.session = requests.Session()
        self.session.auth = (username, password)

    def call(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        response = self.session.request(method, f"{self.url}{path}", timeout=TIMEOUT, **kwargs)
        if response.status_code not in ok:
            raise Failure(f"{method} {path}: HTTP {response.status_code} {_error(response)}")
        return response

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if requests.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise Failure(f"{self.url}/health did not answer 200 within {seconds:.0f} s: is the MLflow "
                              "Deployment ready and MLFLOW_TRACKING_URI its Service?")
            time.sleep(2)

    def check_admin(self) -> None:
        response = self.call("GET", "/api/2.0/mlflow/users/current", ok=(200, 401, 403))
        if response.status_code != 200:
            raise Failure(f"the admin login of {self.admin!r} is rejected (HTTP {response.status_code}): "
                          "MLFLOW_TRACKING_PASSWORD must be the server's MLFLOW_AUTH_ADMIN_PASSWORD")
        if not response.json()["user"]["is_admin"]:
            raise Failure(f"user {self.admin!r} is not an MLflow admin: MLFLOW_TRACKING_USERNAME must be the "
                          "server's MLFLOW_AUTH_ADMIN_USERNAME")


def _error(response: requests.Response) -> str:
    try:
        body = response.json()
        return f"{body.get('error_code', '')}: {body.get('message', '')}".strip(": ")
    except ValueError:
        return response.text[:200]


def ensure_user(server: Server, user: User) -> tuple[int, list[str]]:
    """Create or fix the account; returns its id and what changed."""
    changes = []
    found = server.call("GET", "/api/2.0/mlflow/users/get", ok=(200, 404), params={"username": user.username})
    if found.status_code == 404:
        server.call("POST", "/api/2.0/mlflow/users/create",
                    json={"username": user.username, "password": user.password})
        changes.append("created")
        found = server.call("GET", "/api/2.0/mlflow/users/get", params={"username": user.username})
    elif not _logs_in(server, user):
        server.call("PATCH", "/api/2.0/mlflow/users/update-password",
                    json={"username": user.username, "password": user.password})
        changes.append("password set")
    account = found.json()["user"]
    if account["is_admin"]:
        server.call("PATCH", "/api/2.0/mlflow/users/update-admin", json={"username": user.username, "is_admin": False})
        changes.append("admin revoked")
    return int(account["id"]), changes


def _logs_in(server: Server, user: User) -> bool:
    response = requests.get(f"{server.url}/api/2.0/mlflow/users/current", auth=(user.username, user.password),
                            timeout=TIMEOUT)
    return response.status_code == 200


def resource_id(server: Server, grant: Grant) -> str:
    """What MLflow keys a grant by: an experiment's id (the experiment is created empty when
    missing), a registered model's name (MLflow does not require the model to exist: the grant
    applies once training registers it; with `create` it is created empty when missing)."""
    if grant.kind == "registered_model":
        if grant.create and server.call("GET", "/api/2.0/mlflow/registered-models/get", ok=(200, 404),
                                        params={"name": grant.name}).status_code == 404:
            server.call("POST", "/api/2.0/mlflow/registered-models/create", json={"name": grant.name})
        return grant.name
    found = server.call("GET", "/api/2.0/mlflow/experiments/get-by-name", ok=(200, 404),
                        params={"experiment_name": grant.name})
    if found.status_code == 200:
        return str(found.json()["experiment"]["experiment_id"])
    created = server.call("POST", "/api/2.0/mlflow/experiments/create", json={"name": grant.name})
    return str(created.json()["experiment_id"])


def current_grants(server: Server, username: str, user_id: int) -> dict[tuple[str, str], tuple[int, str]]:
    """(resource_type, resource id) -> (role id, permission) of the user's own synthetic role."""
    rows = server.call("GET", "/api/3.0/mlflow/users/permissions/list", params={"username": username}).json()
    role = f"__user_{user_id}__"
    return {(r["resource_type"], r["resource_pattern"]): (int(r["role_id"]), r["permission"])
            for r in rows.get("permissions", []) if r["role_name"] == role}


def ensure_grant(server: Server, username: str, grant: Grant, rid: str,
                 current: dict[tuple[str, str], tuple[int, str]]) -> str | None:
    """Grant, or update a differing grant; returns what changed."""
    existing = current.get((grant.kind, rid))
    if existing is None:
        server.call("POST", "/api/3.0/mlflow/users/permissions/grant", json={
            "username": username, "resource_type": grant.kind, "resource_id": rid, "permission": grant.permission})
        return f"granted {grant.permission}"
    role_id, permission = existing
    if permission == grant.permission:
        return None
    rows = server.call("GET", "/api/3.0/mlflow/roles/permissions/list", params={"role_id": str(role_id)}).json()
    row = next(p for p in rows["role_permissions"]
               if p["resource_type"] == grant.kind and p["resource_pattern"] == rid)
    server.call("PATCH", "/api/3.0/mlflow/roles/permissions/update",
                json={"role_permission_id": row["id"], "permission": grant.permission})
    return f"{permission} -> {grant.permission}"


def reconcile_user(server: Server, user: User) -> None:
    user_id, changes = ensure_user(server, user)
    print(f"user {user.username}: {', '.join(changes) or 'unchanged'}")
    current = current_grants(server, user.username, user_id)
    declared = set()
    for grant in user.grants:
        try:
            rid = resource_id(server, grant)
            declared.add((grant.kind, rid))
            change = ensure_grant(server, user.username, grant, rid, current)
        except Failure as error:
            raise Failure(f"user {user.username}, {grant.kind} {grant.name!r}: {error}") from None
        print(f"  {grant.kind} {grant.name!r}: {change or f'{grant.permission} unchanged'}")
    for kind, rid in sorted(set(current) - declared):
        print(f"  {kind} {rid!r}: {current[(kind, rid)][1]} granted outside the declared state (left as is)")


def reconcile(server: Server, users: list[User]) -> list[str]:
    """Every declared user, failures collected so one bad grant does not hide the others."""
    failures = []
    for user in users:
        try:
            reconcile_user(server, user)
        except (Failure, requests.RequestException) as error:
            failures.append(f"user {user.username}: {error}" if user.username not in str(error) else str(error))
    listed = server.call("GET", "/api/2.0/mlflow/users/list").json()["users"]
    others = sorted({u["username"] for u in listed} - {u.username for u in users} - {server.admin})
    if others:
        print(f"not managed here (left as is): {', '.join(others)}")
    return failures


def main() -> int:
    try:
        users = parse_state(os.environ["MLOPS_USERS_STATE"])
        server = Server(os.environ["MLFLOW_TRACKING_URI"], os.environ["MLFLOW_TRACKING_USERNAME"],
                        os.environ["MLFLOW_TRACKING_PASSWORD"])
        wait = float(os.environ.get("MLOPS_USERS_WAIT_SECONDS", "300"))
    except KeyError as missing:
        print(f"mlops_users: environment variable {missing} is not set (see the Job's env)", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"mlops_users: {error}", file=sys.stderr)
        return 2
    try:
        server.wait(wait)
        server.check_admin()
        failures = reconcile(server, users)
    except (Failure, requests.RequestException) as error:
        failures = [str(error)]
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    print(f"{len(users)} user(s) declared, {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
