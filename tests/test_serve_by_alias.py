"""Serving a registry alias: the stack's plan, and the real MLServer following a real MLflow.

Plan: an alias model is a custom MLServer container (V2) with no storage initializer, no bucket
Secret and the read-only MLflow user's Secret; it passes `mlops validate` checks; bad wiring is
rejected. Processes: NEO trained and registered on the real MLflow server (PostgreSQL + S3 API),
MLServer started with the plan's container env; it serves `champion`, follows the alias to a new
version with no failed request, and keeps serving when the alias points at a broken version. Then
the neo pipeline's hooks drive that same server: a retrained challenger passes the gate and is
served, a worse one is refused, `mlops rollback` brings the old one back, with no failed request.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import mlflow
import mlflow.sklearn
import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from infra.settings import ConfigError, parse_stack_config
from mlops.plan import Plan, run_program, stack_config
from modules.serving.seldon import ALIAS_RUNTIME, validate_seldon_deployment
from tests import test_pipeline_hooks as pipeline
from tests.runtimes import EnvServer, mlserver_from_env
from tests.services import MlflowServer, mlflow_server, postgres, s3_api
from workloads.neo import data as neo_data
from workloads.neo import model as neo_model
from workloads.neo import payload
from workloads.neo.train import MODEL_NAME, flavor_options

STACKS = Path(__file__).resolve().parent / "stacks"
POLL_SECONDS = 5  # the smallest serving.registry.pollSeconds the config allows
LOAD_BUDGET = 45.0  # seconds to download and load one NEO version on this shared 2-core machine
READER = ("model-reader", "reader-password-123")


def alias_plan(poll_seconds: int = POLL_SECONDS) -> Plan:
    """The dev stack serving neo by alias (champion, challenger in shadow) and mnist pinned to a URI."""
    values, secrets = stack_config("dev")
    values["mlops-stack:serving"] = json.dumps({
        "registry": {"pollSeconds": poll_seconds},
        "models": {"neo": {"source": {"model": MODEL_NAME, "alias": "champion"},
                           "candidate": {"alias": "challenger"}}},
    })
    return run_program("dev", (values, secrets))


@pytest.fixture(scope="module")
def plan() -> Plan:
    return alias_plan()


def _container(deployment: dict[str, Any], predictor: int = 0) -> dict[str, Any]:
    [container] = deployment["spec"]["predictors"][predictor]["componentSpecs"][0]["spec"]["containers"]
    return container


# ------------------------------------------------------------------------------------------- plan

def test_alias_model_is_a_custom_mlserver_node_without_bucket_credentials(plan):
    neo = plan.manifest("SeldonDeployment", "neo", "serving")
    assert validate_seldon_deployment(neo) == []
    assert neo["spec"]["protocol"] == "v2"
    assert neo["metadata"]["annotations"] == {"mlops-stack.io/main-model": "models:/NEOs@champion",
                                              "mlops-stack.io/candidate-model": "models:/NEOs@challenger"}
    for i, alias in enumerate(("champion", "challenger")):
        predictor = neo["spec"]["predictors"][i]
        assert set(predictor["graph"]) == {"name", "type", "children"}  # no implementation/modelUri/envSecretRefName
        container = _container(neo, i)
        env = {e["name"]: e for e in container["env"]}
        assert env["MLSERVER_MODEL_IMPLEMENTATION"]["value"] == ALIAS_RUNTIME
        assert json.loads(env["MLSERVER_MODEL_EXTRA"]["value"]) == {
            "registry_model": "NEOs", "alias": alias, "poll_seconds": POLL_SECONDS}
        assert env["MLFLOW_TRACKING_URI"]["value"] == plan.outputs["mlflowInClusterUrl"]
        for name, key in (("MLFLOW_TRACKING_USERNAME", "username"), ("MLFLOW_TRACKING_PASSWORD", "password")):
            assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-model-reader", "key": key}
        assert container["image"].startswith("mlops-stack/mlserver:")  # the project's image, with the runtime
    assert plan.outputs["modelUrls"]["neo"].endswith("/seldon/serving/neo/v2/models/model/infer")
    # nothing in the serving namespace holds bucket keys: no model is pinned to an artifact URI
    serving_secrets = [o["metadata"]["name"] for o in plan.kubernetes_objects
                       if o["kind"] == "Secret" and o["metadata"]["namespace"] == "serving"]
    assert "model-storage" not in serving_secrets


def test_alias_models_wait_for_the_job_that_creates_their_reader(plan):
    [deployment] = [r for r in plan.resources if (r.get("manifest") or {}).get("kind") == "SeldonDeployment"]
    jobs = {r["urn"] for r in plan.resources if (r.get("manifest") or {}).get("kind") == "Job"
            and r["manifest"]["metadata"]["namespace"] == "mlflow"}
    assert jobs & set(deployment.get("depends_on") or ()), deployment.get("depends_on")
    reader = plan.manifest("Secret", "mlflow-model-reader", "serving")
    assert {"username", "password"} <= set(reader.get("stringData") or reader.get("data") or {})


@pytest.mark.parametrize("stack", ["full", "full-dev"])
def test_full_stacks_serve_neo_by_alias_and_keep_a_pinned_model_where_set(stack):
    plan = run_program(stack, stack_config(stack, STACKS))
    neo = plan.manifest("SeldonDeployment", "neo", "serving")
    assert validate_seldon_deployment(neo) == []
    assert "modelUri" not in neo["spec"]["predictors"][0]["graph"]
    pinned = [o for o in plan.kubernetes_objects if o["kind"] == "SeldonDeployment"
              and any("modelUri" in p["graph"] for p in o["spec"]["predictors"])]
    if stack == "full":  # the raw-URI path stays exercised
        assert [o["metadata"]["name"] for o in pinned] == ["neo-pinned"]
        assert pinned[0]["spec"]["predictors"][0]["graph"]["envSecretRefName"] == "model-storage"


def _bad(mutate) -> dict[str, Any]:
    obj = copy.deepcopy(alias_plan_neo())
    mutate(obj)
    return obj


_NEO: dict[str, Any] = {}


def alias_plan_neo() -> dict[str, Any]:
    if not _NEO:
        _NEO.update(alias_plan().manifest("SeldonDeployment", "neo", "serving"))
    return _NEO


def _env(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return _container(obj)["env"]


def _drop(name: str):
    return lambda o: _env(o).remove(next(e for e in _env(o) if e["name"] == name))


def _set(name: str, value: Any):
    def apply(o):
        for e in _env(o):
            if e["name"] == name:
                e.clear()
                e.update({"name": name, **value})
    return apply


BROKEN = [
    ("port env wipes the env", lambda o: _env(o).append({"name": "MLSERVER_HTTP_PORT", "value": "8080"}),
     "drop the container's whole env"),
    ("storage initializer", lambda o: o["spec"]["predictors"][0]["graph"].update(modelUri="s3://b/m"),
     "takes no implementation, modelUri or envSecretRefName"),
    ("no tracking uri", _drop("MLFLOW_TRACKING_URI"), "needs env ['MLFLOW_TRACKING_URI']"),
    ("inference workers", _set("MLSERVER_PARALLEL_WORKERS", {"value": "1"}), "MLSERVER_PARALLEL_WORKERS=0"),
    ("plain password", _set("MLFLOW_TRACKING_PASSWORD", {"value": "hunter2"}), "is a plain value"),
    ("extra without alias", _set("MLSERVER_MODEL_EXTRA", {"value": '{"registry_model": "NEOs"}'}),
     "JSON with registry_model and alias"),
]


@pytest.mark.parametrize(("case", "mutate", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_seldon_checks_reject_broken_alias_wiring(case, mutate, expected):
    problems = validate_seldon_deployment(_bad(mutate))
    assert any(expected in p for p in problems), problems


def _config_error(serving: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as error:
        parse_stack_config({"platform": "minikube", "environment": "dev", "serving": serving})
    return str(error.value)


@pytest.mark.parametrize(("serving", "expected"), [
    ({"models": {"neo": {"source": {"alias": "champion"}}}}, "needs model"),
    ({"models": {"neo": {"source": {"model": "NEOs"}}}}, "without alias"),
    ({"models": {"neo": {"source": {"model": "NEOs", "alias": "champion", "uri": "s3://b/m"}}}}, "exactly one of"),
    ({"models": {"neo": {"source": {"model": "NEOs", "alias": "latest"}}}}, "reserved"),
    ({"models": {"neo": {"source": {"model": "NEOs", "alias": "champ ion"}}}}, "alias"),
    ({"models": {"neo": {"source": {"uri": "s3://b/m"}, "candidate": {"alias": "challenger"}}}},
     "candidate.alias needs a registered model"),
    ({"registry": {"pollSeconds": 1}, "models": {}}, "pollSeconds"),
    ({"seldon": {"mlflowRuntime": "mlserver_mlflow.MLflowRuntime"},
      "models": {"neo": {"source": {"model": "NEOs", "alias": "champion"}}}}, "served by alias"),
])
def test_config_errors_name_the_key(serving, expected):
    message = _config_error(serving)
    assert expected in message, message


# -------------------------------------------------------------------------------- real processes

def operator_env(container: dict[str, Any]) -> dict[str, str]:
    """What Seldon Core 1.17.1 adds to a graph node's container (operator/controllers/
    seldondeployment_controller.go createContainerService): the model name is the container's, and
    the metrics path the executor's (`/prometheus`); the ports are chosen by `mlserver_from_env`."""
    return {"MLSERVER_MODEL_NAME": container["name"], "MLSERVER_METRICS_ENDPOINT": "/prometheus"}


