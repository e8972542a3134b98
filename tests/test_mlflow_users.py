"""Declarative MLflow users (modules/mlflow/users.py): the reconcile Job run for real, exactly as the
component declares it (command and env from the plan's manifests, Secrets resolved from the plan),
against the platform's MLflow server on PostgreSQL and an S3 API; and the Job in the stacks' plans."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pytest
import requests
from pulumi.runtime import mocks, settings
from pulumi.runtime.sync_await import _sync_await

from infra.config import StackConfig, memory_mib
from infra.platforms import cluster_facts
from infra.program import MLFLOW_USERS_RESOURCES, MODEL_READER_SECRET
from infra.settings import parse_stack_config, raw_from_pulumi_config
from mlops.plan import PROJECT, Plan, _Mocks, _Recorder, run_program, stack_config
from mlops.validate import validate_plan
from modules.mlflow.users import COMMAND, JOB, STATE_HASH, MlflowPermission, MlflowUser, MlflowUsers, MlflowUsersArgs
from tests.services import mlflow_server, postgres, s3_api

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "modules/mlflow/image"
TEST_STACKS = ROOT / "tests/stacks"
BUCKET = "mlflow-artifacts"
NAMESPACE = "mlflow"
READER = MlflowUser("model-reader", "serving", "mlflow-model-reader",
                    (MlflowPermission("registered_model", "demo-model", "READ"),))


def trainer(experiment_permission: str = "EDIT") -> MlflowUser:
    """EDIT on its experiment, and on a registered model that does not exist when the Job runs."""
    return MlflowUser("trainer", "workloads", "mlflow-trainer", (
        MlflowPermission("experiment", "training", experiment_permission),
        MlflowPermission("registered_model", "trained-model", "EDIT"),
    ))


class _Passwords(_Mocks):
    """The plan's mocks, with a distinct password per RandomPassword; a new `generation` is what a
    replaced RandomPassword would give."""

    def __init__(self, generation: int):
        super().__init__()
        self.generation = generation

    def new_resource(self, args: mocks.MockResourceArgs):
        rid, outputs = super().new_resource(args)
        if args.typ == "random:index/randomPassword:RandomPassword":
            seed = f"{args.name}:{self.generation}".encode()
            outputs["result"] = hashlib.sha256(seed).hexdigest()[: int(args.inputs["length"])]
        return rid, outputs


def plan_users(users: Sequence[MlflowUser], tracking_url: str, admin_password: str, generation: int = 1) -> Plan:
    """The component under the plan's mocks, next to the admin Secret the Mlflow component makes."""

    def program() -> None:
        k8s.core.v1.Secret("admin", metadata={"name": "mlflow-server", "namespace": NAMESPACE},
                           string_data={"admin-password": admin_password})
        MlflowUsers("mlflow-users", MlflowUsersArgs(
            namespace=NAMESPACE, image="mlops-stack/mlflow-server:test", tracking_url=tracking_url,
            admin_secret="mlflow-server", admin_username="admin", users=users,
            resources=MLFLOW_USERS_RESOURCES.to_k8s()))

    plan, plan_mocks = Plan(stack="users-test"), _Passwords(generation)
    settings.ROOT.set(None)
    pulumi.runtime.set_all_config({}, [])
    pulumi.runtime.set_mocks(plan_mocks, project=PROJECT, stack="users-test", preview=False,
                             monitor=_Recorder(plan_mocks, plan, reveal_secrets=True))
    _sync_await(mocks.run_pulumi_func(program))
    return plan


def job_of(plan: Plan) -> dict:
    return plan.manifest("Job", JOB)


def invocation(plan: Plan) -> tuple[list[str], dict[str, str], list[str]]:
    """The Job container's command and env, Secret references resolved from the plan's Secrets;
    and every secret value it can see (none may be printed)."""
    job = job_of(plan)
    container = job["spec"]["template"]["spec"]["containers"][0]
    env, secrets = {}, []
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        env[var["name"]] = plan.manifest("Secret", ref["name"], job["metadata"]["namespace"])["stringData"][ref["key"]]
        secrets.append(env[var["name"]])
    secrets += [u["password"] for u in json.loads(env["MLOPS_USERS_STATE"])["users"]]
    return container["command"], env, secrets


