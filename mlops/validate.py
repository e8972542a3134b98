"""Validation of a plan: its Kubernetes objects against the stack's Kubernetes version, its custom
resources against the CRD schemas of the pinned operators, and every resource against the policy
pack's rules (`policy/rules.py`, the same rules CrossGuard enforces).

Uses kubernetes-validate's OpenAPI schemas in strict mode, so a misspelt field fails like an
unknown field would on `kubectl apply --validate=strict`; custom resources get the API server's
structural-schema semantics (`mlops/crds`: a field the CRD does not define is pruned, so it is an
error). A kind with neither schema is an error, never skipped.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import kubernetes_validate

from mlops.crds import crd_of, crds, is_custom, validate_custom_resource
from mlops.integrity import check_integrity
from mlops.plan import Plan
from modules.ci.runners import CHARTS as RUNNER_CHARTS
from modules.gateway import tls_problems
from modules.platform.contract import ClusterFacts
from modules.serving.kserve import validate_inference_service
from modules.serving.seldon import validate_seldon_deployment
from policy.rules import violations

# Rules a CRD schema cannot express (cross-field, operator behaviour), run besides the schema.
CUSTOM_CHECKS: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "SeldonDeployment": validate_seldon_deployment,
    "InferenceService": validate_inference_service,
}
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"


@dataclass(frozen=True)
class ChartResource:
    """A custom resource a chart renders from its values. The values keys its template copies into
    the spec as they are (`toYaml`, `tpl` of values without template actions, plain scalars) are
    checked against the CRD; keys the chart's templates transform (e.g. `image` objects into
    strings) are not; a key no template reads is an error (the chart drops it)."""

    chart: str
    version: str  # the chart version whose template was read
    template: str  # "<repository>@<tag>:<path>" of that template
    values: tuple[str, ...]  # where in the release's values
    api_version: str
    kind: str
    copied: Mapping[str, str | None]  # values key -> spec field (None: its keys are spec fields)
    transformed: frozenset[str]  # the other values keys (here) any template of the chart reads
    pod_templates: tuple[str, ...] = ()  # copied keys that are core PodTemplateSpecs as well


def _copied(keys: str, **renamed: str | None) -> dict[str, str | None]:
    return {k: k for k in keys.split()} | renamed


KPS_TEMPLATES = "prometheus-community/helm-charts@kube-prometheus-stack-83.6.0:charts/kube-prometheus-stack/templates"
CHART_RESOURCES = [
    ChartResource(
        "kube-prometheus-stack", "83.6.0", f"{KPS_TEMPLATES}/alertmanager/alertmanager.yaml",
        ("alertmanager", "alertmanagerSpec"), "monitoring.coreos.com/v1", "Alertmanager", _copied(
            "replicas listenLocal serviceName automountServiceAccountToken externalUrl nodeSelector paused "
            "logFormat logLevel retention secrets configSecret configMaps alertmanagerConfigSelector "
            "alertmanagerConfigNamespaceSelector web alertmanagerConfiguration alertmanagerConfigMatcherStrategy "
            "resources routePrefix securityContext hostUsers dnsConfig dnsPolicy storage "
            "persistentVolumeClaimRetentionPolicy podMetadata affinity tolerations topologySpreadConstraints "
            "containers initContainers priorityClassName additionalPeers volumes volumeMounts portName "
            "clusterAdvertiseAddress clusterGossipInterval clusterPeerTimeout clusterPushpullInterval clusterLabel "
            "forceEnableClusterMode minReadySeconds podManagementPolicy updateStrategy hostNetwork "
            "terminationGracePeriodSeconds additionalArgs", additionalConfig=None),
        frozenset("additionalConfigString image podAntiAffinity podAntiAffinityTopologyKey scheme tlsConfig "
                  "useExistingSecret version".split())),
    ChartResource(  # not agentMode (which renders a PrometheusAgent)
        "kube-prometheus-stack", "83.6.0", f"{KPS_TEMPLATES}/prometheus/prometheus.yaml",
        ("prometheus", "prometheusSpec"), "monitoring.coreos.com/v1", "Prometheus", _copied(
            "automountServiceAccountToken apiserverConfig additionalArgs externalLabels enableRemoteWriteReceiver "
            "externalUrl nodeSelector paused replicas shards logLevel logFormat listenLocal enableOTLPReceiver "
            "enableAdminAPI web exemplars enableFeatures otlp scrapeClasses podTargetLabels scrapeFailureLogFile "
            "scrapeInterval scrapeProtocols scrapeTimeout convertClassicHistogramsToNHCB scrapeClassicHistograms "
            "scrapeNativeHistograms evaluationInterval resources retention retentionSize routePrefix secrets "
            "configMaps serviceName serviceMonitorSelector serviceMonitorNamespaceSelector podMonitorSelector "
            "podMonitorNamespaceSelector probeSelector probeNamespaceSelector remoteRead remoteWrite "
            "securityContext dnsConfig dnsPolicy ruleNamespaceSelector ruleSelector scrapeConfigSelector "
            "scrapeConfigNamespaceSelector persistentVolumeClaimRetentionPolicy podMetadata query affinity "
            "tolerations topologySpreadConstraints containers initContainers priorityClassName disableCompaction "
            "portName volumes volumeMounts arbitraryFSAccessThroughSMs overrideHonorLabels "
            "overrideHonorTimestamps ignoreNamespaceSelectors enforcedNamespaceLabel queryLogFile sampleLimit "
            "enforcedKeepDroppedTargets enforcedSampleLimit enforcedTargetLimit enforcedLabelLimit "
            "enforcedLabelNameLengthLimit enforcedLabelValueLengthLimit allowOverlappingBlocks "
            "nameValidationScheme minReadySeconds podManagementPolicy updateStrategy terminationGracePeriodSeconds "
            "maximumStartupDurationSeconds hostNetwork hostUsers hostAliases tracingConfig serviceDiscoveryRole",
            storageSpec="storage", additionalConfig=None),
        frozenset("additionalAlertManagerConfigs additionalAlertManagerConfigsSecret additionalAlertRelabelConfigs "
                  "additionalAlertRelabelConfigsSecret additionalConfigString additionalPrometheusSecretsAnnotations "
                  "additionalRemoteRead additionalRemoteWrite additionalScrapeConfigs additionalScrapeConfigsSecret "
                  "alertingEndpoints disableAlerting excludedFromEnforcement image podAntiAffinity "
                  "podAntiAffinityTopologyKey podMonitorSelectorNilUsesHelmValues probeSelectorNilUsesHelmValues "
                  "prometheusExternalLabelName prometheusExternalLabelNameClear prometheusRulesExcludedFromEnforce "
                  "remoteWriteDashboards replicaExternalLabelName replicaExternalLabelNameClear "
                  "ruleSelectorNilUsesHelmValues scrapeConfigSelectorNilUsesHelmValues "
                  "serviceMonitorSelectorNilUsesHelmValues thanos tsdb version walCompression".split())),
    ChartResource(  # the default container mode (no `containerMode`): the runner container is copied as is
        f"{RUNNER_CHARTS}/gha-runner-scale-set", "0.14.2",
        "actions/actions-runner-controller@gha-runner-scale-set-0.14.2:"
        "charts/gha-runner-scale-set/templates/autoscalingrunnerset.yaml",
        (), "actions.github.com/v1alpha1", "AutoscalingRunnerSet", _copied(
            "githubConfigUrl runnerGroup runnerScaleSetName minRunners maxRunners listenerTemplate listenerMetrics "
            "template", scaleSetLabels="runnerScaleSetLabels"),
        frozenset("annotations containerMode controllerServiceAccount githubConfigSecret githubServerTLS keyVault "
                  "labels nameOverride namespaceOverride proxy resourceMeta".split()),
        pod_templates=("template", "listenerTemplate")),
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


def _rendered(entry: ChartResource, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The part of the spec the template copies from `values`, and the values key of each spec field."""
    spec: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, target in entry.copied.items():
        if key not in values:
            continue
        if target is None and isinstance(values[key], Mapping):  # rendered at the top of the spec
            spec |= values[key]
            origin |= {k: f"{key}.{k}" for k in values[key]}
        elif target is not None:
            spec[target] = values[key]
            origin[target] = key
    return spec, origin