def resolved_env(container: dict[str, Any], tracking_uri: str, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's env as the kubelet resolves it (secretKeyRef -> value); the in-cluster
    tracking URL is replaced by the local server's."""
    env = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[ref["name"]][ref["key"]]
    return {**env, "MLFLOW_TRACKING_URI": tracking_uri}


@dataclass
class Registry:
    server: MlflowServer
    url: str
    admin: MlflowClient
    s3_endpoint: str
    bucket: str
    versions: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def neo_result():
    prepared = neo_data.preprocess(neo_data.load(neo_data.default_source()))
    return neo_model.train_and_select(prepared)


@contextmanager
def registry_services() -> Iterator[Registry]:
    """PostgreSQL, the S3 API and the platform's MLflow server, with the read-only user `READER`."""
    with postgres(("mlruns", "mlflow_auth")) as db, s3_api(("mlflow-artifacts",)) as s3, \
            mlflow_server(db, s3, "mlflow-artifacts") as server:
        created = requests.post(f"{server.url}/api/2.0/mlflow/users/create", timeout=30,
                                auth=(server.username, server.password),
                                json={"username": READER[0], "password": READER[1]})
        assert created.status_code == 200, created.text
        yield Registry(server, server.url, MlflowClient(server.url), s3, "mlflow-artifacts")


@pytest.fixture(scope="module")
def registry(neo_result, monkeypatch_module) -> Iterator[Registry]:
    with registry_services() as reg:
        monkeypatch_module.setenv("MLFLOW_TRACKING_USERNAME", reg.server.username)
        monkeypatch_module.setenv("MLFLOW_TRACKING_PASSWORD", reg.server.password)
        mlflow.set_tracking_uri(reg.url)
        mlflow.set_experiment("Hazardous_NEOs")
        for _ in range(2):
            reg.versions.append(_register(neo_result))
        yield reg


def _register(result) -> str:
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(result.model, name="model", registered_model_name=MODEL_NAME,
                                        **flavor_options(result.model, result.X_test.head(3)))
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@contextmanager
def alias_server(plan: Plan, registry: Registry) -> Iterator[EnvServer]:
    """MLServer started with the env of the plan's `neo` champion container, the reader's login
    and the local MLflow: it serves `NEOs@champion` and follows it."""
    container = _container(plan.manifest("SeldonDeployment", "neo", "serving"))
    secrets = {"mlflow-model-reader": {"username": READER[0], "password": READER[1]}}
    env = {**resolved_env(container, registry.url, secrets), **operator_env(container)}
    with mlserver_from_env(env, container["readinessProbe"]["httpGet"]["path"]) as server:
        yield server


@pytest.fixture(scope="module")
def served(plan, registry) -> Iterator[EnvServer]:
    registry.admin.set_registered_model_alias(MODEL_NAME, "champion", registry.versions[0])
    with alias_server(plan, registry) as server:
        yield server


def _infer(url: str, rows) -> requests.Response:
    return requests.post(f"{url}/v2/models/model/infer", json=payload.v2(rows), timeout=30)


def _metric(server: EnvServer, name: str, **labels: str) -> float | None:
    text = requests.get(server.metrics_url, timeout=10).text
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    return None


def neo_traffic(server: EnvServer, rows) -> pipeline.Traffic:
    """V2 requests of `rows` back to back; the version is the answer's `model_version`."""
    return pipeline.Traffic(lambda: _infer(server.url, rows), lambda body: body.get("model_version"))


def _until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


@pytest.mark.integration
def test_the_reader_identity_cannot_move_an_alias(registry):
    reader = MlflowClient(registry.url)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_USERNAME", READER[0])
        patch.setenv("MLFLOW_TRACKING_PASSWORD", READER[1])
        assert reader.get_registered_model(MODEL_NAME).name == MODEL_NAME
        with pytest.raises(MlflowException, match="(?i)permission"):
            reader.set_registered_model_alias(MODEL_NAME, "champion", registry.versions[1])


@pytest.mark.integration
def test_serves_the_champion_and_reports_its_version(served, registry, neo_result):
    rows = neo_result.X_test.head(20)
    response = _infer(served.url, rows)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == registry.versions[0]
    assert body["outputs"][0]["data"] == neo_result.model.predict(rows).tolist()
    metadata = requests.get(f"{served.url}/v2/models/model", timeout=10).json()
    assert metadata["versions"] == [registry.versions[0]]
    assert metadata["parameters"]["registry_model"] == MODEL_NAME and metadata["parameters"]["alias"] == "champion"
    assert _metric(served, "mlops_model_version_info", model=MODEL_NAME, alias="champion",
                   version=registry.versions[0]) == 1
    assert _metric(served, "mlops_model_load_failures_total", stage="load") == 0


@pytest.mark.integration
def test_moving_the_alias_rolls_out_with_no_failed_request(served, registry, neo_result):
    old, new = registry.versions
    with neo_traffic(served, neo_result.X_test.head(5)) as traffic:
        assert _until(lambda: len(traffic.answers) >= 5, 30)
        moved = time.monotonic()
        registry.admin.set_registered_model_alias(MODEL_NAME, "champion", new)
        switched = _until(lambda: traffic.first(new) is not None, POLL_SECONDS + LOAD_BUDGET)
        # and a few more answers after the switch
        _until(lambda: switched and sum(1 for a in traffic.answers if a[0] > traffic.first(new)) >= 5, 30)
    assert switched, f"still serving {old} {POLL_SECONDS + LOAD_BUDGET} s after the alias moved:\n" \
                     f"{served.log.read_text()[-3000:]}"
    lag = traffic.first(new) - moved
    print(f"alias moved -> first answer from version {new}: {lag:.1f} s; "
          f"{len(traffic.answers)} requests, {traffic.failed} failed")
    assert traffic.failed == 0, [a for a in traffic.answers if a[1] != 200][:5]
    # one swap: after the first answer of the new version, the old one never answers again
    after = [v for t, _, v in traffic.answers if t > traffic.first(new)]
    assert old not in after
    assert requests.get(f"{served.url}/v2/models/model", timeout=10).json()["versions"] == [new]
    assert _metric(served, "mlops_model_version_info", version=old) is None
    assert _metric(served, "mlops_model_version_info", version=new) == 1


def _corrupt_version(registry: Registry, result) -> str:
    """A registered version whose serialized model is garbage (an overwritten artifact)."""
    version = _register(result)
    source = registry.admin.get_model_version(MODEL_NAME, version).source
    logged = mlflow.get_logged_model(source.removeprefix("models:/"))
    prefix = logged.artifact_location.split("mlflow-artifacts:/", 1)[1].lstrip("/")
    s3 = boto3.client("s3", endpoint_url=registry.s3_endpoint, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=registry.bucket, Prefix=prefix)["Contents"]]
    model_files = [k for k in keys if re.search(r"\.(skops|pkl|cloudpickle)$", k)]
    assert model_files, keys
    for key in model_files:
        s3.put_object(Bucket=registry.bucket, Key=key, Body=b"not a model")
    return version


