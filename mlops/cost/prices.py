"""Versioned price files (`pricing/*.yaml`): every price with its source page and the date taken."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from mlops.paths import ROOT

PRICING = ROOT / "pricing"
Target = Literal["gke", "eks", "onprem"]
FILES = {"gke": "gcp-europe-west1.yaml", "eks": "aws-eu-west-1.yaml"}
MANAGED_FILES = {"sagemaker": "aws-sagemaker-eu-west-1.yaml",  # managed serving beside a cluster
                 "vertex": "gcp-vertex-europe-west1.yaml"}
MANAGED_PROVIDERS = {"aws-sagemaker": "sagemaker", "gcp-vertex": "vertex"}  # a file's provider -> engine


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Price(_Model):
    price: float = Field(ge=0)
    unit: str
    source: str
    taken: str
    verified: bool
    free: float = Field(default=0, ge=0, description="quantity per month the provider does not charge")
    reason: str | None = None
    note: str | None = None


class SizedPrice(Price):
    """An instance type or database class: its price and the capacity it gives."""

    vcpu: float
    memory_gib: float


class PriceFile(_Model):
    provider: str
    region: str
    currency: str
    taken: str
    hours_per_month: float
    prices: dict[str, Price]
    instances: dict[str, SizedPrice] = {}
    databases: dict[str, SizedPrice] = {}

    def __getitem__(self, key: str) -> Price:
        try:
            return self.prices[key]
        except KeyError:
            raise KeyError(f"no price {key!r} in pricing/{FILES.get(self.provider, self.provider)}") from None

    def instance(self, machine_type: str) -> SizedPrice:
        if machine_type not in self.instances:
            raise PricingError(f"no price for instance type {machine_type!r} in pricing/{self.file}; priced: "
                               f"{', '.join(self.instances)} (add it with its source)")
        return self.instances[machine_type]

    def database(self, instance_class: str) -> SizedPrice:
        if instance_class not in self.databases:
            raise PricingError(f"no price for database class {instance_class!r} in pricing/{self.file}; priced: "
                               f"{', '.join(self.databases)} (add it with its source)")
        return self.databases[instance_class]

    @property
    def file(self) -> str:
        if self.provider in MANAGED_PROVIDERS:
            return MANAGED_FILES[MANAGED_PROVIDERS[self.provider]]
        return FILES["gke" if self.provider == "gcp" else "eks"]

    @property
    def unverified(self) -> int:
        return sum(not p.verified for p in (*self.prices.values(), *self.instances.values(), *self.databases.values()))


class PricingError(ValueError):
    """A resource the pricing files do not cover; names the file to extend."""


def read_price_file(path: Path) -> PriceFile:
    return PriceFile.model_validate(yaml.safe_load(path.read_text()))


@cache
def price_file(target: Target, folder: Path = PRICING) -> PriceFile:
    return read_price_file(folder / FILES[target])


@cache
def managed_price_file(engine: str, folder: Path = PRICING) -> PriceFile:
    """Instance prices of a managed serving engine (`serving.engine`)."""
    return read_price_file(folder / MANAGED_FILES[engine])
