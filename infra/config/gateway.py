"""`gateway`: Istio's ingress gateway, its exposure and TLS."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from infra.config.base import Model, Resources


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