def _in_values(problem: str, origin: Mapping[str, str], entry: ChartResource) -> str:
    """A problem of the rendered spec, located in the values (where the fix goes)."""
    path, _, message = problem.partition(": ")
    where = ".".join(entry.values)
    if (found := re.match(r"spec\.([^.\[]+)(.*)", path)) and found[1] in origin:
        where = ".".join((*entry.values, origin[found[1]])) + found[2]
    return f"values {where or '(root)'} ({entry.kind} {path}): {message}"


def _chart_resource_problems(plan: Plan, version: str, report: ValidationReport) -> Iterator[str]:
    """Problems of the custom resources charts render from the plan's Helm values (CHART_RESOURCES)."""
    for release, entry in ((r, e) for r in plan.of_type(HELM_RELEASE) for e in CHART_RESOURCES
                           if (r.get("inputs") or {}).get("chart") == e.chart):
        inputs, label = release["inputs"], f"Helm release {release['name']}"
        values = inputs.get("values") or {}
        for key in entry.values:
            values = values.get(key) or {}
        if not values:
            continue
        if inputs.get("version") != entry.version:
            yield (f"{label}: chart {entry.chart} {inputs.get('version')}, but the values keys its {entry.kind} "
                   f"copies (CHART_RESOURCES, mlops/validate.py) were read from {entry.template} at "
                   f"{entry.version}; re-read that template at the new version or pin the chart back")
            continue
        read = {*entry.copied, *entry.transformed}
        for key in sorted(set(values) - read):
            yield (f"{label}: values {'.'.join((*entry.values, key))}: no template of chart {entry.chart} "
                   f"{entry.version} reads it, so it is dropped; read here: {', '.join(sorted(read))}")
        spec, origin = _rendered(entry, values)
        obj = {"apiVersion": entry.api_version, "kind": entry.kind,
               "metadata": {"name": release["name"], "namespace": inputs.get("namespace")}, "spec": spec}
        report.custom[entry.kind] += 1
        problems = [_in_values(p, origin, entry) for p in validate_custom_resource(obj)]
        yield from (f"{label}: {p}" for p in problems)
        for key in (k for k in entry.pod_templates if k in values):
            where = ".".join((*entry.values, key))
            if not any(re.match(rf"values {re.escape(where)}[.\[ ]", p) for p in problems):  # said once
                yield from (f"{label}: {p}" for p in _pod_template_problems(values[key], where, version))


def _pod_template_problems(template: Any, where: str, version: str) -> list[str]:
    """A pod template against the core PodTemplateSpec of the stack's Kubernetes version: the pods
    the operator creates from it must pass there, whatever the operator's CRD (built against some
    other Kubernetes release) accepts."""
    pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "values"}, "template": template}
    problems = []
    for problem in _core_problems(pod, version) or []:
        path, _, message = problem.partition(": ")
        inner = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", path.removeprefix("template"))
        problems.append(f"values {where}{inner} (core PodTemplateSpec, Kubernetes {version}): {message}")
    return problems


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
    report.errors += tls_problems(plan.kubernetes_objects)
    for resource in plan.resources:
        props = resource.get("manifest") or resource.get("inputs") or {}
        report.policy += [f"[{rule}] {message}" for rule, message in violations(resource["type"], props)]
    report.checked = sum(_check(obj, version, report) for obj in plan.kubernetes_objects)
    report.errors += _chart_resource_problems(plan, version, report)
    report.errors += _stale_schemas(plan)
    return report
