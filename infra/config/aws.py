"""`aws`: AWS (platform eks)."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from infra.config.base import Model
from infra.config.cloud import CloudAccount, NodePool, private_cidr, zone_letter


class EksNodePool(NodePool):
    @field_validator("machine_type")
    @classmethod
    def _ec2(cls, v: str) -> str:
        if not re.match(r"^[a-z][a-z0-9-]*\.(nano|micro|small|medium|large|metal|[0-9]*xlarge)$", v):
            raise ValueError("an EC2 instance type such as 'm6i.large' is allowed")
        return v

    @property
    def arm64(self) -> bool:
        """Graviton families (t4g, m7g, c7gn, r8g…) need the arm64 node image."""
        return bool(re.match(r"^[a-z]+[0-9]+g[a-z]*\.", self.machine_type))


class EksNodePools(Model):
    system: EksNodePool = Field(description="kube-system and platform services (MLflow)")
    workload: EksNodePool = Field(description="model servers and jobs")


# RDS for PostgreSQL instance families (curated; AWS checks the exact size at create time).
RDS_BURSTABLE = ("t3", "t4g")


RDS_FAMILIES = RDS_BURSTABLE + ("m5", "m5d", "m6g", "m6gd", "m6i", "m6id", "m7g", "m7i", "m8g",
                                "r5", "r5b", "r5d", "r6g", "r6gd", "r6i", "r6id", "r7g", "r7i", "r8g", "x2g")


def rds_class_problem(instance_class: str) -> str | None:
    """Why `instance_class` is not an RDS for PostgreSQL class, or None."""
    m = re.fullmatch(r"db\.([a-z0-9]+)\.([a-z0-9]+)", instance_class)
    if not m:
        return "an RDS instance class such as 'db.t4g.micro' or 'db.m6g.large' is allowed"
    family, size = m[1], m[2]
    if family not in RDS_FAMILIES:
        return f"db.{family} is not offered for PostgreSQL 13+; allowed families: " + ", ".join(
            f"db.{f}" for f in RDS_FAMILIES)
    sizes = ("micro", "small", "medium", "large", "xlarge", "2xlarge") if family in RDS_BURSTABLE else None
    if sizes is not None and size not in sizes:
        return f"db.{family} comes in sizes {', '.join(sizes)}"
    if sizes is None and not re.fullmatch(r"large|xlarge|(2|4|8|12|16|24|32|48)xlarge", size):
        return f"db.{family} comes in sizes large, xlarge, 2xlarge … 48xlarge"
    return None


class RdsConfig(Model):
    """RDS for PostgreSQL in private subnets. Backups follow `database.backup`."""

    engine_version: str = Field(default="17", description="major (or major.minor) version")
    instance_class: str = Field(description="RDS instance class")
    storage_gi: int = Field(ge=20, le=65536, description="gp3 storage allocated at creation")
    max_storage_gi: int = Field(ge=20, le=65536, description="storage autoscaling ceiling")
    high_availability: bool = Field(description="Multi-AZ standby")

    @field_validator("engine_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not re.fullmatch(r"1[3-8](\.[0-9]+)?", v):
            raise ValueError("a PostgreSQL version from '13' to '18' (optionally with the minor) is allowed")
        return v

    @field_validator("instance_class")
    @classmethod
    def _class(cls, v: str) -> str:
        if problem := rds_class_problem(v):
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _ceiling(self) -> RdsConfig:
        if self.max_storage_gi < self.storage_gi:
            raise ValueError(f"maxStorageGi {self.max_storage_gi} is below storageGi {self.storage_gi}")
        return self


# roles and users (with an optional path); EKS access entries take no assumed-role session ARNs
IAM_PRINCIPAL = re.compile(r"arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:(role|user)(/[A-Za-z0-9+=,.@_-]+)+")
CLOUDWATCH_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                             2922, 3288, 3653)


class AwsConfig(CloudAccount):
    """AWS (platform `eks`): VPC, EKS, RDS, S3, ECR, IAM roles for service accounts."""

    region: str = Field(default="eu-west-1", description="region of every resource")
    zones: list[str] = Field(description="availability-zone letters in `region`, e.g. [a, b] → eu-west-1a, "
                                         "eu-west-1b")
    vpc_cidr: str = Field(default="10.0.0.0/16",
                          description="VPC range, split into a private and a public subnet per zone")
    nat_gateways: Literal["single", "perZone"] = Field(
        description="one NAT gateway, or one per zone (no cross-zone egress dependency)")
    cluster_admins: list[str] = Field(
        default=[], description="IAM role/user ARNs given cluster admin (AmazonEKSClusterAdminPolicy) beside the "
                                "creator and the CI infra role (not the identity running `pulumi up`: EKS made "
                                "its entry already)")
    cluster_viewers: list[str] = Field(
        default=[], description="IAM role/user ARNs given read-only access (AmazonEKSAdminViewPolicy, no Secrets)")
    node_pools: EksNodePools
    database: RdsConfig
    registry: str = Field(default="mlops", description="ECR namespace: images are <registry>/<image>")
    registry_images: list[str] = Field(
        default=["mlflow-server", "mlserver", "energy", "neo", "mnist", "mnist-server"], min_length=1,
        description="ECR repositories created under `registry` (ECR creates none on push)")
    log_retention_days: int = Field(description="control-plane log retention (a CloudWatch value: 1, 3, 5, 7, "
                                                "14, 30, 60, 90, 120, 150, 180, 365, …)")

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-[0-9]", v):
            raise ValueError("an AWS region such as 'eu-west-1' is allowed")
        return v

    @field_validator("zones")
    @classmethod
    def _zones(cls, v: list[str]) -> list[str]:
        for letter in v:
            zone_letter(letter)
        if len(v) < 2 or len(set(v)) != len(v):
            raise ValueError("at least two different zone letters are allowed (EKS and RDS span two or more zones)")
        return v

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, v: int) -> int:
        if v not in CLOUDWATCH_RETENTION_DAYS:
            raise ValueError("a CloudWatch retention is allowed: " + ", ".join(map(str, CLOUDWATCH_RETENTION_DAYS)))
        return v

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc(cls, v: str) -> str:
        private_cidr(v)
        if not 16 <= ipaddress.ip_network(v).prefixlen <= 20:
            raise ValueError("a prefix length from /16 to /20 is allowed (room for a subnet pair per zone)")
        return v

    @field_validator("cluster_admins", "cluster_viewers")
    @classmethod
    def _principals(cls, v: list[str]) -> list[str]:
        for arn in v:
            if not IAM_PRINCIPAL.fullmatch(arn):
                raise ValueError(f"{arn!r}: an IAM role or user ARN is allowed, such as "
                                 "'arn:aws:iam::123456789012:role/Admin' (for SSO, the role of the permission set; "
                                 "not an assumed-role session ARN)")
        if len(set(v)) != len(v):
            raise ValueError("each ARN at most once is allowed")
        return v

    @model_validator(mode="after")
    def _one_access(self) -> AwsConfig:
        if both := sorted(set(self.cluster_admins) & set(self.cluster_viewers)):
            raise ValueError(f"{', '.join(both)} in both clusterAdmins and clusterViewers: an IAM principal has one "
                             "access entry; allowed in one list")
        return self

    @field_validator("registry")
    @classmethod
    def _registry(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9]+([._-][a-z0-9]+)*", v):
            raise ValueError("an ECR namespace (lowercase letters, digits, '.', '_', '-') is allowed")
        return v

    @field_validator("registry_images")
    @classmethod
    def _images(cls, v: list[str]) -> list[str]:
        for image in v:
            if not re.fullmatch(r"[a-z0-9]+([._-][a-z0-9]+)*", image):
                raise ValueError(f"{image!r}: image names of lowercase letters, digits, '.', '_', '-' are allowed")
        return v
