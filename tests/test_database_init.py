"""The databases beside MLflow's exist after every `pulumi up`, not only after the first one.

Bootstrap SQL (CloudNativePG's initdb, formerly the image's docker-entrypoint-initdb.d) runs only on
an empty cluster: a database added to the list later (the energy workload's `workloads`) was never
created. A Job creates what is missing. Its exact script and environment from the plan run here
against a real PostgreSQL initialised as the Cluster's bootstrap initialises it for a first deploy
without the workload (PGSSLMODE is the one override: the local server has no certificate).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.platforms import WORKLOADS_DATABASE
from mlops.plan import Plan, run_program, stack_config
from modules.mlflow import AUTH_DATABASE
from tests.services import free_port
from tests.tools import require_tool

PLATFORM_NS = "mlops-platform"
FULL = Path(__file__).parent / "stacks"
JOB = "postgres-databases"
PASSWORD = "local-test-password"


@pytest.fixture(scope="module")
def full_dev() -> Plan:
    return run_program("full-dev", stack_config("full-dev", FULL), reveal_secrets=True)


def container(plan: Plan, kind: str, name: str) -> dict[str, Any]:
    spec = plan.manifest(kind, name, PLATFORM_NS)["spec"]["template"]["spec"]
    return spec["containers"][0]


def secret_value(plan: Plan, ref: dict[str, str]) -> str:
    return plan.manifest("Secret", ref["name"], PLATFORM_NS)["stringData"][ref["key"]]


def job_env(plan: Plan, overrides: dict[str, str]) -> dict[str, str]:
    """The Job container's environment as the kubelet would set it, with the local server's
    address and password in place of the cluster's."""
    env = {}
    for entry in container(plan, "Job", JOB)["env"]:
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        env[entry["name"]] = secret_value(plan, ref) if ref else entry["value"]
    return {"PATH": os.environ["PATH"], **env, **overrides}


def cluster_spec(plan: Plan) -> dict[str, Any]:
    return plan.manifest("Cluster", "postgres", PLATFORM_NS)["spec"]


