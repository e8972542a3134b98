"""KServe as `serving.engine: kserve`: its plans, its checks, and the real MLServer it runs.

Plan: the dev and full stacks on KServe pass `mlops validate` (core + CRD schemas of KServe
v0.20.0, the webhook rules `validate_inference_service` mirrors, policy, integrity); nothing
above the serving layer differs from the Seldon plan; the InferenceServices round-trip through
the `kserve` package's typed models unchanged. Processes: MLServer with exactly the env the
InferenceService's container gets (ServingRuntime env + model env, secrets resolved) serves NEO by
alias at KServe's V2 path `/v2/models/<name>/infer`, and a pinned artifact copy as the storage
initializer leaves it; bad payloads get a 4xx with the reason.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.artifacts
import pytest
import requests
import yaml

from infra.platforms import cluster_facts
from infra.settings import ConfigError, parse_stack_config, raw_from_pulumi_config
from mlops.footprint import pods_of
from mlops.plan import Plan, run_program, stack_config
from mlops.validate import validate_plan
from modules.serving.kserve import ALIAS_RUNTIME, MODEL_MOUNT, validate_inference_service
from tests.runtimes import EnvServer, mlserver_from_env
from tests.test_serve_by_alias import (  # noqa: F401  (module fixtures: the real MLflow registry)
    READER,
    monkeypatch_module,
    neo_result,
    registry,
    resolved_env,
)
from tests.tools import require_tool
from workloads.neo import payload
from workloads.neo.train import MODEL_NAME

STACKS = Path(__file__).resolve().parent / "stacks"
KSERVE_VENV = Path(__file__).resolve().parents[1] / ".venv" / "tools" / "kserve" / "bin"
ALIAS_MODELS = {"neo": {"source": {"model": MODEL_NAME, "alias": "champion"}, "candidate": {"alias": "challenger"}}}


def dev_plan(engine: str) -> Plan:
    values, secrets = stack_config("dev")
    values["mlops-stack:serving"] = json.dumps({"engine": engine, "registry": {"pollSeconds": 5},
                                                "models": ALIAS_MODELS})
    return run_program("dev", (values, secrets))


@pytest.fixture(scope="module")
def dev_kserve() -> Plan:
    return dev_plan("kserve")


@pytest.fixture(scope="module")
def full_plans() -> dict[str, Plan]:
    return {stack: run_program(stack, stack_config(stack, STACKS)) for stack in ("full", "full-kserve")}


def test_the_kserve_twin_of_the_full_stack_differs_only_in_its_engine():
    """The comparison below is only meaningful while the two files carry the same options."""
    full, twin = (yaml.safe_load((STACKS / f"Pulumi.{s}.yaml").read_text())["config"] for s in ("full", "full-kserve"))
    assert twin["mlops-stack:serving"].pop("engine") == "kserve"
    assert twin == full


def _isvc(plan: Plan, name: str) -> dict[str, Any]:
    return plan.manifest("InferenceService", name, "serving")


# ------------------------------------------------------------------------------------------- plan

def test_dev_and_full_stacks_on_kserve_pass_validate(dev_kserve, full_plans):
    for stack, plan, d in (("dev", dev_kserve, None), ("full-kserve", full_plans["full-kserve"], STACKS)):
        facts = cluster_facts(parse_stack_config(*raw_from_pulumi_config(*stack_config(stack, d))))
        report = validate_plan(plan, "1.34", facts)
        assert report.ok, report.render()
        assert report.custom["InferenceService"] >= 2, report.render()
        assert report.custom["ServingRuntime"] == 1


def test_kserve_runs_in_standard_mode_without_its_own_ingress(full_plans):
    plan = full_plans["full-kserve"]
    [release] = [r for r in plan.of_type("kubernetes:helm.sh/v3:Release") if r["inputs"]["name"] == "kserve"]
    controller = release["inputs"]["values"]["kserve"]["controller"]
    assert controller["deploymentMode"] == "Standard"
    assert controller["gateway"]["disableIngressCreation"] is True
    assert not plan.of_type("kubernetes:networking.k8s.io/v1:Ingress")
    assert not [o for o in plan.kubernetes_objects if o["kind"] == "SeldonDeployment"]
    # TLS is on in the full stack: KServe's webhook certificate reuses the gateway's cert-manager
    assert [r["inputs"]["name"] for r in plan.of_type("kubernetes:helm.sh/v3:Release")].count("cert-manager") == 1


def test_dev_stack_installs_cert_manager_for_the_kserve_webhook(dev_kserve):
    names = [r["inputs"]["name"] for r in dev_kserve.of_type("kubernetes:helm.sh/v3:Release")]
    assert names.count("cert-manager") == 1  # TLS is off in dev: the gateway installs none


def test_alias_model_is_an_mlflow_model_on_the_project_runtime_without_storage(dev_kserve):
    neo, candidate = _isvc(dev_kserve, "neo"), _isvc(dev_kserve, "neo-candidate")
    for isvc, alias in ((neo, "champion"), (candidate, "challenger")):
        model = isvc["spec"]["predictor"]["model"]
        assert model["modelFormat"] == {"name": "mlflow"} and model["runtime"] == "mlops-mlserver"
        assert "storageUri" not in model and "secretName" not in str(isvc["metadata"]["annotations"])
        env = {e["name"]: e for e in model["env"]}
        assert env["MLSERVER_MODEL_IMPLEMENTATION"]["value"] == ALIAS_RUNTIME
        assert env["MLSERVER_MODEL_NAME"]["value"] == "neo"  # both answer at /v2/models/neo/infer
        assert json.loads(env["MLSERVER_MODEL_EXTRA"]["value"])["alias"] == alias
        assert validate_inference_service(isvc) == []
    runtime = dev_kserve.manifest("ServingRuntime", "mlops-mlserver", "serving")
    assert "serving.kserve.io/server-type" not in (runtime["metadata"].get("annotations") or {})


def test_candidates_are_mirrored_or_split_by_the_route(full_plans):
    plan = full_plans["full-kserve"]
    shadow = plan.manifest("VirtualService", "kserve-neo", "serving")["spec"]["http"][0]
    assert shadow["mirror"]["host"] == "neo-candidate-predictor.serving.svc.cluster.local"
    assert shadow["mirrorPercentage"] == {"value": 100.0} and len(shadow["route"]) == 1
    assert shadow["match"][0]["port"] == 443  # TLS on: port 80 belongs to the HTTPS redirect
    canary = plan.manifest("VirtualService", "kserve-mnist", "serving")["spec"]["http"][0]
    assert [r["weight"] for r in canary["route"]] == [80, 20] and "mirror" not in canary
    assert plan.outputs["modelUrls"]["neo"].endswith("/kserve/serving/neo/v2/models/neo/infer")


def test_autoscaling_is_the_predictor_hpa_on_cpu(full_plans):
    predictor = _isvc(full_plans["full-kserve"], "neo")["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["scaleMetric"],
            predictor["scaleTarget"]) == (1, 4, "cpu", 60)
    assert _isvc(full_plans["full-kserve"], "neo")["metadata"]["annotations"][
        "serving.kserve.io/autoscalerClass"] == "hpa"


def test_pinned_model_uses_the_storage_initializer_with_the_bucket_secret(full_plans):
    plan = full_plans["full-kserve"]
    isvc = _isvc(plan, "neo-pinned")
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith("s3://")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/secretName"] == "model-storage"
    pods = {p.component: p for p in pods_of(plan)}
    assert [c.name for c in pods["serving/InferenceService/neo-pinned: predictor"].init_containers] == [
        "storage-initializer"]
    assert not pods["serving/InferenceService/neo: predictor"].init_containers


def _above_serving(plan: Plan) -> dict[str, Any]:
    """Every resource outside the engine's component, keyed by URN, as JSON; the engine's own
    namespace is the engine's too. The KServe stack's name is read as the Seldon one's, and so is
    the gateway path of its platform models (`/kserve/serving/*`), which the endpoint policy names. The
    mnist drawing page calls its model's engine route (test_the_drawing_page_calls_the_engines_route)."""
    kept = {}
    for r in plan.resources:
        if ("mlops:serving:" in r["urn"] or "mlops:workloads:MnistDemo" in r["urn"]
                or r["urn"].endswith(("namespaces-seldon", "namespaces-kserve"))):
            continue
        body = json.dumps({k: r.get(k) for k in ("type", "inputs", "manifest")}, sort_keys=True, default=str)
        if r["name"] == "gateway-auth-endpoints":
            body = body.replace('"/kserve/serving/*"', '"/seldon/serving/*"')
        kept[r["urn"].replace(":full-kserve::", ":full::")] = body.replace("full-kserve", "full")
    return kept


