"""One entry point for the platform: Istio's ingress gateway (ingress-nginx is retired).

Istio is what Seldon Core v1 routes through: the operator writes a VirtualService per model under
`/seldon/<namespace>/<name>/` on the Gateway made here. MLflow and Grafana get host-based routes on
the same Gateway. With TLS on, cert-manager issues one certificate for the platform's host names
and plain HTTP to them is redirected to HTTPS.

How clients reach the gateway depends on its Service type (docs/decisions/0005-gateway-exposure.md):
ClusterIP through `kubectl port-forward` (minikube), NodePort on fixed node ports (bare metal),
LoadBalancer on 80/443 (clouds, or clusters with a load-balancer provisioner). The exported URLs
carry that port, so they work as printed. No sidecars are injected: Istio is an edge gateway here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from modules import kube
from modules.gateway.auth import GatewayAuth, JwtPolicy, Sso, extension_provider
from modules.platform.contract import PublicDns

ISTIO_REPO = "https://istio-release.storage.googleapis.com/charts"
CERT_MANAGER_REPO = "https://charts.jetstack.io"
GATEWAY_NAME = "platform-gateway"
TLS_SECRET = "platform-gateway-tls"
ISSUER_NAME = "platform-issuer"
INGRESS_RELEASE = "istio-ingressgateway"  # also the name of its Service (the chart names it after the release)
LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
# Istio's own ingress class (meshConfig.ingressClass, default "istio", ingressControllerMode STRICT
# in istio 1.30.3 pkg/config/mesh/mesh.go): istiod routes an Ingress only if it carries this
# `kubernetes.io/ingress.class` annotation, or names an IngressClass with Istio's controller.
ISTIO_INGRESS_CLASS = "istio"
ISTIO_INGRESS_CONTROLLER = "istio.io/ingress-controller"

ServiceType = Literal["LoadBalancer", "NodePort", "ClusterIP"]
# Where clients reach the gateway, per Service type: the local ports of the port-forward
# `scripts/up.sh` starts (ClusterIP), fixed node ports (NodePort); a LoadBalancer listens on 80/443.
PORT_FORWARD = {"http": 8080, "https": 8443}
NODE_PORTS = {"http": 30080, "https": 30443}
SERVICE_PORTS = {"http": 80, "https": 443}


def client_port(service_type: ServiceType, scheme: Literal["http", "https"]) -> int | None:
    """The port clients put in URLs (and so in the Host header); None: the scheme's default."""
    if service_type == "ClusterIP":
        return PORT_FORWARD[scheme]
    if service_type == "NodePort":
        return NODE_PORTS[scheme]
    return None


def public_url(host: str, service_type: ServiceType, tls: bool) -> str:
    """`<scheme>://<host>[:<port>]`: what a browser or client on the user's machine opens."""
    scheme: Literal["http", "https"] = "https" if tls else "http"
    port = client_port(service_type, scheme)
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def port_forward_command(namespace: str, tls: bool) -> str:
    """The port-forward that makes a ClusterIP gateway reachable at `public_url` (127.0.0.1)."""
    ports = [f"{PORT_FORWARD[s]}:{SERVICE_PORTS[s]}" for s in ("http", "https") if s == "http" or tls]
    return f"kubectl -n {namespace} port-forward svc/{INGRESS_RELEASE} {' '.join(ports)}"


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
    hosts: Sequence[str]  # the names clients use: the certificate covers exactly these
    service_type: ServiceType
    istiod_resources: Mapping[str, Any]
    gateway_resources: Mapping[str, Any]  # must set limits.cpu (see _gateway_resources)
    gateway_replicas: int
    tls: Tls | None = None
    service_annotations: Mapping[str, str] = field(default_factory=dict)  # the cloud's load balancer type
    dns: PublicDns | None = None  # records + DNS-01 in the cloud's zone (gateway.dns); None: HTTP-01
    jwt: JwtPolicy | None = None  # tokens on the model endpoints (modules/gateway/auth.py); None: anonymous
    sso: Sso | None = None  # oauth2-proxy sign-in for the MLflow and Grafana hosts


def _gateway_resources(resources: Mapping[str, Any]) -> dict[str, Any]:
    """The gateway chart (istio 1.30.3, manifests/charts/gateway) keeps its defaults under
    `_internal_defaults_do_not_set` and merges the values over them with mustMergeOverwrite, which
    never overwrites with an empty value: a CPU limit left out stays the chart's 2000m."""
    if not (resources.get("limits") or {}).get("cpu"):
        raise ValueError("gateway.gatewayResources.cpuLimit: unset, the Istio gateway chart 1.30.3 keeps its own "
                         "2000m CPU limit; set the limit the gateway should have (e.g. '1')")
    return {"requests": dict(resources["requests"]), "limits": dict(resources["limits"])}


