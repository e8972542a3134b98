"""`gcp`: Google Cloud (platform gke)."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from infra.config.base import Model
from infra.config.cloud import CloudAccount, NodePool, private_cidr, zone_letter


class GkeNodePool(NodePool):
    @field_validator("machine_type")
    @classmethod
    def _gce(cls, v: str) -> str:
        if not re.match(r"^[a-z][a-z0-9]*-[a-z0-9]+(-[0-9]+){0,2}$", v):
            raise ValueError("a Compute Engine machine type such as 'e2-standard-4' is allowed")
        return v


class GkeNodePools(Model):
    system: GkeNodePool = Field(description="kube-system and platform services (MLflow)")
    workload: GkeNodePool = Field(description="model servers and jobs")


def cloud_sql_tier_problem(tier: str) -> str | None:
    """Why `tier` is not a Cloud SQL tier PostgreSQL can run on, or None (rules of the Cloud SQL docs)."""
    if tier in ("db-f1-micro", "db-g1-small"):
        return None
    if m := re.fullmatch(r"db-custom-([0-9]+)-([0-9]+)", tier):
        cpus, mib = int(m[1]), int(m[2])
        if not (cpus == 1 or (cpus % 2 == 0 and 2 <= cpus <= 96)):
            return f"{cpus} vCPUs: 1 or an even number from 2 to 96 is allowed"
        if mib % 256 or mib < 3840 or not 0.9 * 1024 * cpus <= mib <= 6.5 * 1024 * cpus:
            return (f"{mib} MiB for {cpus} vCPU(s): a multiple of 256 MiB, at least 3840, and 0.9-6.5 GiB "
                    "per vCPU is allowed")
        return None
    if re.fullmatch(r"db-perf-optimized-N-(2|4|8|16|32|48|64|80|96|128)", tier):
        return None
    return ("'db-f1-micro', 'db-g1-small', 'db-custom-<vCPUs>-<MiB>' (Enterprise) or "
            "'db-perf-optimized-N-<vCPUs>' (Enterprise Plus) is allowed")


class CloudSqlConfig(Model):
    """Cloud SQL for PostgreSQL (private IP only). Backups follow `database.backup`."""

    version: str = Field(default="POSTGRES_17", description="Cloud SQL database version")
    tier: str = Field(description="machine tier; the edition follows from it")
    storage_gi: int = Field(ge=10, le=65536, description="SSD size; grows automatically")
    high_availability: bool = Field(description="REGIONAL availability (standby in another zone)")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not re.fullmatch(r"POSTGRES_1[3-8]", v):
            raise ValueError("'POSTGRES_13' to 'POSTGRES_18' is allowed")
        return v

    @field_validator("tier")
    @classmethod
    def _tier(cls, v: str) -> str:
        if problem := cloud_sql_tier_problem(v):
            raise ValueError(problem)
        return v

    @property
    def edition(self) -> str:
        return "ENTERPRISE_PLUS" if self.tier.startswith("db-perf-optimized-") else "ENTERPRISE"


class GcpNetwork(Model):
    """Node subnet and its secondary ranges (VPC-native GKE)."""

    subnet_cidr: str = Field(default="10.10.0.0/20", description="nodes (and internal load balancers)")
    pods_cidr: str = Field(default="10.16.0.0/14", description="secondary range for Pods")
    services_cidr: str = Field(default="10.20.0.0/20", description="secondary range for Services")
    master_cidr: str = Field(default="172.16.0.0/28", description="/28 of the control plane's private "
                             "endpoint; the webhook firewall rule admits it to the nodes")

    @field_validator("*")
    @classmethod
    def _private(cls, v: str) -> str:
        return private_cidr(v)

    @field_validator("master_cidr")
    @classmethod
    def _master(cls, v: str) -> str:
        if ipaddress.ip_network(v).prefixlen != 28:
            raise ValueError("a /28 range (GKE's control-plane block) is allowed")
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> GcpNetwork:
        ranges = {"subnetCidr": self.subnet_cidr, "podsCidr": self.pods_cidr, "servicesCidr": self.services_cidr,
                  "masterCidr": self.master_cidr}
        names = list(ranges)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if ipaddress.ip_network(ranges[a]).overlaps(ipaddress.ip_network(ranges[b])):
                    raise ValueError(f"{b} {ranges[b]} overlaps {a} {ranges[a]}")
        return self


class GcpConfig(CloudAccount):
    """Google Cloud (platform `gke`): VPC, GKE, Cloud SQL, GCS, Artifact Registry, Workload Identity."""

    project: str = Field(description="Google Cloud project id")
    region: str = Field(default="europe-west1", description="region of every resource")
    zone: str = Field(default="b", description="zone letter in `region` of a zonal cluster, e.g. b → europe-west1-b")
    regional: bool = Field(description="regional cluster (control plane and nodes in 3 zones) instead of zonal")
    autopilot: bool = Field(default=False, description="GKE Autopilot (regional only; node pools are Google's)")
    release_channel: Literal["RAPID", "REGULAR", "STABLE", "EXTENDED"] = Field(description="GKE release channel")
    network: GcpNetwork = GcpNetwork()
    node_pools: GkeNodePools
    database: CloudSqlConfig
    registry: str = Field(default="mlops", description="Artifact Registry Docker repository id")

    @field_validator("project")
    @classmethod
    def _project(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", v):
            raise ValueError("a project id (6-30 lowercase letters, digits, '-', starting with a letter) is allowed")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z]+-[a-z]+[0-9]+", v):
            raise ValueError("a Google Cloud region such as 'europe-west1' is allowed")
        return v

    @field_validator("zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        return zone_letter(v)

    @field_validator("registry")
    @classmethod
    def _registry(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?", v):
            raise ValueError("a repository id (lowercase letters, digits, '-') is allowed")
        return v

    @property
    def location(self) -> str:
        return self.region if self.regional else f"{self.region}-{self.zone}"
