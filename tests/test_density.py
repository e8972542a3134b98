"""Shared model servers (`tenantDefaults.serving.mode: shared`): the plan, and the real MLServer.

Plan: a shared tenant gets one SeldonDeployment per `modelsPerServer` models with no executor, a
ConfigMap repository of alias models and a route per model at its dedicated-mode URL; a tenant that
overrides the mode keeps one deployment per model; the quota counts the server, not the models;
misfits are config errors. Processes: a real MLflow server (PostgreSQL + S3 API) holds three
tenant models; one real MLServer runs the plan's repository and env (ConfigMap layout, secrets
resolved); each public path, rewritten as the plan's VirtualService says, reaches its own model; a
model whose alias is not set yet does not stop the others (the server turns ready, that model
answers 503) and is served once the alias appears.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.dummy import DummyClassifier

from infra.platforms import cluster_facts
from infra.settings import ConfigError, parse_stack_config, raw_from_pulumi_config
from mlops.footprint import pods_of
from mlops.plan import Plan, run_program, stack_config
from mlops.validate import validate_plan
from modules.serving.density import NO_ENGINE
from modules.serving.seldon import ALIAS_RUNTIME
from modules.tenants import READER_SECRET
from tests.services import mlflow_server, postgres, s3_api
from tests.shared_mlserver import SharedServer, shared_mlserver

MODELS = ("iris", "digits", "energy")
POLL_SECONDS = 5
READER = ("tenant-alice.reader", "reader-password-123")


def class_config() -> tuple[dict[str, str], dict[str, str]]:
    values, secrets = stack_config("dev")
    models = {m: {"source": {"alias": "champion"}} for m in MODELS}
    values |= {
        "mlops-stack:serving": json.dumps({"registry": {"pollSeconds": POLL_SECONDS}}),
        "mlops-stack:evaluation": json.dumps({"enabled": True, "dataset": "neo",
                                              "dataUrl": "https://data.example.org/nasa.csv"}),
        "mlops-stack:tenantDefaults": json.dumps({"serving": {"mode": "shared", "modelsPerServer": 2}}),
        "mlops-stack:tenants": json.dumps({
            "alice": {"members": ["alice"], "models": models},
            "bob": {"members": ["bob"], "models": models, "serving": {"mode": "dedicated"}},
        }),
    }
    return values, secrets


@pytest.fixture(scope="module")
def stack() -> tuple[Plan, Any]:
    values = class_config()
    return run_program("dev", values), parse_stack_config(*raw_from_pulumi_config(*values))


def _deployments(plan: Plan, namespace: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in plan.kubernetes_objects
            if o["kind"] == "SeldonDeployment" and o["metadata"]["namespace"] == namespace}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"]
    return container


# ------------------------------------------------------------------------------------------- plan

def test_a_shared_tenant_runs_its_models_in_servers_without_executor(stack):
    plan, _ = stack
    servers = _deployments(plan, "alice")
    assert set(servers) == {"models-0", "models-1"}  # 3 models, 2 per server
    hosted = {}
    for name, server in servers.items():
        [predictor] = server["spec"]["predictors"]
        assert predictor["annotations"] == {NO_ENGINE: "true"}  # where the operator reads it
        repository = plan.manifest("ConfigMap", f"{name}-repository", "alice")["data"]
        settings = {m: json.loads(s) for m, s in repository.items()}
        assert {s["implementation"] for s in settings.values()} == {ALIAS_RUNTIME}
        for model, s in settings.items():
            assert s["name"] == model
            assert s["parameters"]["extra"] == {"registry_model": f"alice.{model}", "alias": "champion",
                                                "poll_seconds": POLL_SECONDS, "start_unready": True}
        [volume] = predictor["componentSpecs"][0]["spec"]["volumes"]
        assert volume["configMap"]["items"] == [{"key": m, "path": f"{m}/model-settings.json"} for m in sorted(settings)]
        env = {e["name"]: e for e in _container(server)["env"]}
        assert "MLSERVER_MODEL_IMPLEMENTATION" not in env and "MLSERVER_MODEL_EXTRA" not in env  # per model, in files
        assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": READER_SECRET,
                                                                                "key": "password"}
        hosted[name] = sorted(settings)
    assert hosted == {"models-0": ["digits", "iris"], "models-1": ["energy"]}
    resources = {name: _container(s)["resources"] for name, s in servers.items()}
    assert resources["models-0"] == {"requests": {"cpu": "150m", "memory": "384Mi"},
                                     "limits": {"cpu": "1", "memory": "768Mi"}}
    pods = [p for p in pods_of(plan) if p.component.startswith("alice/")]
    assert sorted(len(p.containers) for p in pods) == [1, 1]  # no executor sidecar


def test_a_tenant_can_keep_one_deployment_per_model(stack):
    plan, _ = stack
    assert set(_deployments(plan, "bob")) == set(MODELS)
    pods = [p for p in pods_of(plan) if p.component.startswith("bob/")]
    assert [len(p.containers) for p in pods] == [2, 2, 2]  # model + Seldon's executor


def test_every_model_keeps_its_dedicated_endpoint(stack):
    plan, _ = stack
    urls = plan.outputs["tenantModelUrls"]
    for tenant in ("alice", "bob"):
        assert {m: u.split("/seldon/", 1)[1] for m, u in urls[tenant].items()} == {
            m: f"{tenant}/{m}/v2/models/model/infer" for m in MODELS}


def test_the_evaluation_calls_each_model_on_its_server(stack):
    plan, _ = stack
    endpoints = json.loads(plan.manifest("ConfigMap", "evaluation-endpoints")["data"]["endpoints.json"])
    assert endpoints["alice"] == {
        "iris": "http://models-0-main.alice.svc.cluster.local:9000/v2/models/iris/infer",
        "digits": "http://models-0-main.alice.svc.cluster.local:9000/v2/models/digits/infer",
        "energy": "http://models-1-main.alice.svc.cluster.local:9000/v2/models/energy/infer"}
    assert endpoints["bob"]["iris"] == "http://iris-main.bob.svc.cluster.local:8000/v2/models/model/infer"


def test_the_shared_stack_passes_validation(stack):
    plan, config = stack
    report = validate_plan(plan, config.kubernetes.version, cluster_facts(config))
    assert report.ok, report.render()


def test_the_gateway_and_the_evaluation_may_reach_the_shared_port(stack):
    plan, _ = stack
    policy = plan.manifest("NetworkPolicy", "tenant-ingress", "alice")
    gateway_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule.get("ports") or []
                     if any((f.get("namespaceSelector") or {}).get("matchLabels", {}).get(
                         "kubernetes.io/metadata.name") == "istio-system" for f in rule["from"])}
    assert 9000 in gateway_ports


def _rewrite(routes: list[dict[str, Any]], path: str) -> str | None:
    """Istio's HTTPRewrite of the first matching route: an exact match is replaced whole, a prefix
    match has its prefix replaced by `rewrite.uri`."""
    for route in routes:
        for match in route["match"]:
            uri = match["uri"]
            if uri.get("exact") == path:
                return route["rewrite"]["uri"]
            if "prefix" in uri and path.startswith(uri["prefix"]):
                return route["rewrite"]["uri"] + path[len(uri["prefix"]):]
    return None


def test_the_routes_map_each_public_path_to_its_model(stack):
    plan, _ = stack
    routes = plan.manifest("VirtualService", "models-0-routes", "alice")["spec"]["http"]
    assert _rewrite(routes, "/seldon/alice/iris/v2/models/model/infer") == "/v2/models/iris/infer"
    assert _rewrite(routes, "/seldon/alice/digits/v2/models/model") == "/v2/models/digits"
    assert _rewrite(routes, "/seldon/alice/energy/v2/models/model/infer") is None  # on models-1
    assert _rewrite(routes, "/seldon/alice/iris/v2/models/modelx/infer") is None
    assert {r["route"][0]["destination"]["host"] for r in routes} == {"models-0-main.alice.svc.cluster.local"}


def _config_error(tenant: dict[str, Any], **defaults: Any) -> str:
    raw = {"platform": "minikube", "environment": "dev", "tenants": {"alice": {"members": ["alice"], **tenant}},
           "tenantDefaults": {"serving": {"mode": "shared", **defaults}}}
    with pytest.raises(ConfigError) as error:
        parse_stack_config(raw)
    return str(error.value)


@pytest.mark.parametrize("tenant, defaults, expected", [
    ({"models": {"iris": {"source": {"alias": "champion"}, "candidate": {"alias": "challenger"}}}}, {},
     "tenants.alice: models.iris: candidate, replicas and autoscaling need a pod per model"),
    ({"models": {"models-3": {"source": {"alias": "champion"}}}}, {}, "models.models-3: the name is a shared server's"),
    ({"models": {f"m{i}": {"source": {"alias": "champion"}} for i in range(5)}, "quota": {"models": 5}},
     {"modelsPerServer": 5}, "a server of 5 models has limits (1, 1152Mi) above tenantDefaults.limits.max (1, 1Gi)"),
    ({"models": {m: {"source": {"alias": "champion"}} for m in MODELS}, "quota": {"memory": "300Mi"}}, {},
     "quota.memory 300Mi is below what the models need at their limits × pods (416Mi"),
])
def test_misfits_are_config_errors(tenant, defaults, expected):
    assert expected in _config_error(tenant, **defaults)


# -------------------------------------------------------------------------------- real processes

@pytest.fixture(scope="module")
def registry(monkeypatch_module) -> Iterator[tuple[MlflowClient, str]]:
    """Three tenant models on a real MLflow server; `k` answers k for every row. Only iris and
    digits have a champion yet."""
    with postgres(("mlruns", "mlflow_auth")) as db, s3_api(("mlflow-artifacts",)) as s3, \
            mlflow_server(db, s3, "mlflow-artifacts") as server:
        monkeypatch_module.setenv("MLFLOW_TRACKING_USERNAME", server.username)
        monkeypatch_module.setenv("MLFLOW_TRACKING_PASSWORD", server.password)
        mlflow.set_tracking_uri(server.url)
        created = requests.post(f"{server.url}/api/2.0/mlflow/users/create", auth=(server.username, server.password),
                                json={"username": READER[0], "password": READER[1]}, timeout=30)
        assert created.status_code == 200, created.text
        client = MlflowClient(server.url)
        mlflow.set_experiment("alice/models")
        rows = pd.DataFrame({"a": [0.1, 0.2], "b": [1.0, 2.0]})
        for k, model in enumerate(MODELS):
            classifier = DummyClassifier(strategy="constant", constant=k).fit(rows, [k, (k + 1) % 3])
            with mlflow.start_run():
                info = mlflow.sklearn.log_model(classifier, name="model", registered_model_name=f"alice.{model}",
                                                signature=infer_signature(rows, classifier.predict(rows)),
                                                serialization_format="cloudpickle")
            if model != "energy":
                client.set_registered_model_alias(f"alice.{model}", "champion", info.registered_model_version)
        yield client, server.url


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _resolved_env(container: dict[str, Any], tracking_uri: str) -> dict[str, str]:
    """The env as the kubelet resolves it, plus what the operator adds to a graph node (the model
    name is the container's; with files in the repository MLServer must ignore it)."""
    secrets = {READER_SECRET: {"username": READER[0], "password": READER[1]}}
    env = {e["name"]: e["value"] if "value" in e else secrets[e["valueFrom"]["secretKeyRef"]["name"]][
        e["valueFrom"]["secretKeyRef"]["key"]] for e in container["env"]}
    return {**env, "MLFLOW_TRACKING_URI": tracking_uri, "MLSERVER_MODEL_NAME": container["name"],
            "MLSERVER_METRICS_ENDPOINT": "/prometheus"}


@pytest.fixture(scope="module")
def served(stack, registry) -> Iterator[tuple[SharedServer, list[dict[str, Any]]]]:
    """alice's models-0 (iris, digits) with energy added to its repository: three models, one of
    them (energy) without a champion when the server starts."""
    plan, _ = stack
    server = plan.manifest("SeldonDeployment", "models-0", "alice")
    data = dict(plan.manifest("ConfigMap", "models-0-repository", "alice")["data"])
    data["energy"] = plan.manifest("ConfigMap", "models-1-repository", "alice")["data"]["energy"]
    routes = [r for name in ("models-0", "models-1")
              for r in plan.manifest("VirtualService", f"{name}-routes", "alice")["spec"]["http"]]
    container = _container(server)
    with shared_mlserver({f"{m}/model-settings.json": s for m, s in data.items()},
                         _resolved_env(container, registry[1]),
                         ready_path=container["readinessProbe"]["httpGet"]["path"], timeout=300) as process:
        yield process, routes


def _infer(served: tuple[SharedServer, list[dict[str, Any]]], model: str) -> requests.Response:
    process, routes = served
    path = _rewrite(routes, f"/seldon/alice/{model}/v2/models/model/infer")
    assert path == f"/v2/models/{model}/infer"
    body = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [0.5]},
                       {"name": "b", "shape": [1], "datatype": "FP64", "data": [1.5]}]}
    return requests.post(process.url + path, json=body, timeout=30)


