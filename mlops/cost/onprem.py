"""On-prem total cost of ownership, and where it breaks even with each cloud.

Servers are bought for the needed capacity at a target utilisation, amortised over their life;
power, colocation, network, storage, support contracts and a share of an engineer's time are
added. Inputs: `pricing/onprem.yaml`, overridable under `onprem:` in the usage file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from infra.defaults import deep_merge
from mlops.cost.estimate import Estimate
from mlops.cost.needs import Needs
from mlops.cost.prices import PRICING
from mlops.cost.usage import Usage, UsageError, describe_errors

ONPREM = PRICING / "onprem.yaml"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Server(_Model):
    vcpu: float = Field(gt=0)
    memory_gib: float = Field(gt=0)
    capex: float = Field(ge=0)
    life_years: float = Field(gt=0, le=15)
    average_watts: float = Field(ge=0)
    source: str
    verified: bool


class Power(_Model):
    pue: float = Field(ge=1, le=3)
    price_per_kwh: float = Field(ge=0)
    source: str
    verified: bool


class Rack(_Model):
    monthly: float = Field(ge=0)
    servers_per_rack: int = Field(ge=1)
    network_capex: float = Field(ge=0)
    source: str
    verified: bool


class Storage(_Model):
    capex_per_tib: float = Field(ge=0)
    replication: float = Field(ge=1, le=5)
    source: str
    verified: bool


class Support(_Model):
    fraction_of_capex_per_year: float = Field(ge=0, le=1)
    source: str
    verified: bool


class Staff(_Model):
    fte_fraction: float = Field(ge=0, le=20)
    fte_yearly_cost: float = Field(ge=0)
    source: str
    verified: bool


class Sizing(_Model):
    target_utilisation: float = Field(gt=0, le=1)
    minimum_servers: int = Field(ge=1)


class Tco(_Model):
    provider: str
    currency: str
    taken: str
    hours_per_month: float
    server: Server
    power: Power
    rack: Rack
    storage: Storage
    support: Support
    staff: Staff
    sizing: Sizing


def load_tco(usage: Usage, path: Path = ONPREM) -> Tco:
    """pricing/onprem.yaml with the usage file's `onprem:` overrides."""
    raw = deep_merge(yaml.safe_load(path.read_text()), usage.onprem)
    try:
        return Tco.model_validate(raw)
    except ValidationError as error:
        raise UsageError("(key onprem)", describe_errors(error, Tco, prefix="onprem.")) from None


def servers_for(needs: Needs, tco: Tco, utilisation: float | None = None) -> int:
    """Servers for the node capacity plus the database (in-cluster on-prem; twice with HA)."""
    u = utilisation or tco.sizing.target_utilisation
    copies = 2 if needs.database.ha else 1
    vcpu = needs.vcpu + copies * needs.database.vcpu
    memory = needs.memory_gib + copies * needs.database.memory_gib
    minimum = tco.sizing.minimum_servers if needs.ha else 1
    return max(minimum, math.ceil(vcpu / (tco.server.vcpu * u) - 1e-9),
               math.ceil(memory / (tco.server.memory_gib * u) - 1e-9))


