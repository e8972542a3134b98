"""Validation of a plan: its Kubernetes objects against the stack's Kubernetes version, its custom
resources against the CRD schemas of the pinned operators, and every resource against the policy
pack's rules (`policy/rules.py`, the same rules CrossGuard enforces).

Uses kubernetes-validate's OpenAPI schemas in strict mode, so a misspelt field fails like an
unknown field would on `kubectl apply --validate=strict`; custom resources get the API server's
structural-schema semantics (`mlops/crds`: a field the CRD does not define is pruned, so it is an
error). A kind with neither schema is an error, never skipped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import kubernetes_validate

from mlops.crds import crd_of, crds, is_custom, validate_custom_resource
from mlops.integrity import check_integrity
from mlops.plan import Plan
from modules.platform.contract import ClusterFacts
from modules.serving.seldon import validate_seldon_deployment
from policy.rules import violations

# Rules a CRD schema cannot express (cross-field, operator behaviour), run besides the schema.
CUSTOM_CHECKS: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "SeldonDeployment": validate_seldon_deployment,
}
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
# Custom resources a chart renders from its values: (chart, values path, apiVersion, kind). The
# kube-prometheus-stack 83.6.0 template (templates/alertmanager/alertmanager.yaml) copies each
# alertmanagerSpec key the CRD defines into the Alertmanager's spec as it is.
CHART_RESOURCES = [
    ("kube-prometheus-stack", ("alertmanager", "alertmanagerSpec"), "monitoring.coreos.com/v1", "Alertmanager"),
]


@dataclass
class ValidationReport:
    version: str
    checked: int = 0  # objects of the plan checked against a core or CRD schema
    errors: list[str] = field(default_factory=list)
    custom: Counter[str] = field(default_factory=Counter)  # custom resources checked, by kind
    policy: list[str] = field(default_factory=list)  # "[rule] message"
    integrity: list[str] | None = None  # cross-object problems on the target cluster; None: not checked

    @property
    def ok(self) -> bool:
        return not self.errors and not self.policy and not self.integrity

    def render(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.custom.items())) or "none"
        lines = [f"Kubernetes {self.version}: {self.checked} object(s) schema-checked "
                 f"(custom resources against CRD schemas: {kinds}), {len(self.errors)} error(s)"]
        lines += [f"  ERROR {e}" for e in self.errors]
        lines.append(f"Policy pack: {len(self.policy)} violation(s)")
        lines += [f"  POLICY {v}" for v in self.policy]
        if self.integrity is not None:
            lines.append(f"Plan integrity on the target cluster: {len(self.integrity)} problem(s)")
            lines += [f"  INTEGRITY {p}" for p in self.integrity]
        return "\n".join(lines)


def _label(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')} {meta.get('namespace', '-')}/{meta.get('name')}"


def _core_problems(obj: Mapping[str, Any], version: str) -> list[str] | None:
    """Problems against the core OpenAPI schema, or None when the kind is not a core one."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return None
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(str(p) for p in error.path) or '(root)'}: {error.message}"]
    return []


def _check(obj: Mapping[str, Any], version: str, report: ValidationReport) -> bool:
    """Adds the object's problems to the report; False when no schema knows its kind."""
    problems = None if is_custom(obj) else _core_problems(obj, version)
    if problems is None:  # not a core kind: a custom resource, checked only if its CRD is stored
        problems = validate_custom_resource(obj)
        if crd_of(obj) is None:
            report.errors += [f"{obj.get('apiVersion')} {_label(obj)}: {p}" for p in problems]
            return False
        kind = str(obj["kind"])
        report.custom[kind] += 1
        if check := CUSTOM_CHECKS.get(kind):
            problems += check(obj)
    report.errors += [f"{_label(obj)}: {p}" for p in problems]
    return True


def _chart_resources(plan: Plan) -> Iterator[dict[str, Any]]:
    """The parts of chart-rendered custom resources that come from the plan's Helm values."""
    for release in plan.of_type(HELM_RELEASE):
        inputs = release.get("inputs") or {}
        for chart, path, api_version, kind in CHART_RESOURCES:
            values = inputs.get("values") or {}
            for key in path:
                values = values.get(key) or {}
            crd = crd_of({"apiVersion": api_version, "kind": kind})
            if inputs.get("chart") != chart or not values or crd is None:
                continue
            defined = crd.schemas[api_version.rpartition("/")[2]]["properties"]["spec"]["properties"]
            yield {"apiVersion": api_version, "kind": kind,
                   "metadata": {"name": f"{release['name']}: values {'.'.join(path)}",
                                "namespace": inputs.get("namespace")},
                   "spec": {k: v for k, v in values.items() if k in defined}}


def _stale_schemas(plan: Plan) -> Iterator[str]:
    """Releases whose chart version is not the one the stored CRD schemas were read at."""
    for release in plan.of_type(HELM_RELEASE):
        inputs = release.get("inputs") or {}
        kinds = sorted(c.kind for c in crds().values()
                       if c.chart[0] == inputs.get("chart") and c.chart[1] != inputs.get("version"))
        if kinds:
            stored = ", ".join(sorted({c.chart[1] for c in crds().values() if c.chart[0] == inputs.get("chart")}))
            yield (f"Helm release {release['name']}: chart {inputs.get('chart')} {inputs.get('version')}, but the "
                   f"CRD schemas of {', '.join(kinds)} in mlops/crds are from {stored}; extract that "
                   "version's CRDs (python -m mlops.crds --help) or pin the chart back")


def validate_plan(plan: Plan, version: str, facts: ClusterFacts | None = None) -> ValidationReport:
    """Schemas and policy; with `facts` (what the target cluster provides) also plan integrity."""
    report = ValidationReport(version=version)
    if facts is not None:
        report.integrity = check_integrity(plan, facts)
    for resource in plan.resources:
        props = resource.get("manifest") or resource.get("inputs") or {}
        report.policy += [f"[{rule}] {message}" for rule, message in violations(resource["type"], props)]
    report.checked = sum(_check(obj, version, report) for obj in plan.kubernetes_objects)
    for obj in _chart_resources(plan):
        _check(obj, version, report)
    report.errors += _stale_schemas(plan)
    return report
