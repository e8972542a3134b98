"""MLflow's DNS-rebinding guard, with the allowed hosts and job settings the plan gives the server,
against the real server: every legitimate caller gets through, a foreign name does not."""

from __future__ import annotations

import pytest
import requests

from mlops.plan import run_program
from tests.services import mlflow_server, postgres, s3_api

pytestmark = pytest.mark.integration


def _plan_env(stack: str) -> dict[str, str]:
    """The MLflow container's plain env values from the stack's plan (secrets are not needed here)."""
    plan = run_program(stack)
    deployment = next(o for o in plan.kubernetes_objects
                      if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.fixture(scope="module")
def server():
    env = _plan_env("dev")
    settings = {k: env[k] for k in ("MLFLOW_SERVER_ALLOWED_HOSTS", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION")}
    with postgres(("mlruns", "mlflow_auth")) as db, s3_api(("mlflow-artifacts",)) as s3, \
            mlflow_server(db, s3, "mlflow-artifacts", extra_env=settings) as running:
        yield running


def _status(server, host: str) -> int:
    response = requests.get(f"{server.url}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                            headers={"Host": host}, auth=(server.username, server.password), timeout=10)
    return response.status_code


@pytest.mark.parametrize("host", [
    "mlflow.localtest.me",            # through the gateway
    "mlflow.localtest.me:8080",       # through a port-forward of the gateway, or a NodePort
    "mlflow.mlflow.svc.cluster.local:5000",  # in-cluster clients (training Jobs, CI)
    "mlflow:5000",
    "localhost:5000",                 # kubectl port-forward svc/mlflow
    "0.0.0.0:5000",                   # MLflow calling itself
    "100.64.12.7:5000",               # Prometheus scraping a pod IP outside RFC 1918 (GKE, EKS custom ranges)
    "[fd12:3456::7]:5000",            # an IPv6 pod IP
])
def test_legitimate_callers_pass_the_host_check(server, host):
    assert _status(server, host) == 200


@pytest.mark.parametrize("host", ["evil.example.com", "evil.example.com:80", "mlflow.localtest.me.evil.com"])
def test_foreign_host_names_are_refused(server, host):
    assert _status(server, host) == 403


def test_job_execution_is_off_in_the_plan():
    """MLflow 3.17 starts a job runner and seven Huey consumers unless told not to (1.86 GiB PSS)."""
    assert _plan_env("dev")["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
