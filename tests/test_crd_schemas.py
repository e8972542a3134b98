"""Custom resources against the CRD schemas of the pinned operators (mlops/crds), with the API
server's structural-schema semantics: a field the CRD does not define is pruned, so it is an error."""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from infra.settings import parse_stack_config, raw_from_pulumi_config
from mlops.crds import DATA, crds, prune, validate_custom_resource
from mlops.paths import stack_names
from mlops.plan import Plan, run_program, stack_config
from mlops.validate import CHART_RESOURCES, HELM_RELEASE, validate_plan
from modules.ci.runners import CHARTS as RUNNER_CHARTS

TEST_STACKS = Path(__file__).parent / "stacks"
FULL = ["full", "full-dev", "full-kserve"]
SCALE_SET = f"{RUNNER_CHARTS}/gha-runner-scale-set"


@pytest.fixture(scope="module")
def plans(plan_of) -> dict[str, Plan]:
    shipped = {s: plan_of(s) for s in stack_names()}
    return shipped | {s: run_program(s, stack_config(s, TEST_STACKS)) for s in FULL}


def version_of(stack: str) -> str:
    folder = TEST_STACKS if stack in FULL else None
    return parse_stack_config(*raw_from_pulumi_config(*stack_config(stack, folder))).kubernetes.version


def custom_kinds(plan: Plan, version: str) -> Counter[str]:
    """Kinds of the plan's objects the core Kubernetes schemas do not know (decided without mlops.crds)."""
    kinds: Counter[str] = Counter()
    for obj in plan.kubernetes_objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            kinds[obj["kind"]] += 1
        except kubernetes_validate.ValidationError:
            pass
    return kinds


def first(plan: Plan, kind: str) -> dict[str, Any]:
    return next(o for o in plan.kubernetes_objects if o["kind"] == kind)


def obj_of(plan: Plan, kind: str) -> dict[str, Any]:
    return copy.deepcopy(first(plan, kind))


def with_object(plan: Plan, old: dict[str, Any], new: dict[str, Any]) -> Plan:
    """A copy of the plan with one manifest replaced."""
    resources = [dict(r, manifest=new) if r.get("manifest") is old else r for r in plan.resources]
    return Plan(plan.stack, resources, plan.outputs)


@pytest.mark.parametrize("stack", [*stack_names(), *FULL])
def test_every_custom_resource_of_every_stack_is_checked_and_valid(stack, plans):
    plan = plans[stack]
    version = version_of(stack)
    report = validate_plan(plan, version)
    present = custom_kinds(plan, version)
    assert present, f"{stack}: no custom resources in the plan"
    assert {k: report.custom[k] for k in present} == dict(present)  # every CR went through its CRD schema
    assert report.checked == len(plan.kubernetes_objects)
    charts = {r["inputs"].get("chart") for r in plan.of_type(HELM_RELEASE)}
    for kind in ("Alertmanager", "Prometheus"):  # rendered from the chart values
        assert ("kube-prometheus-stack" in charts) == (report.custom[kind] == 1), kind
    assert (SCALE_SET in charts) == (report.custom["AutoscalingRunnerSet"] == 1)
    # the full stacks go green once every emitter matches the pinned CRDs (e.g. Seldon's hpaSpec)
    assert report.ok, report.render()


def test_full_stack_has_every_kind_the_issue_names(plans):
    kinds = set(custom_kinds(plans["full"], version_of("full")))
    assert {"SeldonDeployment", "Gateway", "VirtualService", "ServiceMonitor", "PodMonitor", "PrometheusRule",
            "Issuer", "Certificate"} <= kinds


def test_stored_schemas_are_from_the_charts_the_full_stack_pins(plans):
    releases = {(r["inputs"]["chart"], r["inputs"]["version"])
                for stack in ("full", "full-kserve") for r in plans[stack].of_type(HELM_RELEASE)}
    for crd in crds().values():
        assert crd.chart in releases, f"{crd.kind}: stored from {crd.chart}, the full stack pins {releases}"
        assert crd.source.count("@") == 1 and ":" in crd.source
    for path in DATA.glob("*.json"):
        assert '"description"' not in path.read_text(), f"{path.name}: strip descriptions"


