"""Serving and observability in every plan: Istio gateway, Seldon Core (pinned, Apache-2.0 release),
kube-prometheus-stack, the platform's rules and dashboards, and models as valid SeldonDeployments."""

from __future__ import annotations

import copy
import json
import re

import pytest

from mlops.paths import stack_names
from mlops.plan import SECRET, run_program, stack_config
from modules.monitoring import dashboard_files, rule_files
from modules.serving.seldon import validate_seldon_deployment

RELEASE = "kubernetes:helm.sh/v3:Release"
NEO_URI = "s3://mlflow-artifacts/1/0123abcd/artifacts/model"


def releases(plan) -> dict[str, dict]:
    return {r["inputs"]["chart"]: r["inputs"] for r in plan.of_type(RELEASE)}


def plan_with_models():
    values, secrets = stack_config("dev")
    values["mlops-stack:serving"] = json.dumps({"models": {
        "neo": {"source": {"uri": NEO_URI}, "candidate": {"uri": NEO_URI.replace("0123abcd", "4567ef01")},
                "candidateMode": "shadow"},
        "mnist": {"source": {"image": {"repository": "registry.local/mnist-server", "tag": "3f2c1a9"}},
                  "autoscaling": {"minReplicas": 1, "maxReplicas": 3}},
    }})
    return run_program("dev", (values, secrets))


@pytest.fixture(scope="module")
def with_models():
    return plan_with_models()


@pytest.mark.parametrize("stack", stack_names())
def test_every_stack_has_gateway_operator_and_monitoring(stack, plan_of):
    charts = releases(plan_of(stack))
    assert {"base", "istiod", "gateway", "seldon-core-operator", "kube-prometheus-stack"} <= set(charts)
    for chart, release in charts.items():
        assert release["version"] and release["repositoryOpts"]["repo"].startswith("https://"), chart
    seldon = charts["seldon-core-operator"]
    assert seldon["version"] == "1.17.1"  # the last Apache-2.0 release
    assert seldon["values"]["istio"] == {"enabled": True, "gateway": "istio-system/platform-gateway"}
    assert seldon["values"]["usageMetrics"]["enabled"] is False
    mlserver = seldon["values"]["predictor_servers"]["MLFLOW_SERVER"]["protocols"]["v2"]
    # the project's MLServer image: loaded into minikube as 1.7.1-1, elsewhere built and run by digest
    assert mlserver["image"].endswith("/mlserver")
    assert re.fullmatch(r"1\.7\.1-1(-[0-9a-f]{12}@sha256:[0-9a-f]{64})?", mlserver["defaultImageVersion"])


@pytest.mark.parametrize("stack", stack_names())
def test_monitoring_components_all_have_requests(stack, plan_of):
    values = releases(plan_of(stack))["kube-prometheus-stack"]["values"]
    for component in (values["prometheus"]["prometheusSpec"], values["alertmanager"]["alertmanagerSpec"],
                      values["grafana"], values["grafana"]["sidecar"], values["prometheusOperator"],
                      values["kube-state-metrics"], values["prometheus-node-exporter"]):
        assert component["resources"]["requests"]["cpu"] and component["resources"]["requests"]["memory"]
    assert values["grafana"]["admin"]["existingSecret"] == "grafana-admin"
    assert "adminPassword" not in values["grafana"]