@pytest.mark.integration
def test_a_broken_version_keeps_the_old_one_serving_and_counts_a_failure(served, registry, neo_result):
    serving = requests.get(f"{served.url}/v2/models/model", timeout=10).json()["versions"][0]
    broken = _corrupt_version(registry, neo_result)
    before = _metric(served, "mlops_model_load_failures_total", stage="load")
    with neo_traffic(served, neo_result.X_test.head(5)) as traffic:
        registry.admin.set_registered_model_alias(MODEL_NAME, "champion", broken)
        counted = _until(lambda: _metric(served, "mlops_model_load_failures_total", stage="load") > before,
                         POLL_SECONDS + LOAD_BUDGET)
    assert counted, served.log.read_text()[-3000:]
    assert traffic.answers and traffic.failed == 0
    assert {v for _, _, v in traffic.answers} == {serving}
    assert requests.get(f"{served.url}/v2/models/model", timeout=10).json()["versions"] == [serving]
    assert _metric(served, "mlops_model_version_info", version=serving) == 1
    assert f"models:/{MODEL_NAME}/{broken}" in served.log.read_text()  # the log says which version failed


# ------------------------------------------------------- the pipeline's hooks drive the same server

neo_tables = pipeline.neo_tables  # 400 NASA rows, and the same rows with shuffled labels


