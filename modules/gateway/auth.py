"""Authentication at the gateway: JWTs on model endpoints, OIDC sign-in for MLflow and Grafana
(docs/decisions/0019-endpoint-authentication.md).

Semantics of Istio 1.30.3 (istio/api v1.30.3 security/v1beta1/*.proto, istio/istio 1.30.3
pilot/pkg/security/): a RequestAuthentication rejects a request whose token is invalid (bad
signature, expired, another `iss`, no accepted `aud`) and *accepts* one without a token, with no
identity. So each protected endpoint also needs a DENY rule: a tenant's `/seldon/<tenant>/*` is
denied unless the token's tenant claim names the tenant (a missing claim, or no token, is denied:
`notValues` becomes a negated metadata matcher, model/model.go), the platform's own models are
denied to requests without a principal (`notRequestPrincipals: ["*"]`), and models in namespaces
the config does not name to everyone; each by path and by Seldon's routing headers. DENY policies
leave the rest of the gateway alone (an ALLOW policy would deny all it serves but what it lists).

Browser sign-in: oauth2-proxy is the gateway's external authorizer (a mesh `envoyExtAuthzHttp`
provider, a CUSTOM policy on the MLflow and Grafana hosts). Requests with `Authorization: Basic`
skip it: MLflow's clients and the CI authenticate to MLflow's own login, which still decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules import kube

GATEWAY_SELECTOR = {"istio": "ingressgateway"}  # the ingress gateway's pod label (modules/gateway)
SSO_PROVIDER = "oauth2-proxy"  # meshConfig.extensionProviders[].name
SSO_NAME = "oauth2-proxy"
SSO_PORT = 4180
SSO_UID = 65532  # the image's distroless `nonroot` user
SSO_SECRET = "oauth2-proxy"  # keys client-id, client-secret, cookie-secret
ENDPOINT_POLICY = "model-endpoints"
ENGINE_ROOTS = ("/seldon/", "/kserve/")  # the engines' gateway paths: /<engine>/<namespace>/<model>/…


@dataclass(frozen=True)
class JwtPolicy:
    """Tokens of one OIDC issuer on the model endpoints."""

    issuer: str
    audiences: Sequence[str]
    tenant_claim: str
    tenant_value: str  # "{tenant}" → the claim value that admits a tenant
    admin_values: Sequence[str] = ()  # claim values admitted to every tenant
    jwks_uri: str | None = None
    jwks: str | None = None  # inline key set; neither: istiod reads the issuer's discovery document
    engine: str = "seldon"  # the platform's models are under /<engine>/<namespace>/
    tenants: Sequence[str] = ()  # tenant namespaces whose endpoints need the tenant's claim
    platform: Sequence[str] = ()  # the platform's model namespaces: any principal of the issuer
    open: Sequence[str] = ()  # namespaces left anonymous; every other one is denied

    def tenant_values(self, tenant: str) -> list[str]:
        return [self.tenant_value.replace("{tenant}", tenant), *self.admin_values]


@dataclass(frozen=True)
class Sso:
    """oauth2-proxy in front of `hosts`, an OIDC client of `issuer`."""

    issuer: str
    client_id: str
    client_secret: pulumi.Input[str]  # a secret
    cookie_secret: pulumi.Input[str]  # a secret of 16, 24 or 32 bytes
    cookie_domain: str  # ".<domain>": one sign-in for every platform host
    hosts: Sequence[str]
    secure: bool  # TLS on the gateway: the cookie is HTTPS-only
    image: pulumi.Input[str]
    resources: Mapping[str, Any]
    email_domains: Sequence[str] = ("*",)
    allowed_groups: Sequence[str] = ()


def request_authentication(jwt: JwtPolicy) -> dict[str, Any]:
    """The RequestAuthentication spec: tokens from `Authorization: Bearer` (the default location),
    not forwarded to the models."""
    rule: dict[str, Any] = {"issuer": jwt.issuer, "audiences": list(jwt.audiences), "forwardOriginalToken": False}
    if jwt.jwks_uri:
        rule["jwksUri"] = jwt.jwks_uri
    if jwt.jwks:
        rule["jwks"] = jwt.jwks
    return {"selector": {"matchLabels": dict(GATEWAY_SELECTOR)}, "jwtRules": [rule]}


SELDON_HEADERS = [{"key": "request.headers[seldon]", "values": ["*"]}]


def _guarded(namespace: str, root: str, sources: list[dict[str, Any]] | None = None,
             conditions: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Two DENY rules for one namespace's models, matching requests from `sources` or meeting
    `conditions`: by path (`<root><namespace>/*`), and by the headers Seldon 1.17.1's gRPC route
    matches on (operator/controllers/seldondeployment_controller.go: `seldon: <name>` and
    `namespace: <ns>`, on any host, any path matching `.*tensorflow.*|.*seldon.protos.*|.*inference.*`)."""
    source = {"from": sources} if sources else {}
    by_path = {**source, "to": [{"operation": {"paths": [f"{root}{namespace}/*"]}}]}
    if conditions:
        by_path["when"] = list(conditions)
    by_header = {**source, "when": [*SELDON_HEADERS, {"key": "request.headers[namespace]", "values": [namespace]},
                                    *conditions]}
    return [by_path, by_header]


