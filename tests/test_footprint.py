"""The footprint counts what the cluster really runs: each pinned chart's pods as its templates make
them from the values given, Helm hook Jobs as batch, and served models as the Seldon operator builds
them (model + executor + storage initializer)."""

from __future__ import annotations

import json

import pytest

from infra.settings import parse_stack_config, raw_from_pulumi_config
from mlops.footprint import Container, cpu_m, memory_mib, pods_of, release_pods, requests_of
from mlops.plan import Plan, run_program, stack_config

MODEL = {"neo": {"source": {"uri": "s3://mlflow-artifacts/1/models/m-0123456789abcdef/artifacts"}}}


@pytest.fixture(scope="module")
def dev() -> Plan:
    return run_program("dev")


@pytest.fixture(scope="module")
def dev_with_model() -> Plan:
    values, secrets = stack_config("dev")
    return run_program("dev", ({**values, "mlops-stack:serving": json.dumps({"models": MODEL})}, secrets))


def _config():
    return parse_stack_config(*raw_from_pulumi_config(*stack_config("dev")))


def _pod(plan: Plan, component: str):
    matches = [p for p in pods_of(plan) if p.component == component]
    assert len(matches) == 1, [p.component for p in pods_of(plan)]
    return matches[0]


def _declared(resources) -> tuple[int, int]:
    return Container.of("x", resources.to_k8s()).cpu_m, Container.of("x", resources.to_k8s()).memory_mib


def test_seldon_manager_is_counted_with_its_configured_requests(dev):
    manager = _pod(dev, "helm seldon-core: controller-manager").container("manager")
    m = _config().serving.seldon.manager_resources
    assert (manager.cpu_m, manager.memory_mib) == _declared(m)
    assert manager.memory_limit_mib == memory_mib(m.memory_limit)


def test_grafana_sidecar_resources_apply_to_both_sidecars(dev):
    grafana = _pod(dev, "helm kps: grafana")
    sidecar = _config().monitoring.resources.sidecar
    for name in ("grafana-sc-dashboard", "grafana-sc-datasources"):
        c = grafana.container(name)
        assert (c.cpu_m, c.memory_mib) == _declared(sidecar)
    assert grafana.requests()[1] == sum(c.memory_mib for c in grafana.containers) > 2 * _declared(sidecar)[1]


def test_webhook_patch_jobs_are_batch_not_running(dev):
    hooks = [p for p in pods_of(dev) if "admission" in p.component]
    assert {p.component for p in hooks} == {"helm kps: admission-create", "helm kps: admission-patch"}
    assert all(p.batch for p in hooks)
    running, _ = requests_of(dev)
    assert running["memory_mib"] == sum(p.replicas * p.requests()[1] for p in pods_of(dev) if not p.batch)


def test_a_served_model_adds_model_executor_and_storage_initializer(dev, dev_with_model):
    pod = _pod(dev_with_model, "serving/SeldonDeployment/neo: main")
    config = _config()
    executor = pod.container("seldon-container-engine")
    assert (executor.cpu_m, executor.memory_mib) == _declared(config.serving.seldon.executor_resources)
    assert [c.name for c in pod.init_containers] == ["model-initializer"]
    before, _ = requests_of(dev)
    after, _ = requests_of(dev_with_model)
    assert after["memory_mib"] - before["memory_mib"] == pod.requests()[1] == 512 + executor.memory_mib


def test_an_autoscaled_model_counts_its_minimum_and_a_shadow_runs_too():
    values, secrets = stack_config("dev")
    model = {"neo": {**MODEL["neo"], "autoscaling": {"minReplicas": 2, "maxReplicas": 3},
                     "candidate": {"uri": MODEL["neo"]["source"]["uri"]}}}
    plan = run_program("dev", ({**values, "mlops-stack:serving": json.dumps({"models": model})}, secrets))
    predictors = [p for p in pods_of(plan) if p.component.startswith("serving/SeldonDeployment/neo")]
    assert sorted((p.component.rsplit(" ", 1)[-1], p.replicas) for p in predictors) == [("candidate", 2), ("main", 2)]


def test_chart_defaults_under_the_values_are_seen():
    """The gateway chart's 2-CPU default limit survives values that set only a memory limit; a
    null clears it (istio 1.30 drops nil resource fields)."""
    inputs = {"chart": "gateway", "version": "1.30.3", "name": "gw",
              "values": {"resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}}}
    proxy = release_pods(inputs)[0].container("istio-proxy")
    assert (proxy.cpu_m, proxy.cpu_limit_m, proxy.memory_limit_mib) == (50, 2000, 512)
    inputs["values"]["resources"]["limits"]["cpu"] = None
    assert release_pods(inputs)[0].container("istio-proxy").cpu_limit_m is None
    istiod = release_pods({"chart": "istiod", "version": "1.30.3", "values": {}})[0]
    assert istiod.container("discovery").memory_mib == 2048  # the chart's own request without values


def test_the_gateway_runs_with_the_cpu_limit_its_stack_declares(dev):
    proxy = _pod(dev, "helm istio-ingressgateway: gateway").container("istio-proxy")
    declared = _config().gateway.gateway_resources.cpu_limit  # the chart's 2000m default must not survive
    assert proxy.cpu_limit_m == (None if declared is None else cpu_m(declared))


def test_an_unmodelled_chart_or_version_is_an_error_naming_the_release():
    with pytest.raises(ValueError, match=r"release ingress-nginx: chart 'ingress-nginx' has no footprint model"):
        release_pods({"chart": "ingress-nginx", "version": "4.0.0", "name": "ingress-nginx", "values": {}})
    with pytest.raises(ValueError, match=r"kps: chart kube-prometheus-stack 84.0.0 is modelled at 83.6.0"):
        release_pods({"chart": "kube-prometheus-stack", "version": "84.0.0", "name": "kps", "values": {}})


def test_a_seldon_deployment_without_the_operator_is_an_error(dev_with_model):
    plan = Plan("bad", [r for r in dev_with_model.resources
                        if "seldon-core-operator" not in str(r["inputs"].get("chart", ""))])
    with pytest.raises(ValueError, match="no seldon-core-operator release"):
        pods_of(plan)


@pytest.mark.parametrize(("quantity", "mib"), [("512Mi", 512), ("1Gi", 1024), ("100M", 95), ("1048576", 1), (0, 0)])
def test_memory_quantities(quantity, mib):
    assert memory_mib(quantity) == mib


def test_a_bad_memory_quantity_names_itself():
    with pytest.raises(ValueError, match="'12 apples'"):
        memory_mib("12 apples")