def _answer(response: requests.Response) -> int:
    assert response.status_code == 200, response.text
    return int(np.asarray(response.json()["outputs"][0]["data"]).ravel()[0])


def test_each_route_reaches_its_own_model(served):
    index = requests.post(f"{served[0].url}/v2/repository/index", json={}, timeout=10).json()
    assert sorted(m["name"] for m in index) == sorted(MODELS)  # the operator's MLSERVER_MODEL_NAME adds none
    assert [_answer(_infer(served, m)) for m in ("iris", "digits")] == [0, 1]
    for model in ("iris", "digits"):
        metadata = requests.get(f"{served[0].url}/v2/models/{model}", timeout=10).json()
        assert metadata["parameters"]["registry_model"] == f"alice.{model}"


def test_a_model_without_its_alias_waits_and_the_others_serve(served, registry):
    unready = _infer(served, "energy")
    assert unready.status_code == 503 and "no version of models:/alice.energy@champion" in unready.text, unready.text
    client, _ = registry
    [version] = client.search_model_versions("name = 'alice.energy'")
    client.set_registered_model_alias("alice.energy", "champion", version.version)
    deadline = time.monotonic() + 6 * POLL_SECONDS + 60
    while time.monotonic() < deadline and _infer(served, "energy").status_code != 200:
        time.sleep(1)
    assert _answer(_infer(served, "energy")) == 2
    assert [_answer(_infer(served, m)) for m in ("iris", "digits")] == [0, 1]