def errors_of(plan: Plan, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    report = validate_plan(with_object(plan, old, new), version_of(plan.stack))
    return report.errors


def test_v2_hpa_shape_in_metrics_is_pruned_and_reported(plans):
    plan = plans["full"]
    old = plan.manifest("SeldonDeployment", "neo", "serving")
    sdep = copy.deepcopy(old)
    hpa = sdep["spec"]["predictors"][0]["componentSpecs"][0]["hpaSpec"]
    hpa["metrics"] = [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]
    hpa.pop("metricsv2", None)
    [error] = errors_of(plan, old, sdep)
    assert error.startswith("SeldonDeployment serving/neo: spec.predictors[0].componentSpecs[0].hpaSpec"
                            ".metrics[0].resource.target: field not in the CRD schema")
    assert error.endswith("allowed here: name, targetAverageUtilization, targetAverageValue")
    # the autoscaling/v2beta1 shape 1.17.1 defines for `metrics` passes
    hpa["metrics"][0]["resource"] = {"name": "cpu", "targetAverageUtilization": 60}
    assert validate_custom_resource(sdep) == []


def test_unknown_seldon_field_names_object_path_and_allowed_fields(plans):
    plan = plans["full"]
    old = plan.manifest("SeldonDeployment", "neo", "serving")
    sdep = copy.deepcopy(old)
    sdep["spec"]["predictors"][0]["graph"]["modelURI"] = "s3://x"
    errors = errors_of(plan, old, sdep)
    assert len(errors) == 1 and errors[0].startswith(
        "SeldonDeployment serving/neo: spec.predictors[0].graph.modelURI: field not in the CRD schema")
    assert "modelUri" in errors[0].split("allowed here:")[1]


@pytest.mark.parametrize(("kind", "where", "field"), [
    ("VirtualService", ("spec", "http", 0), "retry"),
    ("ServiceMonitor", ("spec", "endpoints", 0), "scrapeInterval"),
    ("PrometheusRule", ("spec", "groups", 0, "rules", 0), "severity"),
    ("Certificate", ("spec",), "dnsName"),
    ("Issuer", ("spec", "acme", "solvers", 0, "http01", "ingress"), "class_name"),
    ("Gateway", ("spec", "servers", 0, "port"), "nodePort"),
    ("PodMonitor", ("spec", "podMetricsEndpoints", 0), "targetPort_"),
])
def test_unknown_field_is_an_error(plans, kind, where, field):
    plan = plans["full"]
    old = first(plan, kind)
    obj = copy.deepcopy(old)
    node: Any = obj
    for key in where:
        node = node[key]
    node[field] = "x"
    path = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in (*where, field)).lstrip(".")
    [error] = errors_of(plan, old, obj)
    assert f": {path}: field not in the CRD schema, the API server drops it; allowed here: " in error
    assert error.startswith(f"{kind} {obj['metadata'].get('namespace', '-')}/{obj['metadata']['name']}:")