def _service(service_type: ServiceType, annotations: Mapping[str, str],
             extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The chart's Service; as a NodePort on the fixed ports the exported URLs name."""
    service: dict[str, Any] = {"type": service_type, "annotations": dict(annotations), **(extra or {})}
    if service_type == "NodePort":  # a list in values replaces the chart's whole list
        service["ports"] = [
            {"name": "status-port", "port": 15021, "protocol": "TCP", "targetPort": 15021},
            *({"name": name, "port": SERVICE_PORTS[scheme], "protocol": "TCP", "targetPort": SERVICE_PORTS[scheme],
               "nodePort": NODE_PORTS[scheme]} for name, scheme in (("http2", "http"), ("https", "https"))),
        ]
    return service


class IstioGateway(pulumi.ComponentResource):
    """Istio (base CRDs, istiod, ingress gateway) and the platform's Gateway object.

    Every release is atomic, so Helm waits for it (install.go: `Wait = Wait || Atomic`); the
    gateway's Service type decides whether that wait can end (a LoadBalancer needs an address):
    `release` and `service_type` are what the plan-integrity check reads.
    """

    gateway: str  # "<namespace>/<name>", for Seldon's VirtualServices
    ready: pulumi.Resource
    release: k8s.helm.v3.Release  # the ingress gateway's release (its Service)
    cert_manager: k8s.helm.v3.Release | None = None  # with TLS; KServe's webhook certificate uses it too
    service_type: ServiceType

    def __init__(self, name: str, args: IstioGatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:gateway:IstioGateway", name, None, opts)
        self._args = args
        self.service_type = args.service_type
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
            "meshConfig": {"accessLogFile": "/dev/stdout",
                           **({"extensionProviders": [extension_provider(args.namespace)]} if args.sso else {})},
        }, [base])
        ingress = istio_chart("gateway", INGRESS_RELEASE, {
            "replicaCount": args.gateway_replicas,
            "autoscaling": {"enabled": False},
            "resources": _gateway_resources(args.gateway_resources),
            "service": _service(args.service_type, args.service_annotations,
                                args.dns.service_values if args.dns else None),
            "labels": {"istio": "ingressgateway"},
        }, [istiod])
        self.ready = self.release = ingress
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
        if args.tls:
            self._https_redirect(name, args, ns)
        if args.jwt or args.sso:
            GatewayAuth(f"{name}-auth", ns, args.jwt, args.sso,
                        opts=pulumi.ResourceOptions.merge(kube.child(self), kube.after([ingress])))
        self.register_outputs({"gateway": self.gateway})

    @property
    def tls(self) -> bool:
        return self._args.tls is not None

    def url(self, host: str) -> str:
        return public_url(host, self._args.service_type, self.tls)

    @property
    def port_forward(self) -> str | None:
        """The command that makes a ClusterIP gateway reachable at its URLs; None for other types."""
        if self._args.service_type != "ClusterIP":
            return None
        return port_forward_command(self._args.namespace, self.tls)

    @staticmethod
    def _servers(args: IstioGatewayArgs) -> list[dict[str, Any]]:
        """HTTP on 80 and, with TLS, HTTPS on 443. No `httpsRedirect` on the HTTP server: Istio
        turns it into `require_tls` on every virtual host the server covers, which would also
        redirect cert-manager's HTTP-01 challenge (see `_https_redirect`)."""
        hosts = ["*"]
        servers = [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts}]
        if args.tls is not None:
            servers.append({"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": hosts,
                            "tls": {"mode": "SIMPLE", "credentialName": TLS_SECRET}})
        return servers

    def _https_redirect(self, name: str, args: IstioGatewayArgs, ns: pulumi.Input[str]) -> None:
        """Port 80 of the platform's hosts redirects to HTTPS (on the port clients use).

        A catch-all route: istiod sorts it after the exact-path route of an ACME challenge Ingress
        on the same host (route.SortVHostRoutes), so HTTP-01 still reaches cert-manager's solver.
        On 443 this VirtualService has no route and adds nothing; the platform's routes match only 443.
        """
        redirect: dict[str, Any] = {"scheme": "https", "redirectCode": 301}
        port = client_port(args.service_type, "https")
        if port:
            redirect["port"] = port
        k8s.apiextensions.CustomResource(
            f"{name}-https-redirect", api_version="networking.istio.io/v1", kind="VirtualService",
            metadata=kube.metadata("https-redirect", ns, "gateway"),
            spec={"hosts": list(args.hosts), "gateways": [self.gateway],
                  "http": [{"name": "https-redirect", "match": [{"port": 80}], "redirect": redirect}]},
            opts=kube.child(self, depends_on=[self.ready]),
        )

    def _tls(self, name: str, args: IstioGatewayArgs, ns: pulumi.Input[str],
             after: list[pulumi.Resource]) -> list[pulumi.Resource]:
        """cert-manager, an issuer and the gateway's certificate (in the gateway's namespace)."""
        tls = args.tls
        assert tls is not None
        r = dict(tls.resources)
        cert_manager = k8s.helm.v3.Release(
            f"{name}-cert-manager", name="cert-manager", chart="cert-manager", version=tls.cert_manager_version,
            namespace="cert-manager", create_namespace=True,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CERT_MANAGER_REPO),
            atomic=True, timeout=600,
            values={"crds": {"enabled": True}, "resources": r,
                    "webhook": {"resources": r}, "cainjector": {"resources": r}, **_dns01_values(args.dns)},
            opts=kube.child(self),
        )
        self.cert_manager = cert_manager
        issuer = k8s.apiextensions.CustomResource(
            f"{name}-issuer", api_version="cert-manager.io/v1", kind="Issuer",
            metadata=kube.metadata(ISSUER_NAME, ns, "gateway"), spec=issuer_spec(tls, args.dns),
            opts=kube.child(self, depends_on=[cert_manager]),
        )
        certificate = k8s.apiextensions.CustomResource(
            f"{name}-certificate", api_version="cert-manager.io/v1", kind="Certificate",
            metadata=kube.metadata("platform-gateway", ns, "gateway"),
            spec={"secretName": TLS_SECRET, "dnsNames": list(args.hosts),
                  "issuerRef": {"name": ISSUER_NAME, "kind": "Issuer"}},
            opts=kube.child(self, depends_on=[issuer, *after]),
        )
        return [certificate]

    def route(self, route: Route, opts: pulumi.ResourceOptions | None = None) -> k8s.apiextensions.CustomResource:
        """A host-based VirtualService from the platform gateway to a Service (on 443 only with TLS:
        port 80 of the host belongs to the HTTPS redirect)."""
        http: dict[str, Any] = {"route": [{"destination": {
            "host": pulumi.Output.concat(route.service, ".", route.namespace, ".svc.cluster.local"),
            "port": {"number": route.port}}}]}
        if self.tls:
            http["match"] = [{"port": SERVICE_PORTS["https"]}]
        return k8s.apiextensions.CustomResource(
            f"route-{route.name}",
            api_version="networking.istio.io/v1",
            kind="VirtualService",
            metadata=kube.metadata(route.name, route.namespace, "gateway"),
            spec={"hosts": [route.host], "gateways": [self.gateway], "http": [http]},
            opts=pulumi.ResourceOptions.merge(pulumi.ResourceOptions(parent=self, depends_on=[self.ready]), opts),
        )


