"""Prometheus, Alertmanager and Grafana (kube-prometheus-stack, pinned) with the platform's own
alert rules and dashboards, which live as data next to this file (`rules/`, `dashboards/`) and
are tested with promtool (tests/test_alert_rules.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s
import yaml

from modules import kube
from modules.monitoring import alerting
from modules.monitoring.alerting import AlertingArgs

HERE = Path(__file__).parent
RULES = HERE / "rules"
DASHBOARDS = HERE / "dashboards"
CHART_REPO = "https://prometheus-community.github.io/helm-charts"


def rule_files() -> list[Path]:
    return sorted(RULES.glob("*.yaml"))


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


@dataclass(frozen=True)
class ScrapeTarget:
    """A Service to scrape: its namespace, selector labels, port name and path (+ basic auth)."""

    name: str
    namespace: pulumi.Input[str]
    selector: Mapping[str, str]
    port: str
    path: str = "/metrics"
    basic_auth_secret: pulumi.Input[str] | None = None  # Secret with `username`/`password`, same namespace


@dataclass(frozen=True)
class MonitoringArgs:
    namespace: pulumi.Input[str]
    chart_version: str
    retention: str
    storage_gi: int | None  # None: no persistent volume (dev)
    storage_class: str | None
    resources: Mapping[str, Mapping[str, Any]]  # by component: prometheus, alertmanager, grafana, ...
    grafana_admin_password: pulumi.Input[str]
    grafana_url: str | None = None  # what users open ("<scheme>://<host>[:<port>]"): Grafana's root_url
    targets: Sequence[ScrapeTarget] = ()
    model_namespaces: Sequence[pulumi.Input[str]] = field(default_factory=list)
    runbook_base_url: str | None = None  # prefixes the rules' relative `docs/runbooks.md#…` links
    # node-exporter (host PID/network/paths) and the kube-system Services behind the kubelet and
    # CoreDNS monitors; off where the cluster refuses both (GKE Autopilot)
    node_level: bool = True
    placement: Mapping[str, Any] = field(default_factory=dict)  # Placement.pod_spec() of every pod
    alerting: AlertingArgs = field(default_factory=AlertingArgs)  # receivers, routes, inhibitions


def rule_groups(path: Path, runbook_base_url: str | None) -> list[dict[str, Any]]:
    """The groups of a rule file, with runbook links made absolute when a base URL is given (the
    files keep them relative so they stay valid in any fork)."""
    groups = yaml.safe_load(path.read_text())["groups"]
    if runbook_base_url:
        for rule in (r for g in groups for r in g["rules"]):
            link = rule.get("annotations", {}).get("runbook_url")
            if link and "://" not in link:
                rule["annotations"]["runbook_url"] = f"{runbook_base_url.rstrip('/')}/{link}"
    return groups


class Monitoring(pulumi.ComponentResource):
    """kube-prometheus-stack + PrometheusRules + dashboards + monitors for the platform's services."""

    grafana_service: str = "kps-grafana"
    prometheus_service: str = "kps-prometheus"

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:monitoring:Monitoring", name, None, opts)
        admin = k8s.core.v1.Secret(
            f"{name}-grafana-admin",
            metadata=kube.metadata("grafana-admin", args.namespace, "monitoring"),
            type="Opaque",
            string_data={"admin-user": "admin", "admin-password": pulumi.Output.secret(args.grafana_admin_password)},
            opts=kube.child(self),
        )
        self.release = k8s.helm.v3.Release(
            f"{name}-stack",
            name="kps",
            chart="kube-prometheus-stack",
            version=args.chart_version,
            namespace=args.namespace,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPO),
            atomic=True,
            timeout=900,
            values=self._values(args, admin.metadata.name),
            opts=kube.child(self),
        )
        after = kube.child(self, depends_on=[self.release])
        self._alerting(name, args)
        for path in rule_files():
            k8s.apiextensions.CustomResource(
                f"{name}-rules-{path.stem}",
                api_version="monitoring.coreos.com/v1",
                kind="PrometheusRule",
                metadata=kube.metadata(f"mlops-{path.stem}", args.namespace, "monitoring"),
                spec={"groups": rule_groups(path, args.runbook_base_url)},
                opts=after,
            )
        for path in dashboard_files():
            k8s.core.v1.ConfigMap(
                f"{name}-dashboard-{path.stem}",
                metadata={**kube.metadata(f"dashboard-{path.stem}", args.namespace, "monitoring"),
                          "labels": {**kube.labels(f"dashboard-{path.stem}", "monitoring"), "grafana_dashboard": "1"}},
                data={path.name: json.dumps(json.loads(path.read_text()), separators=(",", ":"))},
                opts=kube.child(self),
            )
        for target in args.targets:
            endpoint: dict[str, Any] = {"port": target.port, "path": target.path, "interval": "30s"}
            if target.basic_auth_secret is not None:
                endpoint["basicAuth"] = {
                    "username": {"name": target.basic_auth_secret, "key": "username"},
                    "password": {"name": target.basic_auth_secret, "key": "password"},
                }
            k8s.apiextensions.CustomResource(
                f"{name}-monitor-{target.name}",
                api_version="monitoring.coreos.com/v1",
                kind="ServiceMonitor",
                metadata=kube.metadata(target.name, target.namespace, "monitoring"),
                spec={"selector": {"matchLabels": dict(target.selector)}, "endpoints": [endpoint],
                      "jobLabel": "app.kubernetes.io/name"},
                opts=after,
            )
        for i, namespace in enumerate(args.model_namespaces):
            # Seldon's executor (orchestrator) serves request metrics on its `metrics` port at /prometheus
            k8s.apiextensions.CustomResource(
                f"{name}-models-{i}",
                api_version="monitoring.coreos.com/v1",
                kind="PodMonitor",
                metadata=kube.metadata("seldon-models", namespace, "monitoring"),
                spec={"selector": {"matchExpressions": [{"key": "seldon-deployment-id", "operator": "Exists"}]},
                      # the alert rules group model series by this label (modules/monitoring/README.md)
                      "podTargetLabels": ["seldon-deployment-id"],
                      "podMetricsEndpoints": [{"port": "metrics", "path": "/prometheus", "interval": "30s"}]},
                opts=after,
            )
        self.register_outputs({"release": self.release.name})

    def _alerting(self, name: str, args: MonitoringArgs) -> None:
        """The AlertmanagerConfig the Alertmanager runs on (its CRD comes with the release), after the
        Secret with the receivers' credentials it references (the operator reads it at once)."""
        needs: list[pulumi.Resource] = [self.release]
        data = alerting.credentials(args.alerting)
        if data:
            needs.append(k8s.core.v1.Secret(
                f"{name}-alerting-credentials",
                metadata=kube.metadata(alerting.CREDENTIALS_SECRET, args.namespace, "monitoring"),
                type="Opaque",
                string_data=data,
                opts=kube.child(self),
            ))
        k8s.apiextensions.CustomResource(
            f"{name}-alerting",
            api_version="monitoring.coreos.com/v1alpha1",
            kind="AlertmanagerConfig",
            metadata=kube.metadata(alerting.CONFIG_NAME, args.namespace, "monitoring"),
            spec=alerting.config_spec(args.alerting),
            opts=kube.child(self, depends_on=needs),
        )

    @staticmethod
    def _values(args: MonitoringArgs, admin_secret: pulumi.Input[str]) -> dict[str, Any]:
        r = args.resources
        prometheus_spec: dict[str, Any] = {
            "retention": args.retention,
            "resources": r["prometheus"],
            "scrapeInterval": "30s",
            # pick up every ServiceMonitor/PodMonitor/PrometheusRule, not only the chart's own
            "ruleSelectorNilUsesHelmValues": False,
            "serviceMonitorSelectorNilUsesHelmValues": False,
            "podMonitorSelectorNilUsesHelmValues": False,
        }
        alertmanager_spec: dict[str, Any] = {"resources": r["alertmanager"], **alerting.alertmanager_values()}
        grafana: dict[str, Any] = {
            "resources": r["grafana"],
            "admin": {"existingSecret": admin_secret, "userKey": "admin-user", "passwordKey": "admin-password"},
            "sidecar": {"resources": r["sidecar"],
                        "dashboards": {"enabled": True, "label": "grafana_dashboard", "labelValue": "1"}},
            "persistence": {"enabled": args.storage_gi is not None},
        }
        if args.storage_gi is not None:
            claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": f"{args.storage_gi}Gi"}}}
            if args.storage_class:
                claim["storageClassName"] = args.storage_class
            prometheus_spec["storageSpec"] = {"volumeClaimTemplate": {"spec": claim}}
            alertmanager_spec["storage"] = {"volumeClaimTemplate": {"spec": {
                **claim, "resources": {"requests": {"storage": "2Gi"}}}}}
            grafana["persistence"] |= {"size": "5Gi", **({"storageClassName": args.storage_class}
                                                        if args.storage_class else {})}
        if args.grafana_url is not None:  # Grafana's default root_url is http://<domain>:3000/
            grafana["grafana.ini"] = {"server": {"domain": urlsplit(args.grafana_url).hostname,
                                                 "root_url": f"{args.grafana_url}/"}}
        place = dict(args.placement)
        values: dict[str, Any] = {
            "fullnameOverride": "kps",
            # control-plane components are not scrapeable on minikube or managed clusters
            "kubeEtcd": {"enabled": False},
            "kubeControllerManager": {"enabled": False},
            "kubeScheduler": {"enabled": False},
            "kubeProxy": {"enabled": False},
            "prometheus": {"prometheusSpec": prometheus_spec | place},
            "alertmanager": {"alertmanagerSpec": alertmanager_spec | place},
            "grafana": grafana | place,
            "prometheusOperator": {"resources": r["operator"], **place,
                                   "admissionWebhooks": {"patch": {"resources": r["small"], **place}},
                                   # the reloader sidecars of Prometheus and Alertmanager; empty resources
                                   # become --config-reloader-*=0, i.e. containers without requests
                                   "prometheusConfigReloader": {"resources": r["small"]}},
            "kube-state-metrics": {"resources": r["kube_state_metrics"], **place},
            # a DaemonSet on every node: the chart's own toleration (any NoSchedule taint) is kept
            "prometheus-node-exporter": {"resources": r["node_exporter"]},
        }
        if not args.node_level:
            values |= NO_NODE_LEVEL
            values["prometheusOperator"]["kubeletService"] = {"enabled": False}  # lives in kube-system
        return values


# What GKE Autopilot refuses (kube-prometheus-stack 83.6.0 keys): node-exporter's host PID, network
# and paths, and objects in the managed kube-system namespace — the CoreDNS Service and the kubelet
# Service the operator maintains there. Without the kubelet job its absent() alert would fire forever.
NO_NODE_LEVEL: dict[str, Any] = {
    "nodeExporter": {"enabled": False},
    "kubelet": {"enabled": False},
    "coreDns": {"enabled": False},
    "kubeDns": {"enabled": False},
    "defaultRules": {"rules": {"nodeExporterAlerting": False, "nodeExporterRecording": False, "node": False},
                     "disabled": {"KubeletDown": True}},
}