@dataclass(frozen=True)
class Server:
    port: int
    socket_dir: Path
    superuser: str
    as_postgres: list[str]  # runuser prefix when the tests run as root (initdb refuses root)
    psql: str

    def sql(self, statement: str) -> str:
        return subprocess.run([*self.as_postgres, self.psql, "-h", str(self.socket_dir), "-p", str(self.port),
                               "-U", self.superuser, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-tAc", statement],
                              check=True, capture_output=True, text=True).stdout

    def databases(self) -> set[str]:
        return set(self.sql("SELECT datname FROM pg_database").split())


@contextmanager
def first_deploy_postgres(plan: Plan) -> Iterator[Server]:
    """PostgreSQL set up as the Cluster's bootstrap does: superuser `postgres`, scram-sha-256 over
    TCP, `initdb.owner` with the password of `initdb.secret` (PASSWORD here) owning `initdb.database`,
    CREATEDB from `managed.roles`; then what the first deploy made before the energy workload: mlflow_auth."""
    initdb = require_tool("initdb", "PostgreSQL server binaries")
    pg_ctl = require_tool("pg_ctl", "PostgreSQL server binaries")
    psql = require_tool("psql", "PostgreSQL client")
    require_tool("pg_isready", "PostgreSQL client")
    spec = cluster_spec(plan)
    bootstrap, [role] = spec["bootstrap"]["initdb"], spec["managed"]["roles"]
    assert role["name"] == bootstrap["owner"] and role["passwordSecret"] == bootstrap["secret"]
    root = Path(tempfile.mkdtemp(prefix="mlops-pg-init-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    subprocess.run([*as_postgres, initdb, "-D", str(data), "--username=postgres", "--auth-local=trust",
                    "--auth-host=scram-sha-256"], check=True, capture_output=True)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root}"
    subprocess.run([*as_postgres, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
                   check=True, capture_output=True)
    server = Server(port, root, "postgres", as_postgres, psql)
    owner = bootstrap["owner"]
    try:
        server.sql(f"CREATE ROLE \"{owner}\" LOGIN {'CREATEDB' if role['createdb'] else ''} PASSWORD '{PASSWORD}'")
        for db in (bootstrap["database"], AUTH_DATABASE):
            server.sql(f'CREATE DATABASE "{db}" OWNER "{owner}"')
        yield server
    finally:
        subprocess.run([*as_postgres, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def run_job(plan: Plan, port: int, password: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    """The Job's exact command and environment, pointed at the local server."""
    command = container(plan, "Job", JOB)["command"]
    env = job_env(plan, {"PGHOST": "127.0.0.1", "PGPORT": str(port), "PGPASSWORD": password,
                         "PGSSLMODE": "disable", **overrides})
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_job_creates_the_workloads_database_on_a_data_directory_initialised_without_it(full_dev):
    with first_deploy_postgres(full_dev) as server:
        assert WORKLOADS_DATABASE not in server.databases()
        first = run_job(full_dev, server.port, PASSWORD)
        assert first.returncode == 0, first.stderr
        after = server.databases()
        assert {AUTH_DATABASE, WORKLOADS_DATABASE} <= after
        assert server.sql(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{WORKLOADS_DATABASE}'"
                          ).strip() == cluster_spec(full_dev)["bootstrap"]["initdb"]["owner"]

        again = run_job(full_dev, server.port, PASSWORD)  # the replacement Job of a later `pulumi up`
        assert again.returncode == 0, again.stderr
        assert server.databases() == after

        wrong = run_job(full_dev, server.port, "not-the-password")
        assert wrong.returncode != 0
        assert "password authentication failed" in wrong.stderr


def test_job_fails_when_a_database_cannot_be_created(full_dev):
    """A CREATE DATABASE that errors must fail the Job, not be skipped: here the user may log in
    but lacks CREATEDB (an external server whose DBA did not grant it)."""
    with first_deploy_postgres(full_dev) as server:
        server.sql(f"CREATE ROLE limited LOGIN PASSWORD '{PASSWORD}'")
        result = run_job(full_dev, server.port, PASSWORD, PGUSER="limited")
        assert result.returncode != 0
        assert "permission denied to create database" in result.stderr
        assert WORKLOADS_DATABASE not in server.databases()


def test_job_fails_when_postgres_never_answers(full_dev):
    result = run_job(full_dev, free_port(), PASSWORD, WAIT_SECONDS="3")
    assert result.returncode != 0
    assert "accepts no connections within 3s" in result.stderr


@pytest.mark.parametrize("stack", ["dev", "onprem", "full-dev"])
def test_job_lists_every_extra_database_and_is_restricted(stack, plan_of, full_dev):
    plan = full_dev if stack == "full-dev" else plan_of(stack)
    wanted = {AUTH_DATABASE, WORKLOADS_DATABASE} if stack == "full-dev" else {AUTH_DATABASE}
    job = plan.manifest("Job", JOB, PLATFORM_NS)
    pod = job["spec"]["template"]["spec"]
    [psql] = pod["containers"]
    env = {e["name"]: e for e in psql["env"]}
    assert set(env["DATABASES"]["value"].split()) == wanted
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "postgres-credentials"
    assert psql["image"] == cluster_spec(plan)["imageName"]
    assert env["PGHOST"]["value"] == "postgres-rw" and env["PGSSLMODE"]["value"] == "require"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert psql["securityContext"]["readOnlyRootFilesystem"] is True
    assert psql["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert plan.manifest("NetworkPolicy", f"{JOB}-ingress", PLATFORM_NS)["spec"]["ingress"] == []
    # PostgreSQL admits every pod of its namespace, which is where the Job runs
    ingress = plan.manifest("NetworkPolicy", "postgres-ingress", PLATFORM_NS)["spec"]["ingress"]
    assert {"podSelector": {}} in ingress[0]["from"]
    # bootstrap makes only the owner's own database: the others are the Job's
    assert set(cluster_spec(plan)["bootstrap"]["initdb"]) == {"database", "owner", "secret"}


def depends_transitively(plan: Plan, urn: str, on: str) -> bool:
    edges = {r["urn"]: r["depends_on"] for r in plan.resources}
    seen, todo = set(), [urn]
    while todo:
        current = todo.pop()
        if current == on:
            return True
        if current not in seen:
            seen.add(current)
            todo.extend(edges.get(current, []))
    return False


def urn_of(plan: Plan, kind: str, name: str, namespace: str) -> str:
    [resource] = [r for r in plan.resources if (m := r.get("manifest")) and m["kind"] == kind
                  and m["metadata"]["name"] == name and m["metadata"].get("namespace") == namespace]
    return resource["urn"]


def test_what_uses_the_databases_waits_for_the_job(full_dev):
    job = urn_of(full_dev, "Job", JOB, PLATFORM_NS)
    energy = [(o["kind"], o["metadata"]["name"]) for o in full_dev.kubernetes_objects
              if o["kind"] in ("Job", "CronJob") and o["metadata"]["name"].startswith("energy")]
    assert {name for _, name in energy} == {"energy-train", "energy-prod", "energy-pre", "energy-monitor",
                                            "energy-ingest"}  # every energy object reads the workloads database
    for kind, name in energy:
        assert depends_transitively(full_dev, urn_of(full_dev, kind, name, "ml-workloads"), job), name
    assert depends_transitively(full_dev, urn_of(full_dev, "Deployment", "mlflow", "mlflow"), job)


def test_dependency_check_rejects_an_unrelated_object(full_dev):
    """The bad fixture of the check above: nothing links the bucket Job to the databases Job."""
    job = urn_of(full_dev, "Job", JOB, PLATFORM_NS)
    assert not depends_transitively(full_dev, urn_of(full_dev, "Job", "seaweedfs-buckets", PLATFORM_NS), job)


@pytest.mark.parametrize("stack", ["gke", "eks"])
def test_managed_databases_include_workloads_when_energy_is_on(stack):
    values, secret_keys = stack_config(stack)
    energy = {"energy": {"enabled": True}}  # the default image
    plan = run_program(stack, ({**values, "mlops-stack:workloads": json.dumps(energy)}, secret_keys))
    if stack == "gke":
        names = {r["inputs"]["name"] for r in plan.of_type("gcp:sql/database:Database")}
        assert {AUTH_DATABASE, WORKLOADS_DATABASE} <= names
    else:
        job = plan.manifest("Job", "postgres-create-databases")
        env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert set(env["EXTRA_DATABASES"].split()) == {AUTH_DATABASE, WORKLOADS_DATABASE}
