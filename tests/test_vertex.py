"""`serving.engine: vertex` on the gke stack (modules/serving/vertex.py,
docs/decisions/0022-vertex-engine.md): the plan's endpoint, service accounts and IAM bindings (the
read condition evaluated as CEL), the config errors, the uploads and deployments against a stub of
the two aiplatform services that keeps Vertex's rules (requests built from
`google.cloud.aiplatform_v1.types`), the image's `vertex_serve.py` on the real MLServer with the
plan's environment and a local GCS/metadata server, and the cost from the pricing file."""

from __future__ import annotations

import json
import re
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pytest
import requests
import yaml

from infra.platforms import cluster_facts
from infra.settings import parse_stack_config, raw_from_pulumi_config
from mlops.plan import Plan, run_program, stack_config
from mlops.validate import validate_plan
from modules.serving import vertex
from policy.rules import violations
from tests.runtimes import MLSERVER_IMAGE, TOOLS, _server, tool_script
from tests.managed_engines import (
    assert_config_error,
    in_cluster_serving,
    mlflow_model_folder,
    raw_config,
    resources_of,
)
from tests.services import free_port

STACKS = Path(__file__).resolve().parent / "stacks"
ROOT = Path(__file__).resolve().parents[1]
STACK = "gke-vertex"
MAIN_URI = "gs://mlflow-artifacts/1/models/m-0123456789abcdef/artifacts"
CANDIDATE_URI = "gs://mlflow-artifacts/1/models/m-fedcba9876543210/artifacts"
DYNAMIC = "pulumi-python:dynamic:Resource"
PROJECT, REGION = "my-mlops-project", "europe-west1"


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    return {stack: run_program(stack, stack_config(stack, STACKS)) for stack in ("full-gke", STACK)}


_of = resources_of


def _raw(stack: str = STACK, **changes: Any) -> dict[str, Any]:
    return raw_config(stack, **changes)


def _deployments(plan: Plan) -> dict[str, Any]:
    [props] = [r["inputs"] for r in plan.resources if r["type"] == DYNAMIC and r["urn"].endswith("::neo")]
    return {k: v for k, v in props.items() if k != "__provider"}


# ------------------------------------------------------------------------------ stack file and plan

def test_the_vertex_twin_of_full_gke_differs_only_in_its_engine_and_candidate_mode():
    full, twin = (yaml.safe_load((STACKS / f"Pulumi.{s}.yaml").read_text())["config"] for s in ("full-gke", STACK))
    serving = twin["mlops-stack:serving"]
    assert serving.pop("engine") == "vertex" and serving.pop("vertex")
    neo = serving["models"]["neo"]
    assert (neo.pop("candidateMode"), neo.pop("canaryPercent")) == ("canary", 20)
    assert twin["mlops-stack:gcp"].pop("namePrefix") == "mlops-full-gke"  # full-gke's default
    assert twin == full


def _above_serving(plan: Plan, stack: str) -> dict[str, str]:
    """Every resource outside the engine's component (and what only one engine has: Seldon's
    namespace, the Vertex AI API), keyed by URN with the stack name read as full-gke."""
    kept = {}
    for r in plan.resources:
        if ("mlops:serving:" in r["urn"] or r["urn"].endswith(("namespaces-seldon", "apis-aiplatform"))
                or in_cluster_serving(r["urn"])):
            continue
        body = json.dumps({k: r.get(k) for k in ("type", "inputs", "manifest")}, sort_keys=True, default=str)
        kept[r["urn"].replace(f":{stack}::", ":full-gke::")] = body.replace(stack, "full-gke")
    return kept


def test_engine_choice_changes_nothing_above_the_serving_contract(plans):
    seldon, managed = _above_serving(plans["full-gke"], "full-gke"), _above_serving(plans[STACK], STACK)
    assert not [r["urn"] for r in plans[STACK].resources if in_cluster_serving(r["urn"])]  # no unused identity
    assert sorted(seldon) == sorted(managed)
    assert [urn for urn in seldon if seldon[urn] != managed[urn]] == []
    assert len(seldon) > 100
    apis = _of(plans[STACK], "gcp:projects/service:Service")
    assert apis["apis-aiplatform"]["service"] == "aiplatform.googleapis.com" and "apis-aiplatform" not in _of(
        plans["full-gke"], "gcp:projects/service:Service")


def test_the_vertex_stack_passes_validate_and_every_policy_rule(plans):
    plan = plans[STACK]
    report = validate_plan(plan, "1.34", cluster_facts(parse_stack_config(*raw_from_pulumi_config(
        *stack_config(STACK, STACKS)))))
    assert report.ok, report.render()
    found = [(r["name"], v) for r in plan.resources for v in violations(r["type"], r.get("manifest") or r["inputs"])]
    assert found == []