def test_engine_choice_changes_nothing_above_the_serving_contract(full_plans):
    seldon, kserve = _above_serving(full_plans["full"]), _above_serving(full_plans["full-kserve"])
    assert sorted(seldon) == sorted(kserve)
    assert [urn for urn in seldon if seldon[urn] != kserve[urn]] == []
    assert len(seldon) > 60  # MLflow, database, gateway, monitoring, workloads, CI runners ...


def test_the_drawing_page_calls_the_engines_route(full_plans):
    """The page posts to the mnist model's own URL path on either engine (it once said /seldon/ on KServe)."""
    for stack in ("full", "full-kserve"):
        plan = full_plans[stack]
        page = plan.manifest("ConfigMap", "mnist-demo", "serving")["data"]["index.html"]
        path = "/" + plan.outputs["modelUrls"]["mnist"].split("://", 1)[1].split("/", 1)[1]
        assert path.endswith("/serving/mnist/api/v1.0/predictions") and f'content="{path}"' in page, stack


def _bad(plan: Plan, mutate) -> dict[str, Any]:
    obj = copy.deepcopy(_isvc(plan, "neo"))
    mutate(obj)
    return obj


def _env_drop(name: str):
    def mutate(obj):
        model = obj["spec"]["predictor"]["model"]
        model["env"] = [e for e in model["env"] if e["name"] != name]
    return mutate


