"""What a plan asks the cluster for: summed CPU/memory requests of everything it runs.

Long-running workloads (Deployments, StatefulSets, DaemonSets counted once per node on a
one-node cluster, and resources set in Helm values) are summed over replicas. Jobs and CronJobs
run now and then; their largest single pod is reported separately as a peak.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from infra.config import cpu_millicores, memory_mib

if TYPE_CHECKING:
    from mlops.plan import Plan

RUNNING = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod"}
BATCH = {"Job", "CronJob"}


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec", {})
    if obj["kind"] == "Pod":
        return spec
    if obj["kind"] == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("template", {}).get("spec", {})


def _container_requests(containers: list[dict[str, Any]]) -> tuple[int, int]:
    cpu = mem = 0
    for container in containers:
        requests = container.get("resources", {}).get("requests", {})
        cpu += cpu_millicores(str(requests.get("cpu", "0m")))
        mem += memory_mib(str(requests.get("memory", "0Mi")))
    return cpu, mem


def pod_requests(pod: dict[str, Any]) -> tuple[int, int]:
    """Effective pod request: the larger of the app containers' sum and any init container."""
    cpu, mem = _container_requests(pod.get("containers", []))
    for init in pod.get("initContainers", []):
        icpu, imem = _container_requests([init])
        cpu, mem = max(cpu, icpu), max(mem, imem)
    return cpu, mem


def helm_value_requests(values: Any, replicas: int = 1) -> tuple[int, int]:
    """Sum every `resources.requests` in Helm values, times a sibling replicas/replicaCount."""
    cpu = mem = 0
    if isinstance(values, dict):
        count = values.get("replicas", values.get("replicaCount", replicas))
        count = count if isinstance(count, int) else replicas
        requests = values.get("resources", {}).get("requests") if isinstance(values.get("resources"), dict) else None
        if isinstance(requests, dict):
            cpu += count * cpu_millicores(str(requests.get("cpu", "0m")))
            mem += count * memory_mib(str(requests.get("memory", "0Mi")))
        for key, child in values.items():
            if key != "resources":
                c, m = helm_value_requests(child, count if isinstance(child, dict) else replicas)
                cpu, mem = cpu + c, mem + m
    elif isinstance(values, list):
        for child in values:
            c, m = helm_value_requests(child, replicas)
            cpu, mem = cpu + c, mem + m
    return cpu, mem


def requests_of(plan: Plan) -> tuple[dict[str, int], dict[str, int]]:
    """(sum over running workloads, peak of batch pods), each as {"cpu_m", "memory_mib"}."""
    cpu = mem = peak_cpu = peak_mem = 0
    for obj in plan.kubernetes_objects:
        kind = obj.get("kind")
        if kind in RUNNING:
            replicas = obj.get("spec", {}).get("replicas", 1) if kind != "Pod" else 1
            pcpu, pmem = pod_requests(_pod_spec(obj))
            cpu, mem = cpu + replicas * pcpu, mem + replicas * pmem
        elif kind in BATCH:
            pcpu, pmem = pod_requests(_pod_spec(obj))
            peak_cpu, peak_mem = max(peak_cpu, pcpu), max(peak_mem, pmem)
    for release in plan.of_type("kubernetes:helm.sh/v3:Release"):
        hcpu, hmem = helm_value_requests(release["inputs"].get("values", {}))
        cpu, mem = cpu + hcpu, mem + hmem
    return {"cpu_m": cpu, "memory_mib": mem}, {"cpu_m": peak_cpu, "memory_mib": peak_mem}
