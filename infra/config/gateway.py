"""`gateway`: Istio's ingress gateway, its exposure and TLS."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from infra.config.base import Image, Model, Resources

OAUTH2_PROXY_IMAGE = Image(repository="quay.io/oauth2-proxy/oauth2-proxy", tag="v7.15.3")  # chart 10.7.0's appVersion


class TlsConfig(Model):
    enabled: bool = Field(description="HTTPS on the gateway via cert-manager; default: not dev")
    issuer: Literal["selfsigned", "letsencrypt"] = Field(
        default="selfsigned", description="letsencrypt needs public DNS for gateway.domain and tls.email")
    email: str | None = Field(default=None, description="ACME account e-mail (letsencrypt)")
    cert_manager_version: str = Field(description="cert-manager Helm chart version")


class DnsConfig(Model):
    """Public DNS for the gateway's hosts on gke/eks: A records mlflow./grafana./models.<domain> → the
    gateway's LoadBalancer address, and Let's Encrypt over DNS-01 (cert-manager writes the TXT records
    as its own workload identity: Cloud DNS on gke, Route 53 with IRSA on eks; no key anywhere)."""

    zone: str = Field(description="the zone holding gateway.domain: Cloud DNS managed-zone name (gke) or "
                                  "Route 53 hosted-zone id (eks)")
    project: str | None = Field(default=None, description="gke: project of the managed zone; default gcp.project")
    ttl: int = Field(default=300, ge=30, le=86400, description="seconds resolvers cache the records")


class SsoConfig(Model):
    """Browser sign-in in front of MLflow and Grafana: oauth2-proxy as the gateway's external
    authorizer, an OIDC client of `gateway.auth.issuer` (docs/decisions/0019-endpoint-authentication.md).
    Requests carrying `Authorization: Basic …` (MLflow clients, CI, Grafana API scripts) skip it and
    meet the application's own login, as before."""

    client_id: str = Field(min_length=1, description="OIDC client id registered at the issuer (redirect URIs: "
                                                     "https://mlflow.<domain>/oauth2/callback, grafana. the same)")
    client_secret: SecretStr = Field(description="OIDC client secret; `pulumi config set --secret --path "
                                                 "gateway.auth.sso.clientSecret`")
    email_domains: list[str] = Field(default=["*"], min_length=1,
                                     description="e-mail domains allowed to sign in ('*': any account of the issuer)")
    allowed_groups: list[str] = Field(default_factory=list,
                                      description="only members of these groups (the issuer's groups claim); empty: any")
    image: Image = Field(default=OAUTH2_PROXY_IMAGE, description="oauth2-proxy's image (pulled as pinned)")
    resources: Resources = Field(default=Resources(cpu="10m", memory="32Mi", memory_limit="128Mi"),
                                 description="oauth2-proxy's container (a Go binary checking a cookie per request)")


