"""What a stack needs, independent of where it runs: node capacity, database, storage, traffic.

Read from the typed stack config (platform defaults included). For in-cluster platforms
(minikube, existing) compute comes from the offline plan's summed requests. `--compare` prices
these same needs on other targets, so capacity is conserved by construction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from infra.config import StackConfig, cpu_millicores, memory_mib
from infra.images import registry_gib
from infra.settings import GCP_ZONES
from mlops.cost.managed import managed_endpoints
from mlops.cost.prices import PricingError, price_file
from mlops.cost.usage import Usage

GCE_MEMORY_PER_VCPU = {"standard": 4, "highmem": 8, "highcpu": 1}
CLOUD_SQL_SHARED = {"db-f1-micro": (0.2, 0.6), "db-g1-small": (0.5, 1.7)}  # vCPU share, GiB


@dataclass(frozen=True)
class Pool:
    name: str
    nodes: float  # average nodes running, all zones
    vcpu: float  # per node
    memory_gib: float  # per node
    spot: bool = False
    disk_gib: int = 50
    machine: str | None = None  # the stack's own machine type; None = capacity to map

    @property
    def total_vcpu(self) -> float:
        return self.nodes * self.vcpu

    @property
    def total_memory_gib(self) -> float:
        return self.nodes * self.memory_gib


@dataclass(frozen=True)
class Database:
    vcpu: float
    memory_gib: float
    storage_gib: int
    ha: bool
    backups: bool
    tier: str | None = None  # the stack's own tier / instance class


@dataclass(frozen=True)
class Needs:
    stack: str
    platform: str
    environment: str
    ha: bool  # spread over zones (regional GKE, multi-AZ EKS, several on-prem servers)
    zones: int
    pools: tuple[Pool, ...]
    database: Database
    object_gib: float
    monitoring_gib: int
    load_balancers: int
    nat_gateways: int | None = None  # EKS: as configured
    gateway_addresses: int = 0  # EKS with gateway.dns: the NLB's Elastic IPs (one per zone)
    registry_gib: float = 0.0  # images kept in the registry (the stack's own builds, or the usage file's)
    autopilot: tuple[float, float] | None = None  # GKE Autopilot: billed pod vCPU, GiB (no pools of ours)
    log_retention_days: int = 30
    # serving.engine sagemaker/vertex: (model, machine type, instances of all its variants) per endpoint
    managed_endpoints: tuple[tuple[str, str, int], ...] = ()
    managed_engine: str = ""

    @property
    def vcpu(self) -> float:
        return sum(p.total_vcpu for p in self.pools)

    @property
    def memory_gib(self) -> float:
        return sum(p.total_memory_gib for p in self.pools)

    def scaled(self, factor: float) -> Needs:
        """The same platform with `factor` times the node capacity (database and storage unchanged)."""
        return replace(self, pools=tuple(replace(p, nodes=p.nodes * factor) for p in self.pools))


def gce_shape(machine_type: str) -> tuple[str, float, float]:
    """(family, vCPUs, GiB) of a predefined Compute Engine type such as 'n2-standard-4'."""
    m = re.fullmatch(r"([a-z][a-z0-9]*)-(standard|highmem|highcpu)-([0-9]+)", machine_type)
    if not m:
        raise PricingError(f"machine type {machine_type!r}: only predefined <family>-standard|highmem|highcpu-<n> "
                           "types are priced (not shared-core or custom types)")
    vcpu = int(m[3])
    return m[1], vcpu, vcpu * GCE_MEMORY_PER_VCPU[m[2]]


def cloud_sql_shape(tier: str) -> tuple[float, float]:
    if tier in CLOUD_SQL_SHARED:
        return CLOUD_SQL_SHARED[tier]
    m = re.fullmatch(r"db-custom-([0-9]+)-([0-9]+)", tier)
    if not m:
        raise PricingError(f"Cloud SQL tier {tier!r}: only db-f1-micro, db-g1-small and db-custom-<vCPUs>-<MiB> "
                           "(Enterprise edition) are priced")
    return int(m[1]), int(m[2]) / 1024


def _registry_gib(config: StackConfig, usage: Usage) -> float:
    return usage.registry.stored_gib if usage.registry.stored_gib is not None else registry_gib(config)


def _pool_nodes(configured_min: int, zones: int, usage_nodes: float | None) -> float:
    return usage_nodes if usage_nodes is not None else configured_min * zones


def _autopilot_needs(stack: str, config: StackConfig, requests: dict | None, utilisation: float,
                     common: dict) -> Needs:
    """Autopilot bills the pods' (rounded) requests; other targets get them as capacity to map."""
    gcp = config.gcp
    if requests is None:
        raise PricingError("gcp.autopilot: Autopilot bills Pod requests: the plan's billed requests are needed")
    vcpu, memory = requests["cpu_m"] / 1000, requests["memory_mib"] / 1024
    backups = config.database.backup.enabled
    db_vcpu, db_memory = cloud_sql_shape(gcp.database.tier)
    database = Database(db_vcpu, db_memory, gcp.database.storage_gi, gcp.database.high_availability, backups,
                        gcp.database.tier)
    zones = len(GCP_ZONES.get(gcp.region, "bcd"))  # Autopilot clusters are regional
    pool = Pool("workload", 1.0, vcpu / utilisation, memory / utilisation)
    return Needs(stack, "gke", config.environment, True, zones, (pool,), database, autopilot=(vcpu, memory),
                 **common)