def test_models_answer_at_the_vertex_predict_api(plans):
    endpoint = _of(plans[STACK], "gcp:vertex/aiEndpoint:AiEndpoint")["neo"]
    base = f"https://{REGION}-aiplatform.googleapis.com/v1/projects/{PROJECT}/locations/{REGION}/endpoints/"
    assert plans[STACK].outputs["modelUrls"] == {"neo": f"{base}{endpoint['name']}:predict"}
    assert plans[STACK].outputs["modelsBaseUrl"] == base
    kinds = {r["type"] for r in plans[STACK].resources}
    assert "kubernetes:machinelearning.seldon.io/v1:SeldonDeployment" not in kinds


def test_the_endpoint_has_a_plan_time_id_and_leaves_the_traffic_to_the_deployments(plans):
    endpoint = _of(plans[STACK], "gcp:vertex/aiEndpoint:AiEndpoint")["neo"]
    assert re.fullmatch(r"[1-9][0-9]{9}", endpoint["name"])  # numeric, no leading zero, at most 10 digits
    assert endpoint == {"name": endpoint["name"], "displayName": "mlops-full-gke-neo", "location": REGION,
                        "region": REGION, "project": PROJECT, "description": "mlops-stack model neo"}
    [resource] = [r for r in plans[STACK].resources if r["type"] == "gcp:vertex/aiEndpoint:AiEndpoint"]
    assert resource["provider"].endswith("pulumi:providers:gcp::gcp")  # the platform's provider, not ambient
    props = _deployments(plans[STACK])
    assert props["endpoint"] == f"projects/{PROJECT}/locations/{REGION}/endpoints/{endpoint['name']}"
    assert resource["urn"] in [r for r in plans[STACK].resources if r["type"] == DYNAMIC][0]["depends_on"]


def test_deployed_models_run_the_stacks_mlserver_build_on_their_gcs_prefix(plans):
    props = _deployments(plans[STACK])
    builds = [r["inputs"] for r in plans[STACK].resources if r["type"] == "docker-build:index:Image"
              and any(t.split(":")[0].endswith("/mlops/mlserver") for t in r["inputs"]["tags"])]
    assert len(builds) == 1
    main, candidate = props["deployments"]
    assert (main["key"], candidate["key"]) == ("main", "candidate")
    for d, uri in ((main, MAIN_URI), (candidate, CANDIDATE_URI)):
        assert re.fullmatch(rf"{REGION}-docker\.pkg\.dev/{PROJECT}/mlops/mlserver@sha256:[0-9a-f]{{64}}", d["image"])
        assert d["artifact_uri"] == f"{uri}/"
        assert d["command"] == ["python", "/opt/mlops/vertex_serve.py"]
        assert (d["port"], d["health_route"], d["predict_route"]) == (8080, "/ping", "/invocations")
        assert d["env"] == {"MLSERVER_MODEL_NAME": "neo", "MLSERVER_MODEL_IMPLEMENTATION": "mlops_mlserver.MLflowRuntime",
                            "MLSERVER_MODEL_URI": "/tmp/model", "MLSERVER_HTTP_PORT": "8080", "MLSERVER_HOST": "0.0.0.0",
                            "MLSERVER_PARALLEL_WORKERS": "4"}  # one per vCPU: Vertex scales on CPU
        assert d["machine_type"] == "n1-standard-4" and d["cpu_target"] == 70 and d["max_replicas"] == 6
        assert d["service_account"] == f"mlops-full-gke-neo-vx@{PROJECT}.iam.gserviceaccount.com"
        assert re.fullmatch(r"[1-9][0-9]{9}", d["id"])
    assert (main["min_replicas"], candidate["min_replicas"]) == (2, 1)
    assert main["id"] != candidate["id"]
    assert props["traffic"] == {main["id"]: 80, candidate["id"]: 20}
    # the image runs the script the plan names
    assert "COPY vertex_serve.py /opt/mlops/vertex_serve.py" in (MLSERVER_IMAGE / "Dockerfile").read_text()


# ------------------------------------------------------------------------------------------- IAM

def _cel(expression: str):
    import celpy

    env = celpy.Environment()
    program = env.program(env.compile(expression), functions={"getAttribute": lambda api, key, default: api.get(
        key, default)})

    def allowed(name: str, list_prefix: str | None = None) -> bool:
        attrs = {"storage.googleapis.com/objectListPrefix": list_prefix} if list_prefix is not None else {}
        return bool(program.evaluate({"resource": celpy.json_to_cel({"name": name}), "api": celpy.json_to_cel(attrs)}))

    return allowed


