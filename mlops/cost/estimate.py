"""Monthly cost of a stack's needs on GKE or EKS, one line per billed resource.

Prices come from `pricing/`, quantities from the needs (config) and the usage file. Capacity is
mapped onto a target's machine types rounding up, never down: compare mode conserves capacity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from infra.defaults import ENVIRONMENT
from mlops.cost.needs import Database, Needs, Pool, cloud_sql_shape, gce_shape
from mlops.cost.managed import MANAGED
from mlops.cost.prices import PriceFile, Target, managed_price_file, price_file
from mlops.cost.usage import Usage

CATEGORIES = ("cluster", "compute", "database", "storage", "network", "registry", "observability", "discount",
              "hardware", "facility", "staff")


@dataclass(frozen=True)
class Line:
    resource: str  # what is billed, e.g. "node pool workload"
    item: str  # which part of it, e.g. "3 × n2-standard-4"
    category: str
    quantity: float
    unit: str
    unit_price: float
    monthly: float
    price_key: str  # the entry in the pricing file ("" for derived lines)

    @property
    def key(self) -> str:
        """Stable across changes of quantity or machine type: what a cost diff matches lines by."""
        return f"{self.resource} ({self.unit})"


@dataclass
class Estimate:
    target: Target
    region: str
    source: str  # "stack config" or "mapped from <platform>"
    lines: list[Line] = field(default_factory=list)
    vcpu: float = 0.0  # node capacity priced
    memory_gib: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(line.monthly for line in self.lines)

    def by_category(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for line in self.lines:
            totals[line.category] = totals.get(line.category, 0.0) + line.monthly
        return totals

    def add(self, resource: str, item: str, category: str, quantity: float, unit: str, unit_price: float,
            price_key: str = "") -> None:
        self.lines.append(Line(resource, item, category, quantity, unit, unit_price, quantity * unit_price,
                               price_key))


def target_zones(target: Target, needs: Needs) -> int:
    if needs.platform == target:
        return needs.zones
    return (3 if needs.ha else 1) if target == "gke" else (3 if needs.ha else 2)


def _default_machine(target: Target, environment: str, pool: str) -> str:
    section = "gcp" if target == "gke" else "aws"
    return ENVIRONMENT[environment][section]["nodePools"][pool]["machineType"]


def map_pool(pool: Pool, target: Target, environment: str, zones: int, shape) -> Pool:
    """`pool`'s capacity on `target`'s default machine for the environment: enough nodes for both
    CPU and memory, a whole number per zone (at least one per zone for the system pool)."""
    machine = _default_machine(target, environment, pool.name)
    vcpu, memory = shape(machine)
    nodes = max(math.ceil(pool.total_vcpu / vcpu - 1e-9), math.ceil(pool.total_memory_gib / memory - 1e-9))
    per_zone = math.ceil(nodes / zones)
    if pool.name == "system":
        per_zone = max(per_zone, 1)
    return Pool(pool.name, per_zone * zones, vcpu, memory, pool.spot, pool.disk_gib, machine)


def _cloud_sql_tier(db: Database) -> str:
    for tier, (vcpu, memory) in (("db-f1-micro", (0.2, 0.6)), ("db-g1-small", (0.5, 1.7))):
        if db.vcpu <= vcpu and db.memory_gib <= memory:
            return tier
    cpus = 1 if db.vcpu <= 1 else 2 * math.ceil(db.vcpu / 2)
    while db.memory_gib > 6.5 * cpus:
        cpus = 2 if cpus == 1 else cpus + 2
    mib = max(3840, math.ceil(db.memory_gib * 1024 / 256) * 256, math.ceil(0.9 * 1024 * cpus / 256) * 256)
    return f"db-custom-{cpus}-{mib}"


def _rds_class(db: Database, prices: PriceFile, environment: str) -> str:
    """The cheapest class with the capacity; burstable (db.t*) classes only outside prod."""
    fits = [(p.price, name) for name, p in prices.databases.items()
            if p.vcpu >= db.vcpu and p.memory_gib >= db.memory_gib
            and not (environment == "prod" and name.startswith("db.t"))]
    if not fits:
        raise ValueError(f"no RDS class in pricing/{prices.file} has {db.vcpu} vCPU and {db.memory_gib} GiB")
    return min(fits)[1]


def _hours(usage: Usage) -> float:
    return usage.hours_per_month


def _spot(pool: Pool, default_discount: float, usage: Usage) -> float:
    """Multiplier on the on-demand price of a node."""
    if not pool.spot:
        return 1.0
    discount = usage.spot_discount if usage.spot_discount is not None else default_discount
    return 1 - discount * usage.spot_share


def _pools_on(target: Target, needs: Needs, shape) -> tuple[Pool, ...]:
    if needs.platform == target:
        return needs.pools
    zones = target_zones(target, needs)
    return tuple(map_pool(p, target, needs.environment, zones, shape) for p in needs.pools)


def _shared_lines(est: Estimate, needs: Needs, usage: Usage, p: PriceFile, keys: dict[str, str]) -> None:
    """Object storage, egress, registry: same shape on both clouds, different price keys."""
    o = usage.object_storage
    est.add("object storage", f"{needs.object_gib:g} GiB stored", "storage", needs.object_gib, "GiB-month",
            p[keys["stored"]].price, keys["stored"])
    est.add("object storage", "write requests", "storage", o.writes_per_month / 1000, "1000 writes",
            p[keys["writes"]].price, keys["writes"])
    est.add("object storage", "read requests", "storage", o.reads_per_month / 1000, "1000 reads",
            p[keys["reads"]].price, keys["reads"])
    egress = p["network.egress.internet"]
    est.add("internet egress", "data out", "network", max(usage.network.internet_egress_gib - egress.free, 0), "GiB",
            egress.price, "network.egress.internet")
    registry = p["registry.storage"]
    est.add("container registry", f"{needs.registry_gib:g} GiB of images", "registry",
            max(needs.registry_gib - registry.free, 0),
            "GiB-month", registry.price, "registry.storage")


def _discount(est: Estimate, usage: Usage) -> None:
    """Committed-use / Savings Plans / Reserved Instances, as the usage file states them: own lines."""
    for category, share in (("compute", usage.discounts.compute), ("database", usage.discounts.database)):
        base = sum(line.monthly for line in est.lines
                   if line.category == category and line.unit in ("node-hour", "instance-hour"))
        if share > 0 and base > 0:
            est.add(f"{category} discount", f"{share:.0%} off instance hours (usage file)", "discount", 1, "month",
                    -share * base)


AUTOPILOT_VCPU_PER_NODE = 4  # assumed node size behind Cloud NAT; Autopilot picks the real ones


def _autopilot_lines(est: Estimate, needs: Needs, hours: float, p: PriceFile) -> float:
    """Pod vCPU and memory lines of an Autopilot stack; returns the VMs assumed behind Cloud NAT."""
    assert needs.autopilot is not None
    vcpu, memory = needs.autopilot
    est.add("Autopilot pods", f"{vcpu:g} vCPU requested (rounded as billed)", "compute", vcpu * hours, "vCPU-hour",
            p["gke.autopilot.vcpu"].price, "gke.autopilot.vcpu")
    est.add("Autopilot pods", f"{memory:g} GiB requested (rounded as billed)", "compute", memory * hours,
            "GiB-hour", p["gke.autopilot.memory"].price, "gke.autopilot.memory")
    est.vcpu += vcpu
    est.memory_gib += memory
    est.notes.append(f"Autopilot: nodes behind Cloud NAT assumed {AUTOPILOT_VCPU_PER_NODE} vCPU each; "
                     "ephemeral storage and batch pods are not priced")
    return max(1, math.ceil(vcpu / AUTOPILOT_VCPU_PER_NODE))


def price_gke(needs: Needs, usage: Usage, p: PriceFile | None = None) -> Estimate:
    p = p or price_file("gke")
    hours = _hours(usage)
    est = Estimate("gke", p.region, "stack config" if needs.platform == "gke" else f"mapped from {needs.platform}")
    est.add("GKE cluster", "management fee", "cluster", hours, "cluster-hour", p["gke.cluster"].price, "gke.cluster")

    def shape(machine: str) -> tuple[float, float]:
        return gce_shape(machine)[1:]

    pools = () if needs.autopilot and needs.platform == "gke" else _pools_on("gke", needs, shape)
    vms = _autopilot_lines(est, needs, hours, p) if not pools else 0
    for pool in pools:
        family, vcpu, memory = gce_shape(pool.machine)
        node_hour = vcpu * p[f"compute.{family}.vcpu"].price + memory * p[f"compute.{family}.memory"].price
        node_hour *= _spot(pool, p["compute.spot.discount"].price, usage)
        spot = ", spot" if pool.spot else ""
        est.add(f"node pool {pool.name} instances", f"{pool.nodes:g} × {pool.machine}{spot}", "compute",
                pool.nodes * hours, "node-hour", node_hour, f"compute.{family}.vcpu")
        est.add(f"node pool {pool.name} boot disks", f"{pool.nodes:g} × {pool.disk_gib} GiB pd-balanced", "compute",
                pool.nodes * pool.disk_gib, "GiB-month", p["disk.pd-balanced"].price, "disk.pd-balanced")
        est.vcpu += pool.total_vcpu
        est.memory_gib += pool.total_memory_gib
    db = needs.database
    tier = db.tier if needs.platform == "gke" else _cloud_sql_tier(db)
    copies = 2 if db.ha else 1
    if tier in ("db-f1-micro", "db-g1-small"):
        hourly, key = p[f"sql.{tier}"].price, f"sql.{tier}"
    else:
        vcpu, memory = cloud_sql_shape(tier)
        hourly, key = vcpu * p["sql.enterprise.vcpu"].price + memory * p["sql.enterprise.memory"].price, \
            "sql.enterprise.vcpu"
    ha = " (HA: primary + standby)" if db.ha else ""
    est.add("Cloud SQL instance", f"{copies} × {tier}{ha}", "database", copies * hours, "instance-hour", hourly, key)
    est.add("Cloud SQL storage", f"{db.storage_gib} GiB SSD × {copies}", "database", db.storage_gib * copies,
            "GiB-month", p["sql.storage.ssd"].price, "sql.storage.ssd")
    backup_gib = usage.database.backup_gib if usage.database.backup_gib is not None else db.storage_gib * 0.5
    est.add("Cloud SQL backups", f"{backup_gib:g} GiB" if db.backups else "off", "database",
            backup_gib if db.backups else 0, "GiB-month", p["sql.backup"].price, "sql.backup")
    _shared_lines(est, needs, usage, p, {"stored": "gcs.standard", "writes": "gcs.class-a", "reads": "gcs.class-b"})
    vms += sum(pool.nodes for pool in pools)
    if vms <= 32:
        est.add("Cloud NAT", f"{vms:g} VMs behind the gateway", "network", vms * hours, "VM-hour",
                p["nat.vm"].price, "nat.vm")
    else:
        est.add("Cloud NAT", f"{vms:g} VMs behind the gateway (over 32: flat rate)", "network", hours, "VM-hour",
                p["nat.gateway-max"].price, "nat.gateway-max")
    est.add("Cloud NAT", "external IP address", "network", hours, "address-hour", p["nat.ip"].price, "nat.ip")
    est.add("Cloud NAT", "data processed", "network", usage.network.nat_processed_gib, "GiB", p["nat.data"].price,
            "nat.data")
    if needs.load_balancers:
        est.add("load balancer (gateway)", "forwarding rule", "network", needs.load_balancers * hours, "rule-hour",
                p["lb.forwarding-rule"].price, "lb.forwarding-rule")
    if needs.monitoring_gib:
        est.add("monitoring storage", f"Prometheus volume {needs.monitoring_gib} GiB", "observability",
                needs.monitoring_gib, "GiB-month", p["disk.pd-balanced"].price, "disk.pd-balanced")
    logging = p["logging.ingestion"]
    est.add("Cloud Logging", f"{usage.logs.ingested_gib:g} GiB ingested ({logging.free:g} GiB free)", "observability",
            max(usage.logs.ingested_gib - logging.free, 0), "GiB", logging.price, "logging.ingestion")
    _managed_lines(est, needs, hours, "gke")
    _discount(est, usage)
    return est


def price_eks(needs: Needs, usage: Usage, p: PriceFile | None = None) -> Estimate:
    p = p or price_file("eks")
    hours = _hours(usage)
    est = Estimate("eks", p.region, "stack config" if needs.platform == "eks" else f"mapped from {needs.platform}")
    est.add("EKS cluster", "management fee", "cluster", hours, "cluster-hour", p["eks.cluster"].price, "eks.cluster")

    def shape(machine: str) -> tuple[float, float]:
        instance = p.instance(machine)
        return instance.vcpu, instance.memory_gib

    pools = _pools_on("eks", needs, shape)
    for pool in pools:
        node_hour = p.instance(pool.machine).price * _spot(pool, p["ec2.spot.discount"].price, usage)
        spot = ", spot" if pool.spot else ""
        est.add(f"node pool {pool.name} instances", f"{pool.nodes:g} × {pool.machine}{spot}", "compute",
                pool.nodes * hours, "node-hour", node_hour, f"instances.{pool.machine}")
        est.add(f"node pool {pool.name} boot disks", f"{pool.nodes:g} × {pool.disk_gib} GiB gp3", "compute",
                pool.nodes * pool.disk_gib, "GiB-month", p["ebs.gp3"].price, "ebs.gp3")
        est.vcpu += pool.total_vcpu
        est.memory_gib += pool.total_memory_gib
    db = needs.database
    instance_class = db.tier if needs.platform == "eks" else _rds_class(db, p, needs.environment)
    copies = 2 if db.ha else 1
    ha = " (Multi-AZ: primary + standby)" if db.ha else ""
    est.add("RDS instance", f"{copies} × {instance_class}{ha}", "database", copies * hours, "instance-hour",
            p.database(instance_class).price, f"databases.{instance_class}")
    est.add("RDS storage", f"{db.storage_gib} GiB gp3 × {copies}", "database", db.storage_gib * copies, "GiB-month",
            p["rds.storage.gp3"].price, "rds.storage.gp3")
    backup_gib = usage.database.backup_gib if usage.database.backup_gib is not None else db.storage_gib * 0.5
    billable = max(backup_gib - db.storage_gib, 0) if db.backups else 0  # free up to the provisioned size
    est.add("RDS backups", f"{backup_gib:g} GiB, {db.storage_gib} GiB free" if db.backups else "off", "database",
            billable, "GiB-month", p["rds.backup"].price, "rds.backup")
    _shared_lines(est, needs, usage, p, {"stored": "s3.standard", "writes": "s3.put", "reads": "s3.get"})
    zones = target_zones("eks", needs)
    gateways = needs.nat_gateways if needs.platform == "eks" else (zones if needs.ha else 1)
    est.add("NAT gateways", f"{gateways} gateway(s)", "network", gateways * hours, "gateway-hour",
            p["nat.gateway"].price, "nat.gateway")
    est.add("NAT gateways", "public IPv4 addresses", "network", gateways * hours, "address-hour",
            p["ipv4.public"].price, "ipv4.public")
    est.add("NAT gateways", "data processed (S3 and ECR layers bypass NAT)", "network",
            usage.network.nat_processed_gib, "GiB", p["nat.data"].price, "nat.data")
    est.add("VPC endpoint", "S3 gateway endpoint", "network", hours, "endpoint-hour",
            p["vpc.endpoint.gateway"].price, "vpc.endpoint.gateway")
    if needs.load_balancers:
        est.add("load balancer (gateway)", "Network Load Balancer", "network", needs.load_balancers * hours,
                "LB-hour", p["lb.nlb"].price, "lb.nlb")
        # TCP: one NLCU carries 1 GB processed per hour, the dimension a gateway's traffic hits first
        est.add("load balancer (gateway)", "NLCUs for data processed", "network", usage.network.load_balancer_gib,
                "NLCU-hour", p["lb.nlb.lcu"].price, "lb.nlb.lcu")
    if needs.gateway_addresses:  # gateway.dns: the records point at Elastic IPs the NLB takes
        est.add("load balancer (gateway)", f"{needs.gateway_addresses} Elastic IP(s) for DNS records", "network",
                needs.gateway_addresses * hours, "address-hour", p["ipv4.public"].price, "ipv4.public")
    if needs.monitoring_gib:
        est.add("monitoring storage", f"Prometheus volume {needs.monitoring_gib} GiB", "observability",
                needs.monitoring_gib, "GiB-month", p["ebs.gp3"].price, "ebs.gp3")
    est.add("CloudWatch Logs", "ingestion", "observability", usage.logs.ingested_gib, "GiB", p["logs.ingestion"].price,
            "logs.ingestion")
    stored = usage.logs.ingested_gib * needs.log_retention_days / 30
    est.add("CloudWatch Logs", f"storage ({needs.log_retention_days} days kept)", "observability", stored,
            "GiB-month", p["logs.storage"].price, "logs.storage")
    est.add("KMS key", "Secrets encryption", "cluster", 1, "key-month", p["kms.key"].price, "kms.key")
    _managed_lines(est, needs, hours, "eks")
    _discount(est, usage)
    return est


def _managed_lines(est: Estimate, needs: Needs, hours: float, target: str) -> None:
    """serving.engine sagemaker (eks) or vertex (gke): each endpoint's instances (all variants)
    from their own price file, on the estimate of the cloud the engine runs in."""
    engine = needs.managed_engine
    if not needs.managed_endpoints or needs.platform != target or MANAGED[engine].platform != target:
        return
    managed, m = managed_price_file(engine), MANAGED[engine]
    for model, instance_type, instances in needs.managed_endpoints:
        est.add(f"{m.service} endpoint {model}", f"{instances} × {instance_type} (all variants)", "compute",
                instances * hours, m.unit, managed.instance(instance_type).price, f"{engine}:instances.{instance_type}")
    est.notes.append(f"{m.service} endpoints from pricing/{managed.file}: {m.unit}s at the variants' starting "
                     "counts (autoscaling adds more); storage and data processed are not priced")