def _served_version(url: str) -> str:
    return requests.get(f"{url}/v2/models/model", timeout=10).json()["versions"][0]


@pytest.mark.integration
def test_the_hooks_promote_refuse_and_roll_back_on_the_same_server(served, registry, neo_result, neo_tables,
                                                                    tmp_path):
    good, crippled = map(str, neo_tables)
    outputs = tmp_path / "outputs.json"  # the stack output the smoke step reaches the endpoint by
    outputs.write_text(json.dumps({"modelUrls": {"neo": f"{served.url}/v2/models/model/infer"}}))

    def step(name: str, **env: str) -> subprocess.CompletedProcess:
        return pipeline.run_hook(registry.server, tmp_path, "neo", name, STACK_OUTPUTS=str(outputs),
                                 SMOKE_TIMEOUT=str(POLL_SECONDS + LOAD_BUDGET), **env)

    def registered(data: str) -> str:
        version = pipeline.ok(step("register", NEO_DATA=data)).outputs["model-version"]
        pipeline.ok(step("deploy", MODEL_VERSION=version))
        return version

    def served_as_champion(version: str) -> None:
        """The champion's smoke step: known rows over HTTP once the endpoint reports `version`."""
        smoke = pipeline.ok(step("smoke", MODEL_ROLE="champion", NEO_DATA=good, SMOKE_MIN_ACCURACY="0"))
        assert f"(champion v{version})" in smoke.stdout, smoke.stdout
        assert _served_version(served.url) == version

    with neo_traffic(served, neo_result.X_test.head(5)) as traffic:
        # a champion trained on labels with nothing to learn (the champion the earlier tests left
        # has no held-out f1, so the gate lets the first measured challenger through)
        blind = registered(crippled)
        pipeline.ok(step("promote", MODEL_VERSION=blind))
        served_as_champion(blind)

        # retrained on the real labels: its smoke test (in-process, and the champion still answering)
        # and the gate pass, and the same server answers with it
        better = registered(good)
        pipeline.ok(step("smoke", NEO_DATA=good))
        promoted = pipeline.ok(step("promote", MODEL_VERSION=better))
        assert "PROMOTE" in promoted.stdout and f"NEOs@champion → v{better} (was v{blind})" in promoted.stdout
        served_as_champion(better)
        accurate = pipeline.ok(step("smoke", MODEL_ROLE="champion", NEO_DATA=good))  # default minimum 0.9
        assert f"{served.url}/v2/models/model/infer (champion v{better})" in accurate.stdout

        # a worse challenger: refused; after two polls the server still answers with the champion
        worse = registered(crippled)
        refused = step("promote", MODEL_VERSION=worse)
        assert refused.returncode == 1 and "worse" in refused.stdout and f"stays v{better}" in refused.stdout
        assert pipeline.alias(registry.admin, MODEL_NAME, "champion") == better
        time.sleep(2 * POLL_SECONDS)
        assert _served_version(served.url) == better

        # rollback: one command, and the same endpoint answers with the previous champion again
        env = {**os.environ, **pipeline.tracking(registry.server)}
        back = subprocess.run([sys.executable, "-m", "mlops.cli", "rollback", "--model", "neo"], cwd=pipeline.ROOT,
                              env=env, capture_output=True, text=True, timeout=120)
        assert back.returncode == 0, back.stderr
        assert f"v{better} → v{blind}" in back.stdout
        served_as_champion(blind)
    assert traffic.failed == 0, [a for a in traffic.answers if a[1] != 200][:5]
    # one swap per move, in order: never an answer from a version the alias has left
    sequence = traffic.sequence()
    assert sequence[-3:] == [blind, better, blind], sequence
    assert worse not in sequence
    print(f"hooks on one server: {len(traffic.answers)} requests, {traffic.failed} failed, served {sequence}")