def _cloud_needs(stack: str, config: StackConfig, usage: Usage, requests: dict | None = None,
                 utilisation: float = 0.6) -> Needs:
    common = {"object_gib": usage.object_storage.stored_gib if usage.object_storage.stored_gib is not None
              else config.object_store.storage_gi,
              "monitoring_gib": config.monitoring.storage_gi or 0,
              "load_balancers": int(config.gateway.service_type == "LoadBalancer"),
              "registry_gib": _registry_gib(config, usage)}
    backups = config.database.backup.enabled
    if config.platform == "gke":
        gcp = config.gcp
        if gcp.autopilot:
            return _autopilot_needs(stack, config, requests, utilisation, common)
        zones = len(GCP_ZONES.get(gcp.region, "bcd")) if gcp.regional else 1
        pools = []
        for name, pool in (("system", gcp.node_pools.system), ("workload", gcp.node_pools.workload)):
            _, vcpu, memory = gce_shape(pool.machine_type)
            nodes = _pool_nodes(pool.min_nodes, zones, getattr(usage.node_pools, name).nodes)
            pools.append(Pool(name, nodes, vcpu, memory, pool.spot, pool.disk_gi, pool.machine_type))
        vcpu, memory = cloud_sql_shape(gcp.database.tier)
        database = Database(vcpu, memory, gcp.database.storage_gi, gcp.database.high_availability, backups,
                            gcp.database.tier)
        return Needs(stack, "gke", config.environment, zones > 1, zones, tuple(pools), database,
                     managed_endpoints=managed_endpoints(config), managed_engine=config.serving.engine, **common)
    aws = config.aws
    catalog = price_file("eks")
    zones = len(aws.zones)
    pools = []
    for name, pool in (("system", aws.node_pools.system), ("workload", aws.node_pools.workload)):
        shape = catalog.instance(pool.machine_type)
        nodes = _pool_nodes(pool.min_nodes, 1, getattr(usage.node_pools, name).nodes)  # EKS bounds are totals
        pools.append(Pool(name, nodes, shape.vcpu, shape.memory_gib, pool.spot, pool.disk_gi, pool.machine_type))
    shape = catalog.database(aws.database.instance_class)
    database = Database(shape.vcpu, shape.memory_gib, aws.database.storage_gi, aws.database.high_availability,
                        backups, aws.database.instance_class)
    nat = 1 if aws.nat_gateways == "single" else zones
    ha = aws.nat_gateways == "perZone" or aws.database.high_availability  # EKS always spans 2+ zones
    return Needs(stack, "eks", config.environment, ha, zones, tuple(pools), database, nat_gateways=nat,
                 gateway_addresses=zones if config.gateway.dns is not None else 0,
                 log_retention_days=aws.log_retention_days, managed_endpoints=managed_endpoints(config),
                 managed_engine=config.serving.engine, **common)


def _in_cluster_needs(stack: str, config: StackConfig, usage: Usage, requests: dict, utilisation: float) -> Needs:
    """minikube/existing: pods' requests (without the database, which the clouds run managed),
    at the target utilisation, as one pool of capacity to map."""
    db = config.database.resources
    db_vcpu, db_memory = cpu_millicores(db.cpu) / 1000, memory_mib(db.memory) / 1024
    vcpu = max(requests["cpu_m"] / 1000 - db_vcpu, 0) / utilisation
    memory = max(requests["memory_mib"] / 1024 - db_memory, 0) / utilisation
    nodes = usage.node_pools.workload.nodes
    pool = Pool("workload", 1.0, vcpu, memory) if nodes is None else Pool("workload", nodes, vcpu / nodes,
                                                                           memory / nodes)
    ha = config.environment == "prod"
    database = Database(db_vcpu, db_memory, config.database.storage_gi, False, config.database.backup.enabled)
    return Needs(stack, config.platform, config.environment, ha, 3 if ha else 1, (pool,), database,
                 object_gib=usage.object_storage.stored_gib if usage.object_storage.stored_gib is not None
                 else config.object_store.storage_gi,
                 monitoring_gib=config.monitoring.storage_gi or 0,
                 load_balancers=int(config.gateway.service_type == "LoadBalancer"),
                 registry_gib=_registry_gib(config, usage))


def needs_of(stack: str, config: StackConfig, usage: Usage, requests: dict | None = None,
             utilisation: float = 0.6) -> Needs:
    """The stack's needs; `requests` (the plan summary's) is required for in-cluster platforms."""
    if config.platform in ("gke", "eks"):
        return _cloud_needs(stack, config, usage, requests, utilisation)
    if requests is None:
        raise ValueError(f"platform {config.platform}: the plan's requests are needed to size compute")
    return _in_cluster_needs(stack, config, usage, requests, utilisation)