def _dns01_values(dns: PublicDns | None) -> dict[str, Any]:
    """cert-manager's service account carries the cloud identity DNS-01 writes records as; a
    namespaced Issuer may use such ambient credentials only with --issuer-ambient-credentials
    (cert-manager v1.20 controller flag, default false; ClusterIssuers may by default)."""
    if dns is None:
        return {}
    return {"serviceAccount": {"annotations": dict(dns.cert_manager_annotations)},
            "extraArgs": ["--issuer-ambient-credentials"]}


def issuer_spec(tls: Tls, dns: PublicDns | None = None) -> dict[str, Any]:
    """Self-signed, or Let's Encrypt: over DNS-01 in the stack's zone when gateway.dns is set,
    otherwise over HTTP-01 through the gateway: cert-manager's solver makes an Ingress annotated
    with Istio's ingress class, which istiod serves on the gateway's port 80 (the names must
    resolve to the gateway, and port 80 must reach it from the internet)."""
    if tls.issuer == "selfsigned":
        return {"selfSigned": {}}
    solver = {"dns01": dict(dns.solver)} if dns is not None else {
        "http01": {"ingress": {"class": ISTIO_INGRESS_CLASS, "serviceType": "ClusterIP"}}}
    return {"acme": {
        "server": LETSENCRYPT,
        "email": tls.email,
        "privateKeySecretRef": {"name": "letsencrypt-account-key"},
        "solvers": [solver],
    }}


