"""The served models priced two ways: in the cluster (their pods' share of workload nodes) and as a
managed engine's endpoints beside it (instance- or node-hours of every variant): SageMaker beside
eks (pricing/aws-sagemaker-eu-west-1.yaml, docs/decisions/0021), Vertex AI beside gke
(pricing/gcp-vertex-europe-west1.yaml, docs/decisions/0022), so a team compares in-cluster and
managed serving for the same models.

The variants' counts follow modules/serving/sagemaker.py and vertex.py (tests/test_sagemaker.py
and tests/test_vertex.py check them against the plans): the main version starts at its lower bound
(`autoscaling.minReplicas`, else `replicas`), a canary at one instance, a shadow (SageMaker only)
as many as the main one (it receives every request). The same pods run in the cluster, each with
its requests (and Seldon's executor sidecar), on nodes kept at the sizing's target utilisation.
Only the instances differ: a managed instance serves one model version; cluster nodes are shared.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.config import StackConfig, cpu_millicores, memory_mib
from infra.config.serving import ServedModelConfig
from mlops.cost.prices import PriceFile, managed_price_file, price_file


@dataclass(frozen=True)
class ManagedPricing:
    service: str  # in report lines
    platform: str  # the cluster it runs beside
    unit: str  # what the price file charges per hour


MANAGED = {"sagemaker": ManagedPricing("SageMaker", "eks", "instance-hour"),
           "vertex": ManagedPricing("Vertex AI", "gke", "node-hour")}


@dataclass(frozen=True)
class ServingCost:
    model: str
    variants: dict[str, int]  # variant -> instances (= pods in the cluster)
    pod_vcpu: float  # requests of one pod, sidecar included
    pod_memory_gib: float
    in_cluster_monthly: float  # the pods' share of the workload machine type, at the target utilisation
    instance_type: str
    managed_monthly: float  # the managed engine's instance- or node-hours

    @property
    def instances(self) -> int:
        return sum(self.variants.values())


def sagemaker_variants(model: ServedModelConfig) -> dict[str, int]:
    """Instances per variant of a managed endpoint, SageMaker's or Vertex's (which has no shadow)."""
    low = model.autoscaling.min_replicas if model.autoscaling else model.replicas
    variants = {"main": low}
    if model.candidate is not None:
        variants["candidate"] = 1 if model.candidate_mode == "canary" else low
    return variants


def managed_engine(config: StackConfig) -> str:
    """The managed engine a stack's served models are compared with: its cloud's (SageMaker
    unless the stack is on gke)."""
    return "vertex" if config.platform == "gke" else "sagemaker"


def machine_type(config: StackConfig, engine: str) -> str:
    return config.serving.vertex.machine_type if engine == "vertex" else config.serving.sagemaker.instance_type


def managed_endpoints(config: StackConfig) -> tuple[tuple[str, str, int], ...]:
    """(model, machine type, instances of all its variants) per endpoint of a managed engine stack."""
    engine = config.serving.engine
    if engine not in MANAGED:
        return ()
    return tuple((name, machine_type(config, engine), sum(sagemaker_variants(m).values()))
                 for name, m in config.serving.models.items())


def _pod(config: StackConfig, model: ServedModelConfig) -> tuple[float, float]:
    """vCPU and GiB one model pod requests in the cluster: on Seldon (the in-cluster engine of a
    managed stack too, as the default) with its executor sidecar, on KServe without one."""
    parts = [model.resources]
    if config.serving.engine != "kserve":
        parts.append(config.serving.seldon.executor_resources)
    return (sum(cpu_millicores(r.cpu) for r in parts) / 1000, sum(memory_mib(r.memory) for r in parts) / 1024)


def _workload_node(config: StackConfig, platform: str, prices: PriceFile) -> tuple[float, float, float]:
    """(vCPU, GiB, USD per hour) of the workload pool's machine type: the stack's own, else the
    platform's default for its environment (GKE: per-vCPU and per-GiB family rates)."""
    from infra.defaults import ENVIRONMENT
    from mlops.cost.needs import gce_shape

    cloud = "gcp" if platform == "gke" else "aws"
    section = config.gcp if platform == "gke" else config.aws
    machine = section.node_pools.workload.machine_type if section is not None else \
        ENVIRONMENT[config.environment][cloud]["nodePools"]["workload"]["machineType"]
    if platform == "gke":
        family, vcpu, memory = gce_shape(machine)
        return vcpu, memory, vcpu * prices[f"compute.{family}.vcpu"].price + memory * prices[
            f"compute.{family}.memory"].price
    node = prices.instance(machine)
    return node.vcpu, node.memory_gib, node.price


def serving_costs(config: StackConfig, hours: float, utilisation: float, engine: str = "sagemaker",
                  node_prices: PriceFile | None = None, managed: PriceFile | None = None) -> list[ServingCost]:
    """Per served model: its pods on the engine's cluster's workload nodes vs its managed endpoint, per month."""
    platform = MANAGED[engine].platform
    node_prices = node_prices or price_file(platform)
    managed = managed or managed_price_file(engine)
    node_vcpu, node_memory, node_hourly = _workload_node(config, platform, node_prices)
    instance_type = machine_type(config, engine)
    hourly = managed.instance(instance_type).price
    costs = []
    for name, model in config.serving.models.items():
        variants = sagemaker_variants(model)
        vcpu, memory = _pod(config, model)
        share = max(vcpu / node_vcpu, memory / node_memory) / utilisation  # of one node, per pod
        pods = sum(variants.values())
        costs.append(ServingCost(name, variants, vcpu, memory, pods * share * node_hourly * hours, instance_type,
                                 pods * hourly * hours))
    return costs