@pytest.mark.parametrize("mutate, expected", [
    (_env_drop("MLFLOW_TRACKING_URI"), "needs env ['MLFLOW_TRACKING_URI']"),
    (lambda o: o["spec"]["predictor"]["model"]["env"].append(
        {"name": "MLSERVER_LOAD_MODELS_AT_STARTUP", "value": "false"}), "the model never loads"),
    (lambda o: o["spec"]["predictor"]["model"].__setitem__("storageUri", "s3://b/m"), "storage initializer"),
    (lambda o: o["spec"]["predictor"].__setitem__("containers", [{"name": "x", "image": "a:1"}]), "exactly one of"),
    (lambda o: o["metadata"]["annotations"].__setitem__("serving.kserve.io/autoscalerClass", "kpa"), "allowed hpa"),
    (lambda o: o["spec"]["predictor"].update(minReplicas=5, maxReplicas=2), "minReplicas 5 > maxReplicas 2"),
    (lambda o: o["spec"]["predictor"].__setitem__("scaleTarget", 150), "1-100"),
    (lambda o: o["metadata"].__setitem__("name", "Neo_1"), "metadata.name"),
    (lambda o: o["spec"]["predictor"]["model"].pop("resources"), "no cpu/memory requests"),
])
def test_inference_service_checks_reject_bad_fixtures(dev_kserve, mutate, expected):
    problems = validate_inference_service(_bad(dev_kserve, mutate))
    assert any(expected in p for p in problems), problems


def test_a_misplaced_field_is_pruned_by_the_crd_schema(dev_kserve):
    from mlops.crds import validate_custom_resource
    obj = _bad(dev_kserve, lambda o: o["spec"]["predictor"].__setitem__("scaleMetrics", "cpu"))
    assert any("spec.predictor.scaleMetrics: field not in the CRD schema" in p
               for p in validate_custom_resource(obj))


def test_scale_to_zero_needs_knative_mode():
    with pytest.raises(ConfigError) as error:
        parse_stack_config({"platform": "minikube", "environment": "dev",
                            "serving": {"engine": "kserve", "kserve": {"scaleToZero": True}}})
    assert "serving.kserve.scaleToZero needs deploymentMode: Knative" in str(error.value)


TYPED_ROUND_TRIP = """
import json, sys
import kserve.models
import kubernetes.client.models
from kserve import ApiClient, V1beta1InferenceService
# kserve's models name core types (V1ObjectMeta, V1Container) that live in the kubernetes client
for name in dir(kubernetes.client.models):
    if name.startswith("V1") and not hasattr(kserve.models, name):
        setattr(kserve.models, name, getattr(kubernetes.client.models, name))
client = ApiClient()
class Response:  # ApiClient.deserialize reads `.data`
    def __init__(self, obj): self.data = json.dumps(obj)
out = []
for obj in json.load(sys.stdin):
    typed = client.deserialize(Response(obj), V1beta1InferenceService)
    out.append(client.sanitize_for_serialization(typed))
json.dump(out, sys.stdout)
"""


