"""`kubernetes` and `namespaces`: how to reach the cluster and where the platform lives in it."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from infra.config.base import DNS_LABEL, Model


class KubernetesConfig(Model):
    context: str | None = Field(default=None, description="kubeconfig context (minikube/existing)")
    kubeconfig: str | None = Field(default=None, description="kubeconfig path; default ~/.kube/config")
    version: str = Field(description="Kubernetes minor version the manifests are validated against")
    storage_class: str | None = Field(default=None, description="StorageClass for PVCs; unset = cluster default")
    load_balancers: bool = Field(description="the cluster gives LoadBalancer Services an address (a cloud, "
                                             "MetalLB, kube-vip…); without one the gateway must not be a LoadBalancer")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not re.match(r"^1\.(2[5-9]|3[0-7])$", v):
            raise ValueError("a Kubernetes minor version from '1.25' to '1.37' is allowed")
        return v


class Namespaces(Model):
    platform: str
    mlflow: str
    serving: str
    monitoring: str
    workloads: str = Field(description="training and batch Jobs of the demo workloads")

    @field_validator("*")
    @classmethod
    def _label(cls, v: str) -> str:
        if not DNS_LABEL.match(v):
            raise ValueError("a DNS label (lowercase letters, digits, '-', at most 63) is allowed")
        return v