def test_types_enums_required_and_patterns_are_checked(plans):
    plan = plans["full"]
    cert = obj_of(plan, "Certificate")
    del cert["spec"]["secretName"]
    assert validate_custom_resource(cert) == ["spec: 'secretName' is a required property"]
    gateway = obj_of(plan, "Gateway")
    gateway["spec"]["servers"][-1]["tls"]["mode"] = "STRICT"
    assert [e for e in validate_custom_resource(gateway) if "'STRICT' is not one of" in e]
    gateway["spec"]["servers"][-1]["port"]["number"] = "443"
    assert "spec.servers[1].port.number: '443' is not of type 'integer'" in validate_custom_resource(gateway)
    rule = obj_of(plan, "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    [error] = validate_custom_resource(rule)
    assert error.startswith("spec.groups[0].rules[0].for: '5 minutes' does not match")


def test_int_or_string_takes_both(plans):
    monitor = obj_of(plans["full"], "ServiceMonitor")
    for port in (8080, "metrics"):
        monitor["spec"]["endpoints"][0]["targetPort"] = port
        assert validate_custom_resource(monitor) == []
    monitor["spec"]["endpoints"][0]["targetPort"] = 1.5
    assert validate_custom_resource(monitor)


def test_cel_rules_of_the_crd_are_evaluated(plans):
    gateway = obj_of(plans["full"], "Gateway")
    gateway["spec"]["servers"][-1]["tls"]["credentialNames"] = ["other-tls"]
    assert validate_custom_resource(gateway) == [
        "spec.servers[1].tls: only one of credentialName or credentialNames can be set "
        "(CEL rule: (has(self.credentialName) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1)"]
    route = obj_of(plans["full"], "VirtualService")
    route["spec"]["http"][0]["timeout"] = "0s"
    [error] = validate_custom_resource(route)
    assert error.startswith("spec.http[0].timeout: must be a valid duration greater than 1ms")


def test_unknown_kind_is_an_error_not_unchecked(plans):
    plan = plans["dev"]
    policy = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
              "metadata": {"name": "deny", "namespace": "serving"}, "spec": {}}
    report = validate_plan(with_object(plan, first(plan, "VirtualService"), policy), version_of("dev"))
    [error] = report.errors
    assert error.startswith("security.istio.io/v1 PeerAuthentication serving/deny: no CRD schema stored")
    assert report.checked == len(plan.kubernetes_objects) - 1


def test_a_version_without_a_stored_schema_is_an_error(plans):
    gateway = obj_of(plans["dev"], "Gateway")
    gateway["apiVersion"] = "networking.istio.io/v1alpha3"
    [error] = validate_custom_resource(gateway)
    assert "no schema of v1alpha3 stored" in error
    gateway["apiVersion"] = "networking.istio.io/v2"
    [error] = validate_custom_resource(gateway)
    assert error.endswith("serves v1, v1alpha3, v1beta1")


def values_errors(plan: Plan, chart: str, change: Callable[[dict[str, Any]], None],
                  version: str | None = None) -> list[str]:
    """The plan's errors once `change` has edited the values of the release of `chart`."""
    resources = [copy.deepcopy(r) for r in plan.resources]
    [release] = [r for r in resources if r["type"] == HELM_RELEASE and r["inputs"]["chart"] == chart]
    change(release["inputs"]["values"])
    return validate_plan(Plan(plan.stack, resources, plan.outputs), version or version_of(plan.stack)).errors


def claim_of(values: dict[str, Any], *path: str) -> dict[str, Any]:
    node: Any = values
    for key in path:
        node = node[key]
    return node["volumeClaimTemplate"]["spec"]


@pytest.mark.parametrize(("path", "where"), [
    (("alertmanager", "alertmanagerSpec", "storage"), "Alertmanager spec.storage"),
    (("prometheus", "prometheusSpec", "storageSpec"), "Prometheus spec.storage"),  # renamed by the template
])
def test_custom_resource_from_chart_values_is_checked(plans, path, where):
    def typo(values):
        claim_of(values, *path)["storageClass"] = "local-path"

    [error] = values_errors(plans["full"], "kube-prometheus-stack", typo)
    assert error.startswith(f"Helm release monitoring-stack: values {'.'.join(path)}.volumeClaimTemplate.spec"
                            f".storageClass ({where}.volumeClaimTemplate.spec.storageClass): field not in the CRD "
                            "schema, the API server drops it; allowed here: accessModes, dataSource, ")
    assert ", storageClassName, " in error


def test_prometheus_values_are_typed_and_patterns_checked(plans):
    def bad(values):
        values["prometheus"]["prometheusSpec"]["scrapeInterval"] = "30 s"

    [error] = values_errors(plans["dev"], "kube-prometheus-stack", bad)
    assert error.startswith("Helm release monitoring-stack: values prometheus.prometheusSpec.scrapeInterval "
                            "(Prometheus spec.scrapeInterval): '30 s' does not match ")


