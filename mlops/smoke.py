"""`mlops smoke`: checks a deployed stack end to end through its gateway, from its stack outputs.

MLflow answers and enforces its login, Grafana reports a healthy database, every served model is
ready. Outputs come from `pulumi stack output --json --show-secrets` (needs the Pulumi CLI and the
stack's state) or from a JSON file of them (`--outputs`). Standard library only, so it runs
anywhere the platform does.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Reply:
    status: int
    body: str


def stack_outputs(stack: str, cwd: str) -> dict[str, Any]:
    """The outputs of a deployed stack, secrets included (they are needed to log in)."""
    result = subprocess.run(["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack],
                            cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`pulumi stack output --stack {stack}` failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def http_get(url: str, auth: tuple[str, str] | None, timeout: float, verify_tls: bool) -> Reply:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = None if verify_tls else ssl._create_unverified_context()  # self-signed dev certificates
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return Reply(response.status, response.read().decode(errors="replace"))
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.read().decode(errors="replace"))


Get = Callable[[str, "tuple[str, str] | None"], Reply]


def _probe(name: str, get: Get, url: str, auth: tuple[str, str] | None, expect: Callable[[Reply], bool],
           wanted: str) -> Check:
    try:
        reply = get(url, auth)
    except OSError as error:  # refused, DNS, timeout, TLS
        return Check(name, False, f"{url}: {error}")
    ok = expect(reply)
    return Check(name, ok, f"{url}: HTTP {reply.status}" + ("" if ok else f", expected {wanted}: {reply.body[:200]}"))


def _json_field(reply: Reply, key: str, value: Any) -> bool:
    try:
        return json.loads(reply.body).get(key) == value
    except ValueError:
        return False


def model_ready_url(predict_url: str) -> str:
    """The readiness endpoint beside a model's predictions endpoint (V2 or Seldon protocol)."""
    if "/v2/models/" in predict_url:
        return predict_url.split("/v2/models/")[0] + "/v2/health/ready"
    return predict_url.removesuffix("/api/v1.0/predictions") + "/api/v1.0/health/status"


def mlflow_admin(outputs: Mapping[str, Any]) -> tuple[str, str]:
    """The MLflow admin login a stack exports (`mlflowAdminUsername`, secret `mlflowAdminPassword`)."""
    return str(outputs.get("mlflowAdminUsername", "admin")), str(outputs.get("mlflowAdminPassword", ""))


def run_checks(outputs: Mapping[str, Any], get: Get) -> list[Check]:
    checks = []
    mlflow = outputs.get("mlflowUrl")
    if mlflow:
        admin = mlflow_admin(outputs)
        search = f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=1"
        checks += [
            _probe("mlflow health", get, f"{mlflow}/health", None,
                   lambda r: r.status == 200 and r.body.strip() == "OK", "200 OK"),
            _probe("mlflow refuses anonymous API calls", get, search, None, lambda r: r.status == 401, "401"),
            _probe("mlflow admin login", get, search, admin, lambda r: r.status == 200, "200"),
        ]
    grafana = outputs.get("grafanaUrl")
    if grafana:
        checks.append(_probe("grafana health", get, f"{grafana}/api/health", None,
                             lambda r: r.status == 200 and _json_field(r, "database", "ok"), '200 {"database": "ok"}'))
    for model, url in sorted((outputs.get("modelUrls") or {}).items()):
        checks.append(_probe(f"model {model} ready", get, model_ready_url(url), None,
                             lambda r: r.status == 200, "200"))
    return checks


def render(checks: list[Check]) -> str:
    lines = [f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in checks]
    failed = sum(not c.ok for c in checks)
    lines.append(f"{len(checks) - failed}/{len(checks)} checks passed")
    return "\n".join(lines)