def test_the_deployed_models_account_reads_exactly_the_versions_prefixes(plans):
    members = _of(plans[STACK], "gcp:storage/bucketIAMMember:BucketIAMMember")
    mine = {n: m for n, m in members.items() if "neo-vx@" in m["member"]}
    assert list(mine) == ["neo-mlflow-artifacts"]
    grant = mine["neo-mlflow-artifacts"]
    assert (grant["bucket"], grant["role"]) == ("mlflow-artifacts", "roles/storage.objectViewer")
    allowed = _cel(grant["condition"]["expression"])
    bucket = "projects/_/buckets/mlflow-artifacts"
    for uri in (MAIN_URI, CANDIDATE_URI):
        prefix = uri.removeprefix("gs://mlflow-artifacts/")
        assert allowed(f"{bucket}/objects/{prefix}/MLmodel")
        assert allowed(f"{bucket}/objects/{prefix}/model.skops")
        assert allowed(bucket, f"{prefix}/")  # listing the version's folder
        assert not allowed(bucket, prefix.rsplit("/", 1)[0] + "/")  # not its parent
    assert not allowed(f"{bucket}/objects/1/models/m-0123456789abcdef/other/MLmodel")
    assert not allowed(f"{bucket}/objects/1/models/m-0123456789abcdef/artifacts-old/MLmodel")
    assert not allowed(f"{bucket}/objects/inference-log/neo/part-0.jsonl")
    assert not allowed(bucket)  # no unconditioned listing of the bucket
    assert not allowed(bucket, "")


def test_the_account_writes_logs_and_metrics_and_nothing_else_at_project_level(plans):
    account = _of(plans[STACK], "gcp:serviceaccount/account:Account")["neo"]
    assert account["accountId"] == "mlops-full-gke-neo-vx" and account["project"] == PROJECT
    member = f"serviceAccount:mlops-full-gke-neo-vx@{PROJECT}.iam.gserviceaccount.com"
    kinds = ("gcp:projects/iAMMember:IAMMember", "gcp:projects/iAMBinding:IAMBinding",
             "gcp:serviceaccount/iAMMember:IAMMember", "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
             "gcp:storage/bucketIAMMember:BucketIAMMember")
    grants = sorted((kind.split(":")[1], g["role"]) for kind in kinds for g in _of(plans[STACK], kind).values()
                    if g.get("member") == member or member in g.get("members", []))
    assert grants == [("projects/iAMMember", "roles/logging.logWriter"),
                      ("projects/iAMMember", "roles/monitoring.metricWriter"),
                      ("storage/bucketIAMMember", "roles/storage.objectViewer")]


def test_only_vertex_s_service_agent_pulls_and_only_from_the_stacks_repository(plans):
    agent = _of(plans[STACK], "gcp:projects/serviceIdentity:ServiceIdentity")["serving"]
    assert agent == {"project": PROJECT, "service": "aiplatform.googleapis.com"}
    pulls = {n: g for n, g in _of(plans[STACK], "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember").items()
             if "gcp-sa-aiplatform" in g["member"]}
    repository = _of(plans[STACK], "gcp:artifactregistry/repository:Repository")["registry"]
    assert pulls == {"serving-pull": {"project": PROJECT, "location": REGION, "repository": repository["repositoryId"],
                                      "role": "roles/artifactregistry.reader",
                                      "member": "serviceAccount:service-123456789@gcp-sa-aiplatform.iam."
                                                "gserviceaccount.com"}}


# ----------------------------------------------------------------------------------- config errors

@pytest.mark.parametrize(("raw", "fragments"), [
    (_raw("dev", serving__engine="vertex"),
     ['mlops-stack:serving.engine: got "vertex"', "allowed on platform gke only", "minikube allowed seldon or kserve"]),
    (_raw("full-eks", serving__engine="vertex"), ["allowed on platform gke only", "on eks allowed seldon or kserve"]),
    (_raw(serving__models={"neo": {"source": {"model": "NEOs", "alias": "champion"}}}),
     ['mlops-stack:serving.models.neo.source.alias: got "champion"', "allowed source: {uri: gs://",
      "mlops resolve-model --name NEOs --alias champion", "0022-vertex-engine.md"]),
    (_raw(serving__models={"neo": {"source": {"uri": MAIN_URI}, "candidate": {"uri": "s3://b/m"},
                                   "candidateMode": "canary"}}),
     ['mlops-stack:serving.models.neo.candidate.uri: got "s3://b/m"', "allowed candidate: {uri: gs://"]),
    (_raw(serving__models={"neo": {"source": {"uri": MAIN_URI}, "candidate": {"uri": CANDIDATE_URI}}}),
     ['mlops-stack:serving.models.neo.candidateMode: got "shadow"', "allowed canary"]),
    (_raw(images__registry="registry.example.org/mlops"),
     ["mlops-stack:serving.seldon.mlserverImage:", "from the stack's Artifact Registry"]),
    (_raw(serving__vertex={"machineType": "N1 standard"}), ['mlops-stack:serving.vertex.machineType: got "N1 standard"']),
    (_raw(images__platforms=["linux/arm64"]),
     ['mlops-stack:serving.vertex.machineType: got "n1-standard-4"', "its instances run linux/amd64"]),
], ids=["not-gke", "eks", "alias", "s3-candidate", "shadow", "foreign-registry", "machine-type", "arm-only-image"])
def test_vertex_config_errors_name_the_key_the_value_and_what_is_allowed(raw, fragments):
    assert_config_error(raw, STACK, fragments)