def image_pythonpath() -> Path:
    """Where the image's PYTHONPATH directory comes from in this checkout (its Dockerfile COPYs it)."""
    dockerfile = (IMAGE / "Dockerfile").read_text()
    (path,) = re.findall(r"PYTHONPATH=(\S+)", dockerfile)
    assert f"COPY mlops_users.py {path}/mlops_users.py" in dockerfile
    return IMAGE


# Peak RSS of a command, from a small launcher: a child forked from pytest itself would count
# pytest's own pages (ru_maxrss includes what the child held before exec).
MEASURE = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
           "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(code)")


def run_job(plan: Plan, **override: str) -> tuple[int, str, str, float]:
    """Run the Job's command with only its env (as the pod would); returns exit code, stdout,
    stderr and peak RSS in MiB. Fails if any secret it was given is printed."""
    command, env, secrets = invocation(plan)
    assert command[0] == "python"
    env = {"PATH": os.environ["PATH"], "HOME": tempfile.gettempdir(), "PYTHONPATH": str(image_pythonpath()),
           **env, **override}
    with tempfile.NamedTemporaryFile("r") as rss:
        result = subprocess.run([sys.executable, "-c", MEASURE, rss.name, sys.executable, *command[1:]], env=env,
                                capture_output=True, text=True, cwd=tempfile.gettempdir(), timeout=600)
        peak_mib = int(rss.read()) / 1024  # Linux: KiB
    for value in secrets:
        assert value not in result.stdout + result.stderr, "the reconcile Job printed a secret"
    return result.returncode, result.stdout, result.stderr, peak_mib


class Api:
    def __init__(self, url: str, username: str, password: str):
        self.url, self.auth = url, (username, password)

    def __call__(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.url}{path}", auth=self.auth, timeout=30, **kwargs)


def password_of(plan: Plan, username: str) -> str:
    state = json.loads(invocation(plan)[1]["MLOPS_USERS_STATE"])
    return next(u["password"] for u in state["users"] if u["username"] == username)


@pytest.fixture(scope="module")
def server():
    with postgres(("mlruns", "mlflow_auth")) as db, s3_api((BUCKET,)) as s3, mlflow_server(db, s3, BUCKET) as srv:
        yield srv


@pytest.fixture(scope="module")
def reconciled(server):
    """The first run, before any model exists; then the admin logs artifacts and registers the
    models (as training would, after `pulumi up`)."""
    plan = plan_users([READER, trainer()], server.url, server.password)
    first = run_job(plan)
    admin = Api(server.url, server.username, server.password)
    experiment = admin("POST", "/api/2.0/mlflow/experiments/create", json={"name": "registry-demo"}).json()
    run = admin("POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": experiment["experiment_id"]}).json()["run"]
    artifacts = run["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/")
    upload = f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{artifacts}"
    assert requests.put(f"{upload}/model/MLmodel", data=b"flavors: {}\n", auth=admin.auth, timeout=30).ok
    for name in ("demo-model", "trained-model"):
        assert admin("POST", "/api/2.0/mlflow/registered-models/create", json={"name": name}).ok
    version = admin("POST", "/api/2.0/mlflow/model-versions/create", json={
        "name": "demo-model", "source": f"{run['info']['artifact_uri']}/model", "run_id": run["info"]["run_id"]})
    assert version.ok, version.text
    admin("POST", "/api/2.0/mlflow/experiments/create", json={"name": "elsewhere"})
    return plan, first


@pytest.mark.integration
def test_first_run_creates_users_and_grants(reconciled):
    plan, (code, stdout, stderr, _) = reconciled
    assert code == 0, stderr
    assert "user model-reader: created" in stdout and "user trainer: created" in stdout
    assert "registered_model 'trained-model': granted EDIT" in stdout  # granted before the model exists
    assert job_of(plan)["spec"]["template"]["metadata"]["annotations"][STATE_HASH]


