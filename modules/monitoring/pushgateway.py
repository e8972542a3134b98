"""A Prometheus Pushgateway for batch jobs (the workloads' daily quality monitors).

A CronJob lives for seconds, Prometheus scrapes every 30 s: the job pushes its gauges here and
Prometheus scrapes them with their own labels (`honorLabels`). Only the given namespaces may push.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules import kube

PORT = 9091
UID = 65534  # the image's `nobody` user


@dataclass(frozen=True)
class PushgatewayArgs:
    namespace: pulumi.Input[str]
    image: str
    resources: Mapping[str, Any]
    pusher_namespaces: Sequence[pulumi.Input[str]]  # who may push (and the monitoring namespace scrapes)
    monitoring_namespace: pulumi.Input[str]


class Pushgateway(pulumi.ComponentResource):
    url: pulumi.Output[str]

    def __init__(self, name: str, args: PushgatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:monitoring:Pushgateway", name, None, opts)
        k8s.apps.v1.Deployment(
            name,
            metadata=kube.metadata("pushgateway", args.namespace, "monitoring"),
            spec={
                "replicas": 1,
                "selector": {"match_labels": kube.selector("pushgateway")},
                "template": {
                    "metadata": {"labels": kube.labels("pushgateway", "monitoring")},
                    "spec": {
                        "automount_service_account_token": False,
                        "security_context": kube.pod_security(UID),
                        "containers": [{
                            "name": "pushgateway",
                            "image": args.image,
                            "ports": [{"name": "http", "container_port": PORT}],
                            "resources": dict(args.resources),
                            "security_context": kube.CONTAINER_SECURITY,
                            "readiness_probe": kube.http_probe("/-/ready", "http"),
                            "liveness_probe": kube.http_probe("/-/healthy", "http", period=30),
                        }],
                    },
                },
            },
            opts=kube.child(self),
        )
        service = k8s.core.v1.Service(
            name,
            metadata=kube.metadata("pushgateway", args.namespace, "monitoring"),
            spec={"selector": kube.selector("pushgateway"),
                  "ports": [{"name": "http", "port": PORT, "target_port": "http"}]},
            opts=kube.child(self),
        )
        # scraped with the pushed series' own job/instance labels (honorLabels)
        k8s.apiextensions.CustomResource(
            f"{name}-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=kube.metadata("pushgateway", args.namespace, "monitoring"),
            spec={"selector": {"matchLabels": kube.selector("pushgateway")},
                  "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s", "honorLabels": True}]},
            opts=kube.child(self),
        )
        sources = [args.monitoring_namespace, *args.pusher_namespaces]
        kube.ingress_policy(name, args.namespace, "monitoring", "pushgateway", [{
            "from_": [{"namespace_selector": {"match_labels": {"kubernetes.io/metadata.name": ns}}} for ns in sources],
            "ports": [{"port": PORT, "protocol": "TCP"}],
        }], kube.child(self))
        self.url = pulumi.Output.concat("http://", service.metadata.name, ".", args.namespace,
                                        f".svc.cluster.local:{PORT}")
        self.register_outputs({"url": self.url})