def test_the_vertex_stack_config_is_valid():
    config = parse_stack_config(_raw(), stack=STACK)
    assert config.serving.engine == "vertex" and config.serving.vertex.machine_type == "n1-standard-4"
    assert parse_stack_config(_raw(serving__vertex={}), stack=STACK).serving.vertex.machine_type == "n1-standard-2"


# -------------------------------------------- uploads and deployments against a stub of the services

class _Operation:
    def __init__(self, response: Any):
        self._response = response

    def result(self, timeout: float | None = None) -> Any:
        return self._response


class FakeVertex:
    """The model and endpoint services' state and the rules of the v1 API reference that the
    deployments depend on; every request must be the library's own request type."""

    def __init__(self, endpoint: str):
        from google.cloud.aiplatform_v1 import types

        self.t = types
        self.endpoint = endpoint
        self.models: dict[str, Any] = {}  # name -> Model
        self.deployed: dict[str, Any] = {}  # id -> DeployedModel
        self.traffic: dict[str, int] = {}
        self.calls: list[tuple[str, Any]] = []
        self.models_client, self.endpoints_client = self, self

    def _record(self, method: str, request: Any, kind: type) -> None:
        assert isinstance(request, kind), (method, type(request))
        # the wire form the REST transport sends, through the type's own JSON mapping
        json.loads(kind.to_json(request))
        self.calls.append((method, request))

    def _split(self, split: dict[str, int], allowed: set[str]) -> dict[str, int]:
        assert set(split) <= allowed, (split, allowed)
        assert not split or sum(split.values()) == 100, split
        return dict(split)

    # ModelService
    def upload_model(self, request):
        self._record("upload_model", request, self.t.UploadModelRequest)
        assert re.fullmatch(r"projects/[^/]+/locations/[^/]+", request.parent)
        model = request.model
        assert model.display_name and model.artifact_uri.startswith("gs://") and model.container_spec.image_uri
        spec = model.container_spec
        assert len(spec.ports) == 1 and spec.predict_route.startswith("/") and spec.health_route.startswith("/")
        name = f"{request.parent}/models/{len(self.models) + 1}"
        self.models[name] = model
        return _Operation(self.t.UploadModelResponse(model=name))

    def delete_model(self, request):
        self._record("delete_model", request, self.t.DeleteModelRequest)
        assert request.name in self.models
        assert request.name not in {d.model for d in self.deployed.values()}, "a deployed Model cannot be deleted"
        del self.models[request.name]
        return _Operation(None)

    # EndpointService
    def deploy_model(self, request):
        self._record("deploy_model", request, self.t.DeployModelRequest)
        assert request.endpoint == self.endpoint
        d = request.deployed_model
        assert d.model in self.models and re.fullmatch(r"[0-9]{1,10}", d.id) and d.id not in self.deployed
        r = d.dedicated_resources
        assert r.machine_spec.machine_type and 1 <= r.min_replica_count <= r.max_replica_count
        assert d.service_account.endswith(".iam.gserviceaccount.com")
        split = self._split(dict(request.traffic_split), set(self.deployed) | {"0"})
        self.deployed[d.id] = d
        self.traffic = {(d.id if k == "0" else k): v for k, v in split.items() if v}
        return _Operation(self.t.DeployModelResponse(deployed_model=d))

    def update_endpoint(self, request):
        self._record("update_endpoint", request, self.t.UpdateEndpointRequest)
        assert request.endpoint.name == self.endpoint and list(request.update_mask.paths) == ["traffic_split"]
        self.traffic = {k: v for k, v in self._split(dict(request.endpoint.traffic_split), set(self.deployed)).items()
                        if v}
        return self.t.Endpoint(name=self.endpoint, traffic_split=self.traffic)

    def undeploy_model(self, request):
        self._record("undeploy_model", request, self.t.UndeployModelRequest)
        assert request.endpoint == self.endpoint and request.deployed_model_id in self.deployed
        split = dict(request.traffic_split)  # an empty map is no map (proto3)
        last = len(self.deployed) == 1
        if split:
            self.traffic = {k: v for k, v in self._split(split, set(self.deployed)).items() if v}
        assert last or not self.traffic.get(request.deployed_model_id), \
            "a deployed model with traffic is undeployed only by a split that takes its traffic away"
        del self.deployed[request.deployed_model_id]
        self.traffic = {} if last else self.traffic
        return _Operation(self.t.UndeployModelResponse())