@pytest.mark.integration
def test_reader_reads_the_model_and_its_artifacts_but_cannot_change_it(server, reconciled, monkeypatch, tmp_path):
    import mlflow.artifacts

    plan, _ = reconciled
    reader = Api(server.url, "model-reader", password_of(plan, "model-reader"))
    assert reader("GET", "/api/2.0/mlflow/registered-models/get", params={"name": "demo-model"}).status_code == 200
    assert reader("GET", "/api/2.0/mlflow/model-versions/get", params={"name": "demo-model", "version": "1"}).ok
    for var, value in (("MLFLOW_TRACKING_URI", server.url), ("MLFLOW_TRACKING_USERNAME", reader.auth[0]),
                       ("MLFLOW_TRACKING_PASSWORD", reader.auth[1])):
        monkeypatch.setenv(var, value)
    local = mlflow.artifacts.download_artifacts("models:/demo-model/1", dst_path=str(tmp_path))
    assert (Path(local) / "MLmodel").read_text() == "flavors: {}\n"
    created = reader("POST", "/api/2.0/mlflow/model-versions/create", json={"name": "demo-model", "source": "s3://x/y"})
    alias = reader("POST", "/api/2.0/mlflow/registered-models/alias",
                   json={"name": "demo-model", "alias": "champion", "version": "1"})
    assert (created.status_code, alias.status_code) == (403, 403)
    admin = Api(server.url, server.username, server.password)
    rows = admin("GET", "/api/3.0/mlflow/users/permissions/list", params={"username": "model-reader"}).json()
    assert {(r["resource_type"], r["resource_pattern"], r["permission"]) for r in rows["permissions"]} == {
        ("registered_model", "demo-model", "READ")}