def test_additional_config_lands_at_the_top_of_the_spec(plans):
    def extra(values):
        spec = values["prometheus"]["prometheusSpec"]
        spec["additionalConfig"] = {"evaluationInterval": "1m", "scrapeIntervall": "1m"}

    [error] = values_errors(plans["dev"], "kube-prometheus-stack", extra)
    assert error.startswith("Helm release monitoring-stack: values prometheus.prometheusSpec.additionalConfig"
                            ".scrapeIntervall (Prometheus spec.scrapeIntervall): field not in the CRD schema")
    assert ", scrapeInterval, " in error


@pytest.mark.parametrize(("chart", "path", "key"), [
    ("kube-prometheus-stack", ("prometheus", "prometheusSpec"), "storage"),  # CRD's name; the chart reads storageSpec
    ("kube-prometheus-stack", ("alertmanager", "alertmanagerSpec"), "storageSpec"),
    (SCALE_SET, (), "minRunner"),
])
def test_values_key_no_template_reads_is_an_error(plans, chart, path, key):
    def unread(values):
        node = values
        for part in path:
            node = node[part]
        node[key] = {}

    [error] = values_errors(plans["full"], chart, unread)
    where = ".".join((*path, key))
    assert f": values {where}: no template of chart {chart} " in error and " reads it, so it is dropped; " in error
    read = error.split("read here: ")[1].split(", ")
    assert key not in read and len(read) > 8


def test_runner_scale_set_from_chart_values_is_checked(plans):
    def typo(values):
        values["template"]["spec"]["containers"][0]["resourcez"] = {}
        values["scaleSetLabels"] = [1]  # the template renders it as runnerScaleSetLabels

    errors = values_errors(plans["full"], SCALE_SET, typo)
    assert len(errors) == 2, errors
    assert errors[0].startswith(
        "Helm release ci-runners-scale-set: values template.spec.containers[0].resourcez (AutoscalingRunnerSet "
        "spec.template.spec.containers[0].resourcez): field not in the CRD schema, the API server drops it; "
        "allowed here: args, command, env, envFrom, image, imagePullPolicy, lifecycle, ")
    assert errors[1] == ("Helm release ci-runners-scale-set: values scaleSetLabels[0] (AutoscalingRunnerSet "
                         "spec.runnerScaleSetLabels[0]): 1 is not of type 'string'")


def test_runner_pod_template_is_checked_at_the_stacks_kubernetes_version(plans):
    """workloadRef (Kubernetes 1.35) is in the CRD's PodSpec, but a 1.34 API server drops it from the runner pods."""
    def newer(values):
        values["template"]["spec"]["workloadRef"] = {"name": "w", "podGroup": "g"}

    assert version_of("full") == "1.34"
    [error] = values_errors(plans["full"], SCALE_SET, newer)
    assert error == ("Helm release ci-runners-scale-set: values template.spec (core PodTemplateSpec, Kubernetes "
                     "1.34): Additional properties are not allowed ('workloadRef' was unexpected)")
    assert not [e for e in values_errors(plans["full"], SCALE_SET, newer, "1.35") if "PodTemplateSpec" in e]


def test_chart_resources_match_the_stored_crds_and_the_pinned_charts(plans):
    releases = {(r["inputs"]["chart"], r["inputs"]["version"]) for r in plans["full"].of_type(HELM_RELEASE)}
    for entry in CHART_RESOURCES:
        assert (entry.chart, entry.version) in releases and entry.version in entry.template
        crd = crds()[(entry.api_version.rpartition("/")[0], entry.kind)]
        spec = crd.schemas[entry.api_version.rpartition("/")[2]]["properties"]["spec"]["properties"]
        assert {f for f in entry.copied.values() if f is not None} <= set(spec), entry.kind
        assert not set(entry.copied) & entry.transformed and set(entry.pod_templates) <= set(entry.copied)