def _clients(fake: FakeVertex) -> vertex.Clients:
    return vertex.Clients(fake.models_client, fake.endpoints_client)


@pytest.fixture()
def provider(monkeypatch, plans):
    props = _deployments(plans[STACK])
    fake = FakeVertex(props["endpoint"])
    monkeypatch.setattr(vertex.DeploymentsProvider, "connect", staticmethod(lambda region: _clients(fake)))
    return vertex.DeploymentsProvider(), fake, props


def test_create_uploads_each_version_deploys_it_and_splits_the_traffic(provider):
    p, fake, props = provider
    created = p.create(props)
    main, candidate = props["deployments"]
    assert set(fake.deployed) == {main["id"], candidate["id"]}
    assert fake.traffic == {main["id"]: 80, candidate["id"]: 20}
    assert [m for m, _ in fake.calls] == ["upload_model", "deploy_model", "upload_model", "deploy_model",
                                          "update_endpoint"]
    upload = fake.calls[0][1]
    assert upload.parent == f"projects/{PROJECT}/locations/{REGION}"
    model = upload.model
    assert model.artifact_uri == f"{MAIN_URI}/" and model.container_spec.image_uri == main["image"]
    assert list(model.container_spec.command) == main["command"]
    assert {e.name: e.value for e in model.container_spec.env} == main["env"]
    assert [p.container_port for p in model.container_spec.ports] == [8080]
    deploy = fake.calls[1][1].deployed_model
    resources = deploy.dedicated_resources
    assert (deploy.id, resources.machine_spec.machine_type, resources.min_replica_count,
            resources.max_replica_count) == (main["id"], "n1-standard-4", 2, 6)
    assert [(s.metric_name, s.target) for s in resources.autoscaling_metric_specs] == [
        ("aiplatform.googleapis.com/prediction/online/cpu/utilization", 70)]
    assert json.loads(type(fake.calls[1][1]).to_json(fake.calls[1][1]))["trafficSplit"] == {"0": 100}
    assert created.id == props["endpoint"]
    assert created.outs["models"] == {d.id: d.model for d in fake.deployed.values()}


def test_a_new_candidate_is_deployed_beside_the_old_one_before_it_goes(provider):
    p, fake, props = provider
    old = p.create(props).outs
    new_candidate = {**props["deployments"][1], "artifact_uri": "gs://mlflow-artifacts/1/models/m-1111/artifacts/"}
    new_candidate["id"] = vertex.numeric_id({k: v for k, v in new_candidate.items() if k != "id"})
    news = {**props, "deployments": [props["deployments"][0], new_candidate],
            "traffic": {props["deployments"][0]["id"]: 80, new_candidate["id"]: 20}}
    diff = p.diff(props["endpoint"], old, news)
    assert diff.changes and not diff.replaces
    fake.calls.clear()
    updated = p.update(props["endpoint"], old, news)
    assert [m for m, _ in fake.calls] == ["upload_model", "deploy_model", "update_endpoint", "undeploy_model",
                                          "delete_model"]
    assert set(fake.deployed) == {props["deployments"][0]["id"], new_candidate["id"]}
    assert fake.traffic == news["traffic"]
    assert len(fake.models) == 2 and updated.outs["models"] == {d.id: d.model for d in fake.deployed.values()}
    # a new canary share alone moves traffic and deploys nothing
    fake.calls.clear()
    shares = {**news, "traffic": {props["deployments"][0]["id"]: 50, new_candidate["id"]: 50}}
    p.update(props["endpoint"], updated.outs, shares)
    assert [m for m, _ in fake.calls] == ["update_endpoint"] and fake.traffic == shares["traffic"]


def test_delete_undeploys_everything_and_deletes_the_models(provider):
    p, fake, props = provider
    outs = p.create(props).outs
    p.delete(props["endpoint"], outs)
    assert fake.deployed == {} and fake.models == {} and fake.traffic == {}


def test_moving_to_another_endpoint_or_region_replaces(provider):
    p, _, props = provider
    diff = p.diff(props["endpoint"], props, {**props, "endpoint": props["endpoint"] + "1", "region": "europe-west4"})
    assert sorted(diff.replaces) == ["endpoint", "region"] and diff.delete_before_replace