@pytest.mark.integration
def test_edit_on_an_experiment_logs_there_only(server, reconciled):
    plan, _ = reconciled
    admin = Api(server.url, server.username, server.password)
    trainer_api = Api(server.url, "trainer", password_of(plan, "trainer"))

    def experiment_id(name: str) -> str:
        return admin("GET", "/api/2.0/mlflow/experiments/get-by-name",
                     params={"experiment_name": name}).json()["experiment"]["experiment_id"]

    run = trainer_api("POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id("training")})
    assert run.status_code == 200, run.text
    metric = trainer_api("POST", "/api/2.0/mlflow/runs/log-metric", json={
        "run_id": run.json()["run"]["info"]["run_id"], "key": "loss", "value": 0.5, "timestamp": 0})
    assert metric.status_code == 200
    elsewhere = trainer_api("POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id("elsewhere")})
    assert elsewhere.status_code == 403  # the stack's default_permission is READ
    # the grant made before `trained-model` existed holds now that it does; demo-model stays READ
    version = {"source": "s3://mlflow-artifacts/some/model"}
    assert trainer_api("POST", "/api/2.0/mlflow/model-versions/create", json={"name": "trained-model", **version}).ok
    assert trainer_api("POST", "/api/2.0/mlflow/model-versions/create",
                       json={"name": "demo-model", **version}).status_code == 403


def _grants(server, username: str) -> set[tuple[str, str, str]]:
    admin = Api(server.url, server.username, server.password)
    rows = admin("GET", "/api/3.0/mlflow/users/permissions/list", params={"username": username}).json()
    return {(r["resource_type"], r["resource_pattern"], r["permission"]) for r in rows["permissions"]}


@pytest.mark.integration
def test_a_second_run_changes_nothing(server, reconciled):
    plan, _ = reconciled
    before = {u: _grants(server, u) for u in ("model-reader", "trainer")}
    code, stdout, stderr, _ = run_job(plan)
    assert code == 0, stderr
    assert "user model-reader: unchanged" in stdout and "user trainer: unchanged" in stdout
    assert not re.search(r"granted|password set|->|created", stdout), stdout
    assert {u: _grants(server, u) for u in before} == before


@pytest.mark.integration
def test_users_it_does_not_manage_are_reported_and_left_alone(server, reconciled):
    admin = Api(server.url, server.username, server.password)
    someone = {"username": "someone", "password": "someone-password-1"}
    assert admin("POST", "/api/2.0/mlflow/users/create", json=someone).ok
    code, stdout, _, _ = run_job(reconciled[0])
    assert code == 0
    assert "not managed here (left as is): someone" in stdout
    assert Api(server.url, "someone", "someone-password-1")("GET", "/api/2.0/mlflow/users/current").ok


@pytest.mark.integration
def test_a_changed_permission_is_updated(server, reconciled):
    original, _ = reconciled
    read_only = plan_users([READER, trainer("READ")], server.url, server.password)
    assert (job_of(read_only)["spec"]["template"]["metadata"]["annotations"][STATE_HASH]
            != job_of(original)["spec"]["template"]["metadata"]["annotations"][STATE_HASH])  # the Job is replaced
    code, stdout, stderr, _ = run_job(read_only)
    assert code == 0, stderr
    assert "experiment 'training': EDIT -> READ" in stdout
    admin = Api(server.url, server.username, server.password)
    training = admin("GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "training"})
    experiment = {"experiment_id": training.json()["experiment"]["experiment_id"]}
    trainer_api = Api(server.url, "trainer", password_of(original, "trainer"))
    assert trainer_api("POST", "/api/2.0/mlflow/runs/create", json=experiment).status_code == 403
    code, stdout, _, _ = run_job(original)
    assert code == 0 and "experiment 'training': READ -> EDIT" in stdout
    assert trainer_api("POST", "/api/2.0/mlflow/runs/create", json=experiment).status_code == 200


@pytest.mark.integration
def test_a_changed_password_takes_effect(server, reconciled):
    original, _ = reconciled
    rotated = plan_users([READER, trainer()], server.url, server.password, generation=2)
    old, new = password_of(original, "model-reader"), password_of(rotated, "model-reader")
    assert old != new
    code, stdout, stderr, _ = run_job(rotated)
    assert code == 0, stderr
    assert "user model-reader: password set" in stdout
    current = "/api/2.0/mlflow/users/current"
    assert Api(server.url, "model-reader", old)("GET", current).status_code == 401
    assert Api(server.url, "model-reader", new)("GET", current).status_code == 200
    assert run_job(original)[0] == 0  # and back, for the other tests
    assert Api(server.url, "model-reader", old)("GET", current).status_code == 200


@pytest.mark.integration
def test_a_wrong_admin_password_fails_the_job(server, reconciled):
    wrong = plan_users([READER], server.url, "not-the-admin-password")
    code, stdout, stderr, _ = run_job(wrong)
    assert code == 1
    assert "admin login of 'admin' is rejected (HTTP 401)" in stderr and "MLFLOW_TRACKING_PASSWORD" in stderr


@pytest.mark.integration
def test_an_unreachable_server_fails_the_job(server):
    plan = plan_users([READER], "http://127.0.0.1:9", server.password)
    code, _, stderr, _ = run_job(plan, MLOPS_USERS_WAIT_SECONDS="1")
    assert code == 1 and "did not answer 200 within 1 s" in stderr


@pytest.mark.integration
def test_the_job_fits_its_declared_memory(server, reconciled):
    """Peak RSS of a full reconcile (both users, every check) against the stack's request and limit."""
    _, _, _, rss = run_job(reconciled[0])
    declared = MLFLOW_USERS_RESOURCES
    assert rss < memory_mib(declared.memory) <= memory_mib(declared.memory_limit), (
        f"reconcile peak RSS {rss:.1f} MiB; declared request {declared.memory}, limit {declared.memory_limit}")


@pytest.mark.parametrize("state, message", [
    ("{not json", "MLOPS_USERS_STATE is not JSON"),
    (json.dumps({"users": [{"username": "u", "password": ""}]}), "users[0]: a non-empty username and password"),
    (json.dumps({"users": [{"username": "u", "password": "p" * 16,
                            "permissions": [{"kind": "prompt", "name": "x", "permission": "READ"}]}]}),
     "user u: permission"),
])
def test_a_malformed_state_exits_2_before_calling_the_server(state, message):
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(IMAGE), "MLOPS_USERS_STATE": state,
           "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_TRACKING_USERNAME": "admin",
           "MLFLOW_TRACKING_PASSWORD": "secret-admin-pw"}
    result = subprocess.run([sys.executable, *COMMAND[1:]], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr
    assert "p" * 16 not in result.stderr and "secret-admin-pw" not in result.stderr


@pytest.mark.parametrize("users, message", [
    ([READER, READER], "declared twice"),
    ([MlflowUser("admin", "serving", "x")], "'admin' is the admin"),
    ([MlflowUser("a:b", "serving", "x")], "without ':'"),
    ([MlflowUser("u", "serving", "x", (MlflowPermission("registered_model", "m", "WRITE"),))],  # type: ignore[arg-type]
     "a permission in"),
])
def test_the_component_rejects_what_the_job_would_get_wrong(users, message):
    with pytest.raises(Exception, match=re.escape(message)):
        plan_users(users, "http://mlflow:5000", "admin-password-1")


# ---- the stacks' plans -------------------------------------------------------------------------


def _resource(plan: Plan, kind: str, name: str) -> dict:
    return next(r for r in plan.resources if (r.get("manifest") or {}).get("kind") == kind
                and r["manifest"]["metadata"]["name"] == name)


def _env_var(plan: Plan, name: str) -> dict:
    return next(v for v in job_of(plan)["spec"]["template"]["spec"]["containers"][0]["env"] if v["name"] == name)


def _stack(stack: str, stacks_dir: Path | None = None) -> tuple[Plan, StackConfig]:
    config = parse_stack_config(*raw_from_pulumi_config(*stack_config(stack, stacks_dir)))
    return run_program(stack, stack_config(stack, stacks_dir), reveal_secrets=True), config


@pytest.fixture(scope="module")
def full_stack():
    return _stack("full", TEST_STACKS)


def test_the_reader_gets_read_on_each_model_served_by_alias(full_stack):
    plan, config = full_stack
    served = {s.model for m in config.serving.models.values() for s in m.aliases}
    assert served, "the full stack serves a model by alias"
    state = json.loads(invocation(plan)[1]["MLOPS_USERS_STATE"])
    reader = next(u for u in state["users"] if u["username"] == "model-reader")
    assert {(p["kind"], p["name"], p["permission"]) for p in reader["permissions"]} == {
        ("registered_model", name, "READ") for name in served}
    secret = plan.manifest("Secret", MODEL_READER_SECRET, config.namespaces.serving)
    assert secret["stringData"] == {"username": "model-reader", "password": reader["password"]}
    password = next(r for r in plan.of_type("random:index/randomPassword:RandomPassword")
                    if r["name"] == "mlflow-users-model-reader-password")
    assert password["protect"]  # prod: kept from `pulumi destroy`
    assert reader["password"] not in json.dumps(plan.outputs)  # exported nowhere in plain text


def test_the_job_waits_for_the_mlflow_server(full_stack):
    plan, _ = full_stack
    job = _resource(plan, "Job", JOB)
    assert any(d.endswith("kubernetes:apps/v1:Deployment::mlflow-server") for d in job["depends_on"])


@pytest.mark.parametrize("stack, stacks_dir", [("dev", None), ("full", TEST_STACKS)])
def test_job_and_secrets_pass_validation(stack, stacks_dir):
    plan, config = _stack(stack, stacks_dir)
    report = validate_plan(plan, config.kubernetes.version, cluster_facts(config))
    assert report.ok, report.render()
    names = (JOB, f"{JOB}-state", MODEL_READER_SECRET)
    ours = {(o["kind"], o["metadata"]["name"]) for o in plan.kubernetes_objects if o["metadata"].get("name") in names}
    assert {("Job", JOB), ("Secret", f"{JOB}-state"), ("Secret", MODEL_READER_SECRET)} <= ours


@pytest.mark.parametrize("break_it, problem", [
    (lambda plan: plan.resources.remove(_resource(plan, "Secret", f"{JOB}-state")), f"{JOB}-state"),
    (lambda plan: _env_var(plan, "MLFLOW_TRACKING_PASSWORD")["valueFrom"]["secretKeyRef"].update(key="admin-pw"),
     "admin-pw"),
])
def test_validation_rejects_a_job_without_its_secrets(break_it, problem):
    plan, config = _stack("dev")
    break_it(plan)
    report = validate_plan(plan, config.kubernetes.version, cluster_facts(config))
    assert any(problem in p for p in report.integrity or []), report.render()