def tls_problems(objects: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why a plan's certificates could never be issued: what cert-manager and istiod would do with
    them, read from the manifests. Checks each Certificate against its issuer's ACME solvers."""
    issuers = {(o["kind"], _meta(o).get("namespace"), _meta(o).get("name")): o for o in objects
               if o.get("kind") in ("Issuer", "ClusterIssuer")}
    problems: list[str] = []
    for cert in (o for o in objects if o.get("kind") == "Certificate"):
        problems += _certificate_problems(cert, issuers, objects)
    return problems


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _certificate_problems(cert: Mapping[str, Any], issuers: Mapping[tuple, Mapping[str, Any]],
                          objects: Sequence[Mapping[str, Any]]) -> Iterator[str]:
    meta, spec = _meta(cert), cert.get("spec") or {}
    where = f"Certificate {meta.get('namespace')}/{meta.get('name')}"
    ref = spec.get("issuerRef") or {}
    kind = ref.get("kind", "Issuer")
    issuer = issuers.get((kind, meta.get("namespace") if kind == "Issuer" else None, ref.get("name")))
    if issuer is None:
        yield f"{where}: spec.issuerRef names {kind} {ref.get('name')!r}, which the plan does not make"
        return
    solvers = ((issuer.get("spec") or {}).get("acme") or {}).get("solvers")
    if solvers is None:
        return  # not ACME: selfSigned / CA issuers sign any name
    http01 = [s["http01"] for s in solvers if "http01" in s]
    names = spec.get("dnsNames") or []
    if http01 and len(http01) == len(solvers):
        for wildcard in (n for n in names if n.startswith("*.")):
            yield (f"{where}: spec.dnsNames {wildcard!r}: ACME cannot validate a wildcard over HTTP-01; "
                   "list the host names, or add a DNS-01 solver")
    for i, solver in enumerate(http01):
        yield from _http01_problems(f"{where}: issuer {ref.get('name')} acme.solvers[{i}].http01",
                                    solver, names, objects)


def _http01_problems(where: str, solver: Mapping[str, Any], names: Sequence[str],
                     objects: Sequence[Mapping[str, Any]]) -> Iterator[str]:
    ingress = solver.get("ingress")
    if ingress is None:
        yield (f"{where}: only the ingress solver works here (Istio's ingress controller); "
               "gatewayHTTPRoute needs Gateway API CRDs the stack does not install")
        return
    if "ingressClassName" in ingress:
        classes = {_meta(o).get("name"): (o.get("spec") or {}).get("controller")
                   for o in objects if o.get("kind") == "IngressClass"}
        if classes.get(ingress["ingressClassName"]) != ISTIO_INGRESS_CONTROLLER:
            yield (f"{where}.ingress.ingressClassName {ingress['ingressClassName']!r}: no IngressClass of that name "
                   f"with controller {ISTIO_INGRESS_CONTROLLER} in the plan, so istiod ignores the solver's Ingress; "
                   f"use ingress.class: {ISTIO_INGRESS_CLASS!r}")
    elif ingress.get("class") != ISTIO_INGRESS_CLASS:
        yield (f"{where}.ingress.class {ingress.get('class')!r}: istiod serves only Ingresses of class "
               f"{ISTIO_INGRESS_CLASS!r} (meshConfig.ingressClass); set it")
    istio_gateways = (o for o in objects
                      if o.get("kind") == "Gateway" and o.get("apiVersion", "").startswith("networking.istio.io"))
    for gateway in istio_gateways:
        for server in (gateway.get("spec") or {}).get("servers") or []:
            if server.get("port", {}).get("number") == 80 and (server.get("tls") or {}).get("httpsRedirect"):
                covered = [n for n in names if any(_host_matches(h, n) for h in server.get("hosts") or [])]
                if covered:
                    yield (f"{where}: Gateway {_meta(gateway).get('name')} redirects port 80 of {covered} to HTTPS "
                           "(tls.httpsRedirect makes the whole virtual host require TLS), so the challenge never "
                           "reaches the solver; redirect with a VirtualService route instead")


def _host_matches(pattern: str, name: str) -> bool:
    """An Istio server host (optionally `namespace/`-prefixed) covering a DNS name."""
    pattern = pattern.split("/", 1)[-1]
    return pattern == "*" or pattern == name or (pattern.startswith("*.") and name.endswith(pattern[1:]))
