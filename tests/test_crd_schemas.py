"""Custom resources against the CRD schemas of the pinned operators (mlops/crds), with the API
server's structural-schema semantics: a field the CRD does not define is pruned, so it is an error."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from infra.settings import parse_stack_config, raw_from_pulumi_config
from mlops.crds import DATA, crds, prune, validate_custom_resource
from mlops.paths import stack_names
from mlops.plan import Plan, run_program, stack_config
from mlops.validate import HELM_RELEASE, validate_plan

TEST_STACKS = Path(__file__).parent / "stacks"
FULL = ["full", "full-dev"]


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
    assert ("kube-prometheus-stack" in charts) == (report.custom["Alertmanager"] == 1)  # from the chart values
    # the full stacks go green once every emitter matches the pinned CRDs (e.g. Seldon's hpaSpec)
    assert report.ok, report.render()


def test_full_stack_has_every_kind_the_issue_names(plans):
    kinds = set(custom_kinds(plans["full"], version_of("full")))
    assert {"SeldonDeployment", "Gateway", "VirtualService", "ServiceMonitor", "PodMonitor", "PrometheusRule",
            "Issuer", "Certificate"} <= kinds


def test_stored_schemas_are_from_the_charts_the_full_stack_pins(plans):
    releases = {(r["inputs"]["chart"], r["inputs"]["version"]) for r in plans["full"].of_type(HELM_RELEASE)}
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
    policy = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "deny", "namespace": "serving"}, "spec": {}}
    report = validate_plan(with_object(plan, first(plan, "VirtualService"), policy), version_of("dev"))
    [error] = report.errors
    assert error.startswith("security.istio.io/v1 AuthorizationPolicy serving/deny: no CRD schema stored")
    assert report.checked == len(plan.kubernetes_objects) - 1


def test_a_version_without_a_stored_schema_is_an_error(plans):
    gateway = obj_of(plans["dev"], "Gateway")
    gateway["apiVersion"] = "networking.istio.io/v1alpha3"
    [error] = validate_custom_resource(gateway)
    assert "no schema of v1alpha3 stored" in error
    gateway["apiVersion"] = "networking.istio.io/v2"
    [error] = validate_custom_resource(gateway)
    assert error.endswith("serves v1, v1alpha3, v1beta1")


def test_alertmanager_from_chart_values_is_checked(plans):
    plan = plans["full"]
    [release] = [r for r in plan.of_type(HELM_RELEASE) if r["inputs"]["chart"] == "kube-prometheus-stack"]
    bad = copy.deepcopy(release)
    claim = bad["inputs"]["values"]["alertmanager"]["alertmanagerSpec"]["storage"]["volumeClaimTemplate"]
    claim["spec"]["storageClass"] = "local-path"
    resources = [bad if r is release else r for r in plan.resources]
    [error] = validate_plan(Plan(plan.stack, resources, plan.outputs), version_of("full")).errors
    assert "values alertmanager.alertmanagerSpec: spec.storage.volumeClaimTemplate.spec.storageClass: " \
           "field not in the CRD schema" in error


def test_chart_newer_than_the_stored_schemas_is_an_error(plans):
    plan = plans["dev"]
    resources = [copy.deepcopy(r) for r in plan.resources]
    [release] = [r for r in resources if r["type"] == HELM_RELEASE and r["inputs"]["chart"] == "kube-prometheus-stack"]
    release["inputs"]["version"] = "84.0.0"
    [error] = validate_plan(Plan(plan.stack, resources, plan.outputs), version_of("dev")).errors
    assert "chart kube-prometheus-stack 84.0.0, but the CRD schemas of Alertmanager, AlertmanagerConfig, " \
           "PodMonitor, PrometheusRule, ServiceMonitor in mlops/crds are from 83.6.0" in error


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