def endpoint_policy(jwt: JwtPolicy) -> dict[str, Any]:
    """The DENY AuthorizationPolicy spec: per tenant, per platform namespace, and for every other
    namespace (a model deployed where the config does not say is closed, not silently open)."""
    claim = f"request.auth.claims[{jwt.tenant_claim}]"
    rules = [r for t in jwt.tenants
             for r in _guarded(t, "/seldon/", conditions=[{"key": claim, "notValues": jwt.tenant_values(t)}])]
    anonymous = [{"source": {"notRequestPrincipals": ["*"]}}]
    rules += [r for n in jwt.platform for r in _guarded(n, f"/{jwt.engine}/", sources=anonymous)]
    paths = {*(f"/seldon/{n}/*" for n in (*jwt.tenants, *jwt.open)),
             *(f"/{jwt.engine}/{n}/*" for n in (*jwt.platform, *jwt.open))}
    rules.append({"to": [{"operation": {"paths": [f"{root}*" for root in ENGINE_ROOTS], "notPaths": sorted(paths)}}]})
    rules.append({"when": [*SELDON_HEADERS, {"key": "request.headers[namespace]", "values": ["*"],
                                             "notValues": [*jwt.tenants, *jwt.platform, *jwt.open]}]})
    return {"selector": {"matchLabels": dict(GATEWAY_SELECTOR)}, "action": "DENY", "rules": rules}


def _with_ports(hosts: Sequence[str]) -> list[str]:
    """Istio matches `hosts` against the whole Host header, port included (matcher.HostMatcher:
    exact, case-insensitive); clients of a port-forward or NodePort send `host:port`."""
    return [h for host in hosts for h in (host, f"{host}:*")]


def sso_policy(sso: Sso) -> dict[str, Any]:
    """The CUSTOM AuthorizationPolicy spec sending browser requests of `hosts` to oauth2-proxy."""
    return {"selector": {"matchLabels": dict(GATEWAY_SELECTOR)}, "action": "CUSTOM",
            "provider": {"name": SSO_PROVIDER},
            "rules": [{"to": [{"operation": {"hosts": _with_ports(sso.hosts)}}],
                       "when": [{"key": "request.headers[authorization]", "notValues": ["Basic *"]}]}]}


def extension_provider(namespace: str) -> dict[str, Any]:
    """The meshConfig extension provider (istio/api v1.30.3 mesh/v1alpha1/config.proto,
    EnvoyExternalAuthorizationHttpProvider). Unset `headersToDownstreamOnDeny` passes all of
    oauth2-proxy's headers back, so its sign-in redirect and cookie reach the browser; unset
    `headersToUpstreamOnAllow` leaves the request as it was: no application trusts a header from it."""
    return {"name": SSO_PROVIDER, "envoyExtAuthzHttp": {
        "service": f"{SSO_NAME}.{namespace}.svc.cluster.local", "port": SSO_PORT,
        "includeRequestHeadersInCheck": ["cookie", "x-forwarded-proto"],
    }}


