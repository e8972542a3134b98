"""What the cloud sections share: CIDRs, node pools, physical name prefixes."""

from __future__ import annotations

import ipaddress
import re

from pydantic import Field, field_validator, model_validator

from infra.config.base import Model


def private_cidr(v: str) -> str:
    try:
        network = ipaddress.ip_network(v, strict=True)
    except ValueError:
        raise ValueError("an IPv4 network in CIDR notation such as '10.0.0.0/16' is allowed") from None
    if network.version != 4 or not network.is_private:
        raise ValueError("a private (RFC 1918) IPv4 range is allowed")
    return v


def cidr(v: str) -> str:
    try:
        ipaddress.ip_network(v, strict=True)
    except ValueError:
        raise ValueError("a network in CIDR notation such as '203.0.113.0/24' is allowed") from None
    return v


NAME_PREFIX = Field(default=None, description="prefix of physical names (cluster, database, identities, "
                                                "buckets); default `mlops-<stack>`")


class NodePool(Model):
    """Identical nodes; machine types and bounds live here so a cost tool can read them."""

    machine_type: str = Field(description="GCE machine type (gke) / EC2 instance type (eks)")
    min_nodes: int = Field(ge=0, le=1000, description="autoscaling lower bound (per zone on regional GKE)")
    max_nodes: int = Field(ge=1, le=1000, description="autoscaling upper bound (per zone on regional GKE)")
    spot: bool = Field(default=False, description="spot capacity: cheaper, can be reclaimed at any time")
    disk_gi: int = Field(default=50, ge=20, le=16384, description="boot disk size")

    @model_validator(mode="after")
    def _bounds(self) -> NodePool:
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"minNodes {self.min_nodes} is above maxNodes {self.max_nodes}")
        return self


def zone_letter(v: str) -> str:
    if not re.fullmatch(r"[a-z]", v):
        raise ValueError("a zone letter such as 'b' is allowed")
    return v


def valid_name_prefix(v: str | None) -> str | None:
    if v is not None and not re.fullmatch(r"[a-z][a-z0-9-]{1,15}[a-z0-9]", v):
        raise ValueError("3-17 lowercase letters, digits and '-' (starting with a letter) are allowed")
    return v


class CloudAccount(Model):
    """What both clouds' sections carry: control-plane reachability, bucket versioning, physical names."""

    private_endpoint: bool = Field(default=False, description="control plane reachable only from the VPC")
    authorized_networks: list[str] = Field(default=[], description="CIDRs allowed to reach the control plane's "
                                           "public endpoint; [] = any (refused on prod unless privateEndpoint)")
    noncurrent_version_days: int = Field(ge=1, le=3650, description="days a replaced object version is kept")
    name_prefix: str | None = NAME_PREFIX

    @field_validator("authorized_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        return [cidr(c) for c in v]

    @field_validator("name_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        return valid_name_prefix(v)
