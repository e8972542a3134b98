"""One entry point for the platform: Istio's ingress gateway (ingress-nginx is retired).

Istio is what Seldon Core v1 routes through: the operator writes a VirtualService per model under
`/seldon/<namespace>/<name>/` on the Gateway made here. MLflow and Grafana get host-based routes on
the same Gateway. With TLS on, cert-manager issues the certificate and HTTP redirects to HTTPS.
No sidecars are injected: the platform uses Istio as an edge gateway, not as a mesh.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from modules import kube

ISTIO_REPO = "https://istio-release.storage.googleapis.com/charts"
CERT_MANAGER_REPO = "https://charts.jetstack.io"
GATEWAY_NAME = "platform-gateway"
TLS_SECRET = "platform-gateway-tls"


@dataclass(frozen=True)
class Route:
    """`host` → `service`.`namespace`:`port` through the gateway."""

    name: str
    host: pulumi.Input[str]
    namespace: pulumi.Input[str]
    service: str
    port: int


@dataclass(frozen=True)
class Tls:
    issuer: Literal["selfsigned", "letsencrypt"]
    email: str | None
    cert_manager_version: str
    resources: Mapping[str, Any]


@dataclass(frozen=True)
class IstioGatewayArgs:
    namespace: str
    version: str
    domain: str
    service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"]
    istiod_resources: Mapping[str, Any]
    gateway_resources: Mapping[str, Any]
    gateway_replicas: int
    tls: Tls | None = None
    service_annotations: Mapping[str, str] = field(default_factory=dict)  # the cloud's load balancer type


class IstioGateway(pulumi.ComponentResource):
    """Istio (base CRDs, istiod, ingress gateway) and the platform's Gateway object."""

    gateway: str  # "<namespace>/<name>", for Seldon's VirtualServices
    ready: pulumi.Resource

    def __init__(self, name: str, args: IstioGatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:gateway:IstioGateway", name, None, opts)
        self._args = args
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={"name": args.namespace, "labels": {"app.kubernetes.io/part-of": kube.PART_OF}},
            opts=kube.child(self),
        )
        ns = namespace.metadata.name

        def istio_chart(chart: str, release: str, values: dict[str, Any], after: list[pulumi.Resource]):
            return k8s.helm.v3.Release(
                f"{name}-{chart}", name=release, chart=chart, version=args.version, namespace=ns,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=ISTIO_REPO),
                atomic=True, timeout=600, values=values, opts=kube.child(self, depends_on=after),
            )

        base = istio_chart("base", "istio-base", {"defaultRevision": "default"}, [])
        istiod = istio_chart("istiod", "istiod", {
            "pilot": {"autoscaleEnabled": False, "replicaCount": 1, "resources": dict(args.istiod_resources)},
            "global": {"proxy": {"autoInject": "disabled"}},
            "sidecarInjectorWebhook": {"enableNamespacesByDefault": False},
            "meshConfig": {"accessLogFile": "/dev/stdout"},
        }, [base])
        ingress = istio_chart("gateway", "istio-ingressgateway", {
            "replicaCount": args.gateway_replicas,
            "autoscaling": {"enabled": False},
            "resources": dict(args.gateway_resources),
            "service": {"type": args.service_type, "annotations": dict(args.service_annotations)},
            "labels": {"istio": "ingressgateway"},
        }, [istiod])
        self.ready = ingress
        self.gateway = f"{args.namespace}/{GATEWAY_NAME}"
        after_tls = self._tls(name, args, ns, [ingress]) if args.tls else []
        k8s.apiextensions.CustomResource(
            f"{name}-gateway",
            api_version="networking.istio.io/v1",
            kind="Gateway",
            metadata=kube.metadata(GATEWAY_NAME, ns, "gateway"),
            spec={"selector": {"istio": "ingressgateway"}, "servers": self._servers(args)},
            opts=kube.child(self, depends_on=[ingress, *after_tls]),
        )
        self.register_outputs({"gateway": self.gateway})

    @staticmethod
    def _servers(args: IstioGatewayArgs) -> list[dict[str, Any]]:
        hosts = ["*"]
        if args.tls is None:
            return [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts}]
        return [
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts,
             "tls": {"httpsRedirect": True}},
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": hosts,
             "tls": {"mode": "SIMPLE", "credentialName": TLS_SECRET}},
        ]

    def _tls(self, name: str, args: IstioGatewayArgs, ns: pulumi.Input[str],
             after: list[pulumi.Resource]) -> list[pulumi.Resource]:
        """cert-manager, an issuer and the gateway's wildcard certificate (in the gateway's namespace)."""
        tls = args.tls
        assert tls is not None
        r = dict(tls.resources)
        cert_manager = k8s.helm.v3.Release(
            f"{name}-cert-manager", name="cert-manager", chart="cert-manager", version=tls.cert_manager_version,
            namespace="cert-manager", create_namespace=True,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CERT_MANAGER_REPO),
            atomic=True, timeout=600,
            values={"crds": {"enabled": True}, "resources": r,
                    "webhook": {"resources": r}, "cainjector": {"resources": r}},
            opts=kube.child(self),
        )
        if tls.issuer == "letsencrypt":
            issuer_spec: dict[str, Any] = {"acme": {
                "server": "https://acme-v02.api.letsencrypt.org/directory",
                "email": tls.email,
                "privateKeySecretRef": {"name": "letsencrypt-account-key"},
                "solvers": [{"http01": {"ingress": {"ingressClassName": "istio"}}}],
            }}
        else:
            issuer_spec = {"selfSigned": {}}
        issuer = k8s.apiextensions.CustomResource(
            f"{name}-issuer", api_version="cert-manager.io/v1", kind="Issuer",
            metadata=kube.metadata("platform-issuer", ns, "gateway"), spec=issuer_spec,
            opts=kube.child(self, depends_on=[cert_manager]),
        )
        certificate = k8s.apiextensions.CustomResource(
            f"{name}-certificate", api_version="cert-manager.io/v1", kind="Certificate",
            metadata=kube.metadata("platform-gateway", ns, "gateway"),
            spec={"secretName": TLS_SECRET, "dnsNames": [args.domain, f"*.{args.domain}"],
                  "issuerRef": {"name": "platform-issuer", "kind": "Issuer"}},
            opts=kube.child(self, depends_on=[issuer, *after]),
        )
        return [certificate]

    def route(self, route: Route, opts: pulumi.ResourceOptions | None = None) -> k8s.apiextensions.CustomResource:
        """A host-based VirtualService from the platform gateway to a Service."""
        return k8s.apiextensions.CustomResource(
            f"route-{route.name}",
            api_version="networking.istio.io/v1",
            kind="VirtualService",
            metadata=kube.metadata(route.name, route.namespace, "gateway"),
            spec={
                "hosts": [route.host],
                "gateways": [self.gateway],
                "http": [{"route": [{"destination": {
                    "host": pulumi.Output.concat(route.service, ".", route.namespace, ".svc.cluster.local"),
                    "port": {"number": route.port}}}]}],
            },
            opts=pulumi.ResourceOptions.merge(pulumi.ResourceOptions(parent=self, depends_on=[self.ready]), opts),
        )