def test_the_stub_refuses_what_vertex_refuses(plans):
    """The stub above can fail: a split that does not add up, undeploying a model that has traffic."""
    props = _deployments(plans[STACK])
    fake = FakeVertex(props["endpoint"])
    t = fake.t
    name = fake.upload_model(vertex.upload_request(PROJECT, REGION, props["deployments"][0])).result().model
    with pytest.raises(AssertionError):
        fake.deploy_model(vertex.deploy_request(props["endpoint"], name, props["deployments"][0], {"0": 90}))
    for d in props["deployments"]:
        fake.deploy_model(vertex.deploy_request(props["endpoint"], name, d, {"0": 100}))
    with pytest.raises(AssertionError):
        fake.undeploy_model(t.UndeployModelRequest(endpoint=props["endpoint"],
                                                   deployed_model_id=props["deployments"][1]["id"]))
    with pytest.raises(AssertionError):
        fake.delete_model(t.DeleteModelRequest(name=name))
    with pytest.raises(ValueError):  # the library's types refuse unknown fields
        t.DeployedModel(replicas=2)


class _VertexApi(BaseHTTPRequestHandler):
    """Vertex's v1 REST API on this machine, in front of a FakeVertex: the requests the real
    clients send are parsed back into the library's types; long-running operations come back done."""

    fake: FakeVertex

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _operation(self, response_type: str, response: Any) -> None:
        body = json.loads(type(response).to_json(response)) if response is not None else {}
        self._answer({"name": "projects/p/locations/r/operations/1", "done": True,
                      "response": {"@type": f"type.googleapis.com/{response_type}", **body}})

    def _body(self) -> dict[str, Any]:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")

    def do_POST(self) -> None:
        t, path = self.fake.t, urlparse(self.path).path.removeprefix("/v1/")
        body = self._body()
        if path.endswith("/models:upload"):
            request = t.UploadModelRequest.from_json(json.dumps({**body, "parent": path.removesuffix("/models:upload")}))
            return self._operation("google.cloud.aiplatform.v1.UploadModelResponse",
                                   self.fake.upload_model(request).result())
        endpoint, _, verb = path.partition(":")
        kind = {"deployModel": t.DeployModelRequest, "undeployModel": t.UndeployModelRequest}[verb]
        call = self.fake.deploy_model if verb == "deployModel" else self.fake.undeploy_model
        response = call(kind.from_json(json.dumps({**body, "endpoint": endpoint}))).result()
        self._operation(f"google.cloud.aiplatform.v1.{verb[0].upper()}{verb[1:]}Response", response)

    def do_PATCH(self) -> None:
        from google.protobuf import field_mask_pb2

        t, url = self.fake.t, urlparse(self.path)
        mask = field_mask_pb2.FieldMask()
        mask.FromJsonString(parse_qs(url.query)["updateMask"][0])
        endpoint = t.Endpoint.from_json(json.dumps({**self._body(), "name": url.path.removeprefix("/v1/")}))
        self._answer(json.loads(t.Endpoint.to_json(self.fake.update_endpoint(
            t.UpdateEndpointRequest(endpoint=endpoint, update_mask=mask)))))

    def do_DELETE(self) -> None:
        request = self.fake.t.DeleteModelRequest(name=urlparse(self.path).path.removeprefix("/v1/"))
        self.fake.delete_model(request)
        self._operation("google.protobuf.Empty", None)