def test_chart_template_newer_than_the_values_keys_read_is_an_error(plans):
    plan = plans["full"]
    resources = [copy.deepcopy(r) for r in plan.resources]
    [release] = [r for r in resources if r["type"] == HELM_RELEASE and r["inputs"]["chart"] == SCALE_SET]
    release["inputs"]["version"] = "0.15.0"
    [error] = validate_plan(Plan(plan.stack, resources, plan.outputs), version_of("full")).errors
    assert error == (f"Helm release ci-runners-scale-set: chart {SCALE_SET} 0.15.0, but the values keys its "
                     "AutoscalingRunnerSet copies (CHART_RESOURCES, mlops/validate.py) were read from "
                     "actions/actions-runner-controller@gha-runner-scale-set-0.14.2:charts/gha-runner-scale-set/"
                     "templates/autoscalingrunnerset.yaml at 0.14.2; re-read that template at the new version or "
                     "pin the chart back")


def test_chart_newer_than_the_stored_schemas_is_an_error(plans):
    plan = plans["dev"]
    resources = [copy.deepcopy(r) for r in plan.resources]
    [release] = [r for r in resources if r["type"] == HELM_RELEASE and r["inputs"]["chart"] == "kube-prometheus-stack"]
    release["inputs"]["version"] = "84.0.0"
    errors = validate_plan(Plan(plan.stack, resources, plan.outputs), version_of("dev")).errors
    [error] = [e for e in errors if "CRD schemas" in e]
    assert "chart kube-prometheus-stack 84.0.0, but the CRD schemas of Alertmanager, AlertmanagerConfig, " \
           "PodMonitor, Prometheus, PrometheusRule, ServiceMonitor in mlops/crds are from 83.6.0" in error
    assert len(errors) == 3  # and the Alertmanager's and the Prometheus' values keys were read at 83.6.0


SCHEMA = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
        "spec": {"type": "object", "properties": {
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                     "properties": {"typed": {"type": "object", "properties": {"a": {"type": "string"}}}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                         "properties": {"spec": {"type": "object", "properties": {"x": {"type": "integer"}}}}},
            "port": {"x-kubernetes-int-or-string": True},
            "maybe": {"type": "string", "nullable": True},
            "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                      "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
            "empty": {"type": "object"},
        }},
    },
}


def test_pruning_follows_structural_schema_rules():
    obj = {"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "n", "labelz": {}}, "spec": {
        "free": {"anything": 1, "typed": {"a": "ok", "b": 2}},
        "labels": {"any-key": "v"},
        "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": 1, "y": 2}},
        "port": "http", "maybe": None,
        "tags": ["a", "a"], "ports": [{"name": "p"}, {"name": "p"}],
        "empty": {"gone": True},
    }}
    kept, problems = prune(obj, SCHEMA)
    assert kept["spec"]["free"] == {"anything": 1, "typed": {"a": "ok"}}  # known fields stay typed
    assert kept["spec"]["labels"] == {"any-key": "v"} and kept["spec"]["empty"] == {}
    assert kept["spec"]["template"] == {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                        "spec": {"x": 1}}
    assert [p.split(":")[0] for p in problems] == [
        "metadata.labelz", "spec.free.typed.b", "spec.template.spec.y", "spec.tags", "spec.ports",
        "spec.empty.gone"]
    assert problems[-1].endswith("allowed here: (none: an empty object)")
    _, problems = prune({"spec": {"template": {"spec": {}}}}, SCHEMA)
    assert problems == ["spec.template.apiVersion: an embedded resource needs apiVersion",
                        "spec.template.kind: an embedded resource needs kind"]


def test_stored_data_round_trips_through_extraction():
    """The extractor keeps what the check needs: kind, scope, served versions, schema; no descriptions."""
    from mlops.crds import extract

    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.org", "labels": "{{ .Release.Name }}"},
           "spec": {"group": "example.org", "scope": "Cluster", "names": {"kind": "Widget"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                        "type": "object", "description": "d", "properties": {"a": {"enum": ["="]}}}}},
                                 {"name": "v0", "served": False, "storage": False}]}}
    text = "{{- if .Values.crds }}\n---\n" + json.dumps(crd).replace('"="', "=") + "\n{{- end }}\n"
    [stored] = extract(text, {"repository": "o/r", "tag": "t", "path": "p"})
    assert stored["served"] == ["v1"] and stored["scope"] == "Cluster"
    assert stored["versions"] == {"v1": {"type": "object", "properties": {"a": {"enum": ["="]}}}}