def test_retention_and_storage_follow_the_environment(plan_of):
    dev = releases(plan_of("dev"))["kube-prometheus-stack"]["values"]["prometheus"]["prometheusSpec"]
    prod = releases(plan_of("onprem"))["kube-prometheus-stack"]["values"]["prometheus"]["prometheusSpec"]
    assert dev["retention"] == "2d" and "storageSpec" not in dev
    assert prod["retention"] == "15d"
    assert prod["storageSpec"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"] == "50Gi"


@pytest.mark.parametrize("stack", stack_names())
def test_rules_dashboards_and_monitors_are_declared(stack, plan_of):
    plan = plan_of(stack)
    kinds = [o["kind"] for o in plan.kubernetes_objects]
    assert kinds.count("PrometheusRule") == len(rule_files())
    dashboards = [o for o in plan.kubernetes_objects
                  if o["kind"] == "ConfigMap" and o["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(dashboards) == len(dashboard_files())
    monitors = {o["metadata"]["name"] for o in plan.kubernetes_objects if o["kind"] == "ServiceMonitor"}
    # managed Cloud SQL/RDS and GCS/S3 report to the cloud's monitoring, not to a ServiceMonitor
    in_cluster = plan.outputs["platform"] in ("minikube", "existing")
    assert monitors == ({"mlflow", "seaweedfs", "postgres"} if in_cluster else {"mlflow"})
    pod_monitor = plan.manifest("PodMonitor", "seldon-models")["spec"]
    assert pod_monitor["podMetricsEndpoints"][0]["path"] == "/prometheus"
    assert pod_monitor["podTargetLabels"] == ["seldon-deployment-id"]  # ModelEndpointDown groups by it
    mlflow_monitor = plan.manifest("ServiceMonitor", "mlflow")["spec"]["endpoints"][0]
    assert mlflow_monitor["basicAuth"]["password"] == {"name": "mlflow-scrape-auth", "key": "password"}


def test_runbook_links_are_relative_unless_a_base_url_is_set(plan_of):
    def links(plan) -> list[str]:
        return [r["annotations"]["runbook_url"] for o in plan.kubernetes_objects if o["kind"] == "PrometheusRule"
                for g in o["spec"]["groups"] for r in g["rules"] if "alert" in r]

    assert links(plan_of("dev")) and all(url.startswith("docs/runbooks.md#") for url in links(plan_of("dev")))
    values, secret_keys = stack_config("dev")
    monitoring = {**json.loads(values.get("mlops-stack:monitoring", "{}")),
                  "runbookBaseUrl": "https://github.com/my-org/mlops-stack/blob/main/"}
    plan = run_program("dev", ({**values, "mlops-stack:monitoring": json.dumps(monitoring)}, secret_keys))
    assert links(plan) and all(url.startswith("https://github.com/my-org/mlops-stack/blob/main/docs/runbooks.md#")
                               for url in links(plan))


def test_scraped_ports_exist_on_the_services(plan_of):
    plan = plan_of("dev")
    for monitor in (o for o in plan.kubernetes_objects if o["kind"] == "ServiceMonitor"):
        service = plan.manifest("Service", monitor["metadata"]["name"], monitor["metadata"]["namespace"])
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert monitor["spec"]["endpoints"][0]["port"] in ports, monitor["metadata"]["name"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_tls_outside_dev_only(plan_of):
    dev, prod = plan_of("dev"), plan_of("onprem")
    assert "cert-manager" not in releases(dev)
    assert [s["port"]["number"] for s in dev.manifest("Gateway", "platform-gateway")["spec"]["servers"]] == [80]
    assert releases(prod)["cert-manager"]["version"] == "v1.20.2"
    servers = prod.manifest("Gateway", "platform-gateway")["spec"]["servers"]
    assert "tls" not in servers[0]  # HTTP is redirected by a route, so ACME HTTP-01 still works (test_gateway.py)
    assert servers[1]["tls"]["credentialName"] == prod.manifest("Certificate", "platform-gateway")["spec"]["secretName"]


def test_mlflow_and_grafana_routes_share_the_gateway(plan_of):
    plan = plan_of("dev")
    for name, host in (("mlflow", "mlflow.localtest.me"), ("grafana", "grafana.localtest.me")):
        spec = plan.manifest("VirtualService", name)["spec"]
        assert spec["hosts"] == [host] and spec["gateways"] == ["istio-system/platform-gateway"]
    # MLflow's DNS-rebinding guard must accept the gateway's host name
    server = plan.manifest("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    allowed = next(e["value"] for e in server["env"] if e["name"] == "MLFLOW_SERVER_ALLOWED_HOSTS").split(",")
    assert "mlflow.localtest.me" in allowed


def test_models_become_valid_seldon_deployments(with_models):
    neo = with_models.manifest("SeldonDeployment", "neo", "serving")
    mnist = with_models.manifest("SeldonDeployment", "mnist", "serving")
    assert validate_seldon_deployment(neo) == []
    assert validate_seldon_deployment(mnist) == []
    main, shadow = neo["spec"]["predictors"]
    assert neo["spec"]["protocol"] == "v2"
    assert main["graph"]["implementation"] == "MLFLOW_SERVER" and main["graph"]["modelUri"] == NEO_URI
    assert main["graph"]["envSecretRefName"] == "model-storage"
    assert shadow["shadow"] is True and "4567ef01" in shadow["graph"]["modelUri"]
    for predictor in (main, shadow):  # the project's MLServer runtime: 400, not 500, for bad inputs;
        [server] = predictor["componentSpecs"][0]["spec"]["containers"]  # no inference worker process
        assert server["env"] == [{"name": "MLSERVER_MODEL_IMPLEMENTATION", "value": "mlops_mlserver.MLflowRuntime"},
                                 {"name": "MLSERVER_PARALLEL_WORKERS", "value": "0"}]
    container = mnist["spec"]["predictors"][0]["componentSpecs"][0]
    assert container["spec"]["containers"][0]["image"] == "registry.local/mnist-server:3f2c1a9"
    # Seldon 1.17.1: the autoscaling/v2 shape lives in `metricsv2`; in `metrics` (v2beta1) the CRD
    # prunes `target` and the operator builds an HPA the API server rejects
    assert container["hpaSpec"] == {"minReplicas": 1, "maxReplicas": 3, "metricsv2": [{
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}
    assert container["spec"]["serviceAccountName"] == "model-server"


def test_model_urls_are_stack_outputs(with_models):
    urls = with_models.outputs["modelUrls"]
    assert urls["neo"] == "http://models.localtest.me:8080/seldon/serving/neo/v2/models/model/infer"
    assert urls["mnist"] == "http://models.localtest.me:8080/seldon/serving/mnist/api/v1.0/predictions"
    assert with_models.manifest("Secret", "model-storage")["stringData"]["RCLONE_CONFIG_S3_ACCESS_KEY_ID"] == SECRET


def test_model_server_keys_are_read_only(with_models):
    plan = run_program("dev", reveal_secrets=True)
    identities = json.loads(plan.manifest("Secret", "seaweedfs-s3-config")["stringData"]["config.json"])["identities"]
    server = next(i for i in identities if i["name"] == "model-server")
    assert server["actions"] and not any(a.startswith("Write") for a in server["actions"])


def _mutations():
    good = {"apiVersion": "machinelearning.seldon.io/v1", "kind": "SeldonDeployment",
            "metadata": {"name": "m"},
            "spec": {"protocol": "v2", "predictors": [{
                "name": "main", "graph": {"name": "model", "implementation": "MLFLOW_SERVER", "modelUri": NEO_URI},
                "componentSpecs": [{"spec": {"containers": [{"name": "model", "resources": {
                    "requests": {"cpu": "100m", "memory": "256Mi"}}}]}}]}]}}

    def mutate(fn):
        obj = copy.deepcopy(good)
        fn(obj)
        return obj

    p = lambda o: o["spec"]["predictors"][0]  # noqa: E731
    return good, [
        ("kind", mutate(lambda o: o.update(apiVersion="machinelearning.seldon.io/v1alpha2")), "apiVersion/kind"),
        ("alias uri", mutate(lambda o: p(o)["graph"].update(modelUri="models:/NEOs@champion")), "resolve models:/"),
        ("protocol", mutate(lambda o: p(o)["graph"].update(implementation="TRITON_SERVER") or
                            o["spec"].update(protocol="seldon")), "does not serve protocol"),
        ("no container", mutate(lambda o: p(o)["graph"].pop("implementation")), "neither an implementation"),
        ("orphan", mutate(lambda o: p(o)["componentSpecs"][0]["spec"]["containers"][0].update(name="x")),
         "matches no graph node"),
        ("requests", mutate(lambda o: p(o)["componentSpecs"][0]["spec"]["containers"][0].update(resources={})),
         "no cpu/memory requests"),
        ("latest", mutate(lambda o: (p(o)["graph"].pop("implementation"), p(o)["componentSpecs"][0]["spec"]
                                     ["containers"][0].update(image="repo/model:latest"))), "not pinned"),
        ("traffic", mutate(lambda o: o["spec"]["predictors"].append({**copy.deepcopy(p(o)), "name": "b",
                                                                     "traffic": 30}) or p(o).update(traffic=50)),
         "add up to 100"),
        ("hpa", mutate(lambda o: p(o)["componentSpecs"][0].update(hpaSpec={"minReplicas": 4, "maxReplicas": 2})),
         "minReplicas > maxReplicas"),
    ]


def test_seldon_checks_accept_a_good_deployment():
    good, _ = _mutations()
    assert validate_seldon_deployment(good) == []


@pytest.mark.parametrize(("case", "obj", "expected"), _mutations()[1], ids=[m[0] for m in _mutations()[1]])
def test_seldon_checks_reject_broken_deployments(case, obj, expected):
    problems = validate_seldon_deployment(obj)
    assert any(expected in p for p in problems), problems


def test_proxied_artifact_locations_map_onto_the_bucket():
    from mlops.models import artifact_uri

    assert artifact_uri("mlflow-artifacts:/3/models/m-1/artifacts", "s3://mlflow-artifacts") == \
        "s3://mlflow-artifacts/3/models/m-1/artifacts"
    assert artifact_uri("gs://bucket/x", "s3://ignored") == "gs://bucket/x"
    with pytest.raises(ValueError, match="neither proxied"):
        artifact_uri("file:///tmp/model", "s3://mlflow-artifacts")