def test_the_real_clients_over_http_deploy_update_and_delete(monkeypatch, plans):
    """The same life cycle through aiplatform_v1's own REST transport and serialization; only the
    network ends on this machine."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform_v1

    props = _deployments(plans[STACK])
    fake = FakeVertex(props["endpoint"])
    handler = type("Api", (_VertexApi,), {"fake": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = {"api_endpoint": f"http://127.0.0.1:{server.server_address[1]}"}

    def connect(region: str) -> vertex.Clients:
        return vertex.Clients(
            aiplatform_v1.ModelServiceClient(credentials=AnonymousCredentials(), transport="rest",
                                             client_options=options),
            aiplatform_v1.EndpointServiceClient(credentials=AnonymousCredentials(), transport="rest",
                                                client_options=options))

    monkeypatch.setattr(vertex.DeploymentsProvider, "connect", staticmethod(connect))
    provider = vertex.DeploymentsProvider()
    try:
        outs = provider.create(props).outs
        main, candidate = props["deployments"]
        assert fake.traffic == {main["id"]: 80, candidate["id"]: 20}
        assert set(outs["models"].values()) == set(fake.models)
        moved = {**props, "traffic": {main["id"]: 50, candidate["id"]: 50}}
        outs = provider.update(props["endpoint"], outs, moved).outs
        assert fake.traffic == moved["traffic"]
        provider.delete(props["endpoint"], outs)
        assert fake.deployed == {} and fake.models == {}
        assert [m for m, _ in fake.calls] == [
            "upload_model", "deploy_model", "upload_model", "deploy_model", "update_endpoint", "update_endpoint",
            "update_endpoint", "undeploy_model", "delete_model", "undeploy_model", "delete_model"]
    finally:
        server.shutdown()


def test_connect_builds_the_regional_clients_of_the_pinned_library():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform_v1

    import google.auth

    original = google.auth.default
    google.auth.default = lambda *a, **k: (AnonymousCredentials(), PROJECT)
    try:
        clients = vertex.connect(REGION)
    finally:
        google.auth.default = original
    assert isinstance(clients.models, aiplatform_v1.ModelServiceClient)
    assert isinstance(clients.endpoints, aiplatform_v1.EndpointServiceClient)
    assert clients.models.api_endpoint == f"{REGION}-aiplatform.googleapis.com"


# ------------------------------------------------------------------------- container contract

class _FakeGoogle(BaseHTTPRequestHandler):
    """The metadata server's token and the GCS JSON API's list and media downloads of one bucket."""

    files: dict[str, bytes] = {}
    bucket = "caip-tenant-copy"
    token = "ya29.test-token"
    seen: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self.seen.append(url.path)
        if url.path == "/computeMetadata/v1/instance/service-accounts/default/token":
            if self.headers.get("Metadata-Flavor") != "Google":
                return self._send(403, b"{}")
            return self._send(200, json.dumps({"access_token": self.token, "expires_in": 3599,
                                               "token_type": "Bearer"}).encode())
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send(401, b"{}")
        listing = f"/storage/v1/b/{self.bucket}/o"
        if url.path == listing:
            prefix = parse_qs(url.query)["prefix"][0]
            return self._send(200, json.dumps({"items": [{"name": n} for n in self.files if n.startswith(prefix)]})
                              .encode())
        if url.path.startswith(listing + "/") and parse_qs(url.query).get("alt") == ["media"]:
            name = unquote(url.path[len(listing) + 1:])
            if name in self.files:
                return self._send(200, self.files[name], "application/octet-stream")
        self._send(404, b"{}")


@pytest.fixture(scope="module")
def model_prefix():
    with mlflow_model_folder("vertex-model-") as folder:
        yield folder


def test_vertex_serve_fetches_aip_storage_uri_and_answers_vertex_s_routes(plans, model_prefix):
    """The image's entrypoint with the uploaded Model's environment and routes (the plan's), what
    Vertex adds (AIP_*), Google's endpoints on this machine; Vertex's body shapes."""
    tool_script("mlserver", "mlserver", "MLServer, the runtime Vertex's container runs")
    path, X, model = model_prefix
    main = _deployments(plans[STACK])["deployments"][0]
    folder = "model-0123/artifacts"
    _FakeGoogle.files = {f"{folder}/{f.relative_to(path)}": f.read_bytes() for f in path.rglob("*") if f.is_file()}
    _FakeGoogle.files["model-0123/other/MLmodel"] = b"not this model"
    google = ThreadingHTTPServer(("127.0.0.1", 0), _FakeGoogle)
    threading.Thread(target=google.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{google.server_address[1]}"
    port = free_port()
    try:
        with tempfile.TemporaryDirectory(prefix="vertex-serve-") as workdir:
            target = Path(workdir) / "model"  # the plan's /tmp/model, inside this test's folder
            env = {**main["env"], "MLSERVER_MODEL_URI": str(target), "MLSERVER_HOST": "127.0.0.1",
                   "MLSERVER_GRPC_PORT": str(free_port()), "MLSERVER_METRICS_PORT": str(free_port()),
                   "AIP_STORAGE_URI": f"gs://{_FakeGoogle.bucket}/{folder}", "AIP_HTTP_PORT": str(port),
                   "AIP_HEALTH_ROUTE": main["health_route"], "AIP_PREDICT_ROUTE": main["predict_route"],
                   "GCE_METADATA_HOST": host, "STORAGE_EMULATOR_HOST": f"http://{host}",
                   "PYTHONPATH": str(MLSERVER_IMAGE), "PATH": f"{TOOLS / 'mlserver' / 'bin'}:/usr/bin:/bin"}
            command = [str(TOOLS / "mlserver" / "bin" / "python"), str(MLSERVER_IMAGE / Path(main["command"][1]).name)]
            with _server(command, env, main["health_route"], port, Path(workdir), 180) as url:
                assert sorted(str(f.relative_to(target)) for f in target.rglob("*") if f.is_file()) == sorted(
                    str(f.relative_to(path)) for f in path.rglob("*") if f.is_file())
                rows = X.head(4)
                ok = requests.post(url + main["predict_route"], json={"instances": rows.to_dict(orient="records")},
                                   timeout=30)
                assert ok.status_code == 200, ok.text
                assert ok.json() == {"predictions": model.predict(rows).tolist()}
                bad = requests.post(url + main["predict_route"], json={"instances": [{"a": 1.0}]}, timeout=30)
                assert 400 <= bad.status_code < 500, (bad.status_code, bad.text)
    finally:
        google.shutdown()


# ------------------------------------------------------------------------------------------- cost

PRICES = yaml.safe_load((ROOT / "pricing" / "gcp-vertex-europe-west1.yaml").read_text())
GKE_PRICES = yaml.safe_load((ROOT / "pricing" / "gcp-europe-west1.yaml").read_text())


def test_every_vertex_price_has_a_source_a_date_and_a_reason_when_unverified():
    assert PRICES["region"] == "europe-west1" and PRICES["provider"] == "gcp-vertex" and PRICES["instances"]
    for key, entry in PRICES["instances"].items():
        assert re.fullmatch(r"[a-z][a-z0-9]*-(standard|highmem|highcpu)-[0-9]+", key) and entry["unit"] == "node-hour"
        assert entry["source"].startswith("https://cloud.google.com/vertex-ai/"), key
        assert len(entry["taken"]) == 10 and entry["taken"][4] == "-", key
        assert entry["verified"] or entry.get("reason"), f"{key}: unverified without a reason"


def test_cost_model_counts_the_nodes_the_plan_deploys(plans):
    from mlops.cost.managed import sagemaker_variants

    config = parse_stack_config(_raw(), stack=STACK)
    props = _deployments(plans[STACK])
    assert sagemaker_variants(config.serving.models["neo"]) == {d["key"]: d["min_replicas"]
                                                                for d in props["deployments"]}


def test_mlops_cost_prices_vertex_endpoints_and_compares_them_with_in_cluster_serving():
    from mlops.cost.report import build_report, render_text, to_json

    built = build_report(STACK, stacks_dir=STACKS)
    report = to_json(built)
    gke = next(e for e in report["estimates"] if e["target"] == "gke")
    hours, n1 = 730, PRICES["instances"]["n1-standard-4"]["price"]
    lines = [line for line in gke["lines"] if line["resource"] == "Vertex AI endpoint neo"]
    assert len(lines) == 1 and lines[0]["unit"] == "node-hour"
    assert lines[0]["quantity"] == 3 * hours  # main 2 + canary 1, as planned
    assert lines[0]["monthly"] == pytest.approx(3 * hours * n1)
    assert gke["total"] == pytest.approx(sum(line["monthly"] for line in gke["lines"]), abs=0.01)
    assert not [line for e in report["estimates"] if e["target"] != "gke" for line in e["lines"]
                if "endpoint neo" in line["resource"]]  # priced on the cloud it runs in only
    [neo] = report["serving"]
    assert neo["variants"] == {"main": 2, "candidate": 1} and neo["instance_type"] == "n1-standard-4"
    assert neo["managedMonthly"] == pytest.approx(3 * hours * n1, abs=0.01)
    # in the cluster: 3 pods of 100m/512Mi + Seldon's executor (100m/128Mi) on n2-standard-4 workers at 60 %
    p = GKE_PRICES["prices"]
    node_hour = 4 * p["compute.n2.vcpu"]["price"] + 16 * p["compute.n2.memory"]["price"]
    share = max(0.2 / 4, 0.625 / 16) / 0.6
    assert neo["inClusterMonthly"] == pytest.approx(round(3 * share * node_hour * hours, 2))
    assert report["prices"]["vertex"] == {"file": "pricing/gcp-vertex-europe-west1.yaml", "region": "europe-west1",
                                          "taken": PRICES["taken"], "unverified": len(PRICES["instances"])}
    assert "in-cluster (gke workload nodes) vs Vertex AI endpoints" in render_text(built)


def test_an_unpriced_machine_type_names_the_pricing_file():
    from mlops.cost.prices import PricingError
    from mlops.cost.report import build_report

    config = parse_stack_config(_raw(serving__vertex={"machineType": "c2-standard-60"}), stack=STACK)
    with pytest.raises(PricingError, match=r"c2-standard-60.*gcp-vertex-europe-west1\.yaml"):
        build_report(STACK, config=config)


@pytest.mark.parametrize(("machine_type", "workers"), [("n1-standard-2", 2), ("n2-highcpu-16", 16), ("e2-medium", 1)])
def test_mlserver_gets_an_inference_worker_per_vcpu_of_the_node(machine_type, workers):
    """Vertex scales on the node's CPU: one process could not reach the target (benchmarks/serving_workers.py)."""
    assert vertex.container_environment("neo", "m.R", machine_type)["MLSERVER_PARALLEL_WORKERS"] == str(workers)