def oauth2_proxy_args(sso: Sso) -> list[str]:
    """oauth2-proxy v7.15.3 flags: an authorizer only (`static://200`), the redirect back derived
    from the request's host (`--reverse-proxy` reads X-Forwarded-Proto)."""
    args = ["--provider=oidc", f"--oidc-issuer-url={sso.issuer}", f"--http-address=0.0.0.0:{SSO_PORT}",
            "--upstream=static://200", "--reverse-proxy=true",
            "--skip-provider-button=true", "--silence-ping-logging=true",
            f"--cookie-domain={sso.cookie_domain}", f"--whitelist-domain={sso.cookie_domain}",
            f"--cookie-secure={'true' if sso.secure else 'false'}"]
    args += [f"--email-domain={d}" for d in sso.email_domains]
    args += [f"--allowed-group={g}" for g in sso.allowed_groups]
    return args


class GatewayAuth(pulumi.ComponentResource):
    """The gateway's RequestAuthentication and DENY policy (with `jwt`), and oauth2-proxy with its
    CUSTOM policy (with `sso`), in the gateway's namespace."""

    def __init__(self, name: str, namespace: pulumi.Input[str], jwt: JwtPolicy | None, sso: Sso | None,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:gateway:GatewayAuth", name, None, opts)
        if jwt is not None:
            self._policy(f"{name}-jwt", "RequestAuthentication", "models-jwt", namespace, request_authentication(jwt))
            self._policy(f"{name}-endpoints", "AuthorizationPolicy", ENDPOINT_POLICY, namespace, endpoint_policy(jwt))
        if sso is not None:
            self._oauth2_proxy(name, namespace, sso)
            self._policy(f"{name}-sso", "AuthorizationPolicy", "sso", namespace, sso_policy(sso))
        self.register_outputs({})

    def _policy(self, name: str, kind: str, object_name: str, namespace: pulumi.Input[str],
                spec: dict[str, Any]) -> None:
        k8s.apiextensions.CustomResource(
            name, api_version="security.istio.io/v1", kind=kind,
            metadata=kube.metadata(object_name, namespace, "gateway"), spec=spec, opts=kube.child(self))

    def _oauth2_proxy(self, name: str, namespace: pulumi.Input[str], sso: Sso) -> None:
        inside = kube.child(self)
        secret = k8s.core.v1.Secret(
            f"{name}-oauth2-proxy", metadata=kube.metadata(SSO_SECRET, namespace, "gateway"), type="Opaque",
            string_data={"client-id": sso.client_id, "client-secret": sso.client_secret,
                         "cookie-secret": sso.cookie_secret}, opts=inside)
        env = [kube.secret_env(f"OAUTH2_PROXY_{key.upper().replace('-', '_')}", secret.metadata.name, key)
               for key in ("client-id", "client-secret", "cookie-secret")]
        labels = kube.labels(SSO_NAME, "gateway")
        k8s.apps.v1.Deployment(
            f"{name}-oauth2-proxy", metadata=kube.metadata(SSO_NAME, namespace, "gateway"),
            spec={
                "replicas": 1, "selector": {"match_labels": kube.selector(SSO_NAME)},
                "template": {"metadata": {"labels": labels}, "spec": {
                    "automount_service_account_token": False,
                    "security_context": kube.pod_security(SSO_UID),
                    "containers": [{
                        "name": SSO_NAME, "image": sso.image, "args": oauth2_proxy_args(sso), "env": env,
                        "ports": [{"name": "http", "container_port": SSO_PORT}],
                        "readiness_probe": kube.http_probe("/ping", SSO_PORT),
                        "liveness_probe": kube.http_probe("/ping", SSO_PORT, failures=6),
                        "resources": dict(sso.resources), "security_context": kube.CONTAINER_SECURITY,
                    }],
                }},
            }, opts=inside)
        kube.ingress_policy(f"{name}-oauth2-proxy", namespace, "gateway", SSO_NAME, [
            {"from_": [{"pod_selector": {"match_labels": dict(GATEWAY_SELECTOR)}}],  # only the gateway asks it
             "ports": [{"port": SSO_PORT, "protocol": "TCP"}]}], inside)
        k8s.core.v1.Service(
            f"{name}-oauth2-proxy", metadata=kube.metadata(SSO_NAME, namespace, "gateway"),
            spec={"selector": kube.selector(SSO_NAME), "ports": [{"name": "http", "port": SSO_PORT,
                                                                  "target_port": SSO_PORT}]}, opts=inside)