def price_onprem(needs: Needs, usage: Usage, tco: Tco, utilisation: float | None = None) -> Estimate:
    est = Estimate("onprem", "own data centre", "stack config" if needs.platform in ("existing", "minikube")
                   else f"mapped from {needs.platform}")
    months = tco.server.life_years * 12
    servers = servers_for(needs, tco, utilisation)
    racks = math.ceil(servers / tco.rack.servers_per_rack)
    s = tco.server
    est.add("servers", f"{servers} × {s.vcpu:g} vCPU / {s.memory_gib:g} GiB, capex over {s.life_years:g} years",
            "hardware", servers, "server-month", s.capex / months, "server.capex")
    kwh = servers * s.average_watts * tco.power.pue * usage.hours_per_month / 1000
    est.add("power", f"{servers} × {s.average_watts:g} W × PUE {tco.power.pue:g}", "facility", kwh, "kWh",
            tco.power.price_per_kwh, "power.pricePerKwh")
    est.add("rack / colocation", f"{racks} rack(s)", "facility", racks, "rack-month", tco.rack.monthly, "rack.monthly")
    est.add("network", f"{racks} rack(s) of switching, capex over {s.life_years:g} years", "hardware", racks,
            "rack-month", tco.rack.network_capex / months, "rack.networkCapex")
    copies = 2 if needs.database.ha else 1
    stored = needs.database.storage_gib * copies + needs.object_gib + needs.monitoring_gib + needs.registry_gib
    raw_tib = stored / 1024 * tco.storage.replication
    est.add("storage", f"{stored:g} GiB usable × {tco.storage.replication:g} replicas, capex over "
            f"{s.life_years:g} years", "storage", raw_tib, "TiB-month", tco.storage.capex_per_tib / months,
            "storage.capexPerTib")
    capex = servers * s.capex + racks * tco.rack.network_capex + raw_tib * tco.storage.capex_per_tib
    est.add("support contracts", f"{tco.support.fraction_of_capex_per_year:.0%} of capex per year", "hardware",
            capex / 1000, "1000 USD capex", tco.support.fraction_of_capex_per_year * 1000 / 12,
            "support.fractionOfCapexPerYear")
    est.add("operations staff", f"{tco.staff.fte_fraction:g} FTE", "staff", tco.staff.fte_fraction, "FTE-month",
            tco.staff.fte_yearly_cost / 12, "staff.fteYearlyCost")
    est.vcpu = servers * s.vcpu
    est.memory_gib = servers * s.memory_gib
    return est


@dataclass(frozen=True)
class BreakEven:
    """Where on-prem becomes cheaper than `target`, at a utilisation of the on-prem fleet."""

    target: str
    utilisation: float
    scale: float | None  # multiple of the stack's node capacity; None = not within the range tried
    servers: int | None
    vcpu: float | None
    cloud_monthly: float | None
    onprem_monthly: float | None


SCALES = tuple(round(0.5 * 1.2 ** i, 3) for i in range(32))  # 0.5× … ~140× the stack's node capacity
UTILISATIONS = (0.4, 0.5, 0.6, 0.7, 0.8)


def curves(needs: Needs, usage: Usage, tco: Tco, cloud: dict[str, Callable[[Needs], Estimate]],
           utilisation: float | None = None) -> dict[str, list[tuple[float, float, int]]]:
    """Monthly totals per target over SCALES: (scale, total, on-prem servers) points."""
    points: dict[str, list[tuple[float, float, int]]] = {name: [] for name in (*cloud, "onprem")}
    for scale in SCALES:
        scaled = needs.scaled(scale)
        servers = servers_for(scaled, tco, utilisation)
        for name, price in cloud.items():
            points[name].append((scale, price(scaled).total, servers))
        points["onprem"].append((scale, price_onprem(scaled, usage, tco, utilisation).total, servers))
    return points


def break_even(needs: Needs, usage: Usage, tco: Tco,
               cloud: dict[str, Callable[[Needs], Estimate]]) -> list[BreakEven]:
    """For each utilisation and cloud: the smallest scale at which on-prem costs no more."""
    results = []
    for u in UTILISATIONS:
        lines = curves(needs, usage, tco, cloud, u)
        for name in cloud:
            hit = next(((c, o) for c, o in zip(lines[name], lines["onprem"]) if o[1] <= c[1]), None)
            if hit is None:
                results.append(BreakEven(name, u, None, None, None, None, None))
            else:
                (scale, cloud_total, servers), (_, onprem_total, _) = hit
                results.append(BreakEven(name, u, scale, servers, needs.vcpu * scale, cloud_total, onprem_total))
    return results