class AuthConfig(Model):
    """Who may call model endpoints at the gateway (docs/decisions/0019-endpoint-authentication.md).

    `jwt`: a token of `issuer` is required on `/seldon/<tenant>/…` (its `tenantClaim` must name the
    tenant, or one of `adminValues`) and on the platform's own models (any subject of the issuer),
    except the namespaces listed in `anonymous`. A request with an invalid, expired, wrong-issuer or
    wrong-audience token is rejected everywhere on the gateway. Unset on dev/staging: anonymous."""

    mode: Literal["anonymous", "jwt"] = Field(description="anonymous: endpoints are open (dev default); jwt: "
                                                         "tokens of gateway.auth.issuer; required on prod stacks")
    issuer: str | None = Field(default=None, description="OIDC issuer (the tokens' `iss`), e.g. "
                                                        "https://keycloak.example.org/realms/class")
    jwks_uri: str | None = Field(default=None, pattern=r"^https?://", description="its JSON Web Key Set URL; default: the issuer's OIDC "
                                                          "discovery document (istiod fetches it)")
    jwks: str | None = Field(default=None, description="the key set inline (JSON), for issuers istiod cannot reach")
    audiences: list[str] = Field(default_factory=list, description="accepted `aud` values (at least one in jwt mode)")
    tenant_claim: str = Field(default="tenant", pattern=r"^[^\[\]]+$",
                              description="claim naming the caller's tenant (a string or a list, e.g. groups)")
    tenant_value: str = Field(default="{tenant}", description="the claim value that admits a tenant; {tenant} is "
                                                             "its name (e.g. 'students/{tenant}')")
    admin_values: list[str] = Field(default_factory=list, description="claim values admitted to every tenant's "
                                                                      "models (the professor)")
    anonymous: list[str] = Field(default_factory=list, description="namespaces (tenants, or namespaces.serving) "
                                                                   "whose endpoints stay open in jwt mode")
    sso: SsoConfig | None = Field(default=None, description="oauth2-proxy sign-in for MLflow and Grafana "
                                                            "(needs issuer)")

    @field_validator("tenant_value")
    @classmethod
    def _names_tenant(cls, v: str) -> str:
        if "{tenant}" not in v or v.replace("{tenant}", "").count("{") or "*" in v:
            raise ValueError(f"{v!r}: a value containing {{tenant}} once and no other braces or '*' is allowed")
        return v

    @field_validator("jwks")
    @classmethod
    def _key_set(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            keys = json.loads(v).get("keys")
        except (ValueError, AttributeError):
            keys = None
        if not isinstance(keys, list) or not keys:
            raise ValueError("a JSON Web Key Set ({\"keys\": [...]}, RFC 7517) is allowed")
        return v

    @model_validator(mode="after")
    def _complete(self) -> AuthConfig:
        problems = []
        if (self.mode == "jwt" or self.sso) and not self.issuer:
            problems.append("issuer: required with mode jwt and with sso (the OIDC issuer URL)")
        if self.mode == "jwt" and not self.audiences:
            problems.append("audiences: at least one in mode jwt (Envoy checks no audience without)")
        if self.jwks and self.jwks_uri:
            problems.append("jwks, jwksUri: set one (Istio's JWTRule takes only one)")
        if self.mode == "anonymous" and (self.anonymous or self.admin_values):
            problems.append("anonymous, adminValues: only read in mode jwt")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def auth_problems(auth: AuthConfig | None, environment: str, tenants: Collection[str], serving_namespace: str,
                  deployed: bool) -> list[tuple[str, Any, str]]:
    """(key, value, what is allowed): `anonymous` names namespaces that serve models; a prod stack
    being deployed (`deployed`: the program and `mlops` pass the stack) states who may call them."""
    if auth is None:
        if deployed and environment == "prod":
            return [("gateway.auth.mode", None, "required on prod stacks (docs/decisions/0019-endpoint-"
                     "authentication.md): allowed jwt with gateway.auth.issuer, or anonymous to keep endpoints open")]
        return []
    unknown = sorted(set(auth.anonymous) - {*tenants, serving_namespace})
    if unknown:
        return [("gateway.auth.anonymous", unknown, f"not a tenant nor namespaces.serving ({serving_namespace!r}): "
                 "allowed those namespaces")]
    return []


class GatewayConfig(Model):
    """Istio ingress gateway: one entry point for models, MLflow and Grafana."""

    istio_version: str = Field(description="Istio Helm charts version (base, istiod, gateway)")
    domain: str = Field(description="hosts are mlflow.<domain>, grafana.<domain>; models under /seldon/ on any host")
    service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"] = Field(
        description="Service type of the ingress gateway: ClusterIP (minikube: `make up` port-forwards it), "
                    "NodePort (existing: 30080/30443), LoadBalancer (gke/eks; needs kubernetes.loadBalancers)")
    replicas: int = Field(ge=1, le=10)
    istiod_resources: Resources
    gateway_resources: Resources
    tls: TlsConfig
    dns: DnsConfig | None = Field(default=None, description="DNS records and DNS-01 certificates (gke/eks); "
                                                            "unset: records are yours, HTTP-01 for letsencrypt")
    auth: AuthConfig | None = Field(default=None, description="authentication at the gateway; unset: anonymous "
                                                              "(dev/staging); prod stacks must set auth.mode")