def _typed_round_trip(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    python = require_tool("python", "the kserve 0.20.0 package's typed models", path=str(KSERVE_VENV))
    done = subprocess.run([python, "-c", TYPED_ROUND_TRIP], input=json.dumps(objects), capture_output=True,
                          text=True, timeout=300, check=True)
    return json.loads(done.stdout)


def test_inference_services_round_trip_through_the_kserve_typed_models(full_plans):
    """The typed models drop what they do not define (openapi-generator deserialization), so an
    object that comes back unchanged has only fields of V1beta1InferenceService and its parts."""
    objects = [o for o in full_plans["full-kserve"].kubernetes_objects if o["kind"] == "InferenceService"]
    bad = copy.deepcopy(_isvc(full_plans["full-kserve"], "neo"))
    bad["spec"]["predictor"]["model"]["storageURI"] = "s3://misspelt"
    typed = _typed_round_trip([*objects, bad])
    assert typed[:-1] == objects
    assert "storageURI" not in typed[-1]["spec"]["predictor"]["model"]  # the bad fixture loses its field


# -------------------------------------------------------------------------------- real processes

def pod_env(plan: Plan, isvc: str, tracking_uri: str) -> dict[str, str]:
    """The kserve-container's env as the pod gets it: the ServingRuntime container's env, the
    model's env merged over it by name (KServe's MergeRuntimeContainers), secrets resolved."""
    [runtime] = plan.manifest("ServingRuntime", "mlops-mlserver", "serving")["spec"]["containers"]
    model = _isvc(plan, isvc)["spec"]["predictor"]["model"]
    secrets = {"mlflow-model-reader": {"username": READER[0], "password": READER[1]}}
    merged = {e["name"]: e for e in runtime["env"]} | {e["name"]: e for e in model["env"]}
    return resolved_env({"env": list(merged.values())}, tracking_uri, secrets)


@pytest.fixture(scope="module")
def kserve_served(dev_kserve, registry) -> Iterator[EnvServer]:
    registry.admin.set_registered_model_alias(MODEL_NAME, "champion", registry.versions[0])
    model = _isvc(dev_kserve, "neo")["spec"]["predictor"]["model"]
    with mlserver_from_env(pod_env(dev_kserve, "neo", registry.url), model["readinessProbe"]["httpGet"]["path"]) as server:
        yield server


def test_kserve_alias_model_serves_neo_at_the_isvc_name(kserve_served, registry, neo_result):
    rows = neo_result.X_test.head(3)
    response = requests.post(f"{kserve_served.url}/v2/models/neo/infer", json=payload.v2(rows), timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "neo" and body["model_version"] == registry.versions[0]
    predicted = [int(v) for v in body["outputs"][0]["data"]]
    assert predicted == [int(v) for v in neo_result.model.predict(rows)]
    metrics = requests.get(kserve_served.metrics_url, timeout=10)
    assert kserve_served.metrics_url.endswith("/prometheus")
    assert f'mlops_model_version_info{{alias="champion",model="{MODEL_NAME}",version="{registry.versions[0]}"}} 1.0' \
        in metrics.text


def _first_column(rows) -> str:
    return payload.v2(rows)["inputs"][0]["name"]


@pytest.mark.parametrize("body, reason", [
    # a string where the signature wants a number: the decoder names the value
    (lambda rows: {"inputs": [{**payload.v2(rows)["inputs"][0], "datatype": "BYTES", "data": ["far"] * 3},
                              *payload.v2(rows)["inputs"][1:]], "parameters": {"content_type": "pd"}}, lambda rows: "far"),
    # a column of the signature left out: schema enforcement names it
    (lambda rows: {"inputs": payload.v2(rows)["inputs"][1:], "parameters": {"content_type": "pd"}}, _first_column),
    (lambda rows: {"not": "v2"}, lambda rows: "inputs"),
])
def test_kserve_alias_model_answers_bad_payloads_4xx_with_the_reason(kserve_served, neo_result, body, reason):
    rows = neo_result.X_test.head(3)
    response = requests.post(f"{kserve_served.url}/v2/models/neo/infer", json=body(rows), timeout=30)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert reason(rows) in response.text, response.text


def test_kserve_pinned_model_serves_what_the_storage_initializer_downloads(dev_kserve, registry, neo_result, tmp_path):
    """A `uri` model: the storage initializer leaves the artifacts in /mnt/models (here a temp
    dir), and MLServer loads them with the project's MLflow runtime under the model's name."""
    values, secrets = stack_config("dev")
    values["mlops-stack:serving"] = json.dumps({"engine": "kserve", "models": {
        "neo": {"source": {"uri": "s3://mlflow-artifacts/1/models/m-0/artifacts"}}}})
    plan = run_program("dev", (values, secrets))
    source = registry.admin.get_model_version_download_uri(MODEL_NAME, registry.versions[0])
    local = mlflow.artifacts.download_artifacts(source, dst_path=str(tmp_path))
    env = pod_env(plan, "neo", registry.url)
    assert env["MLSERVER_MODEL_URI"] == MODEL_MOUNT
    env |= {"MLSERVER_MODEL_URI": local}
    env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_TRACKING")}  # no registry access needed
    with mlserver_from_env(env, "/v2/models/neo/ready") as server:
        rows = neo_result.X_test.head(2)
        ok = requests.post(f"{server.url}/v2/models/neo/infer", json=payload.v2(rows), timeout=30)
        assert ok.status_code == 200, ok.text
        bad = requests.post(f"{server.url}/v2/models/neo/infer", json={"inputs": []}, timeout=30)
        assert 400 <= bad.status_code < 500, bad.text
