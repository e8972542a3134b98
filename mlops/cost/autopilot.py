"""What GKE Autopilot bills: the resource requests of the pods the plan runs, rounded up as Autopilot
rounds them (https://cloud.google.com/kubernetes-engine/pricing, "Autopilot mode": CPU in steps of
1/4 vCPU, 1 to 6.5 GiB of memory per vCPU), while they run. System pods are not billed; batch pods
run for minutes a day and are left out."""

from __future__ import annotations

import math
from pathlib import Path

from mlops.footprint import pods_of
from mlops.plan import Plan

CPU_STEP_M = 250
MIN_GIB_PER_VCPU, MAX_GIB_PER_VCPU = 1.0, 6.5


def billed(cpu_m: int, memory_mib: int) -> tuple[int, int]:
    """(mCPU, MiB) Autopilot bills for one pod that requests `cpu_m`, `memory_mib`."""
    cpu = max(cpu_m, 1)
    cpu = max(cpu, math.ceil(memory_mib / 1024 / MAX_GIB_PER_VCPU * 1000))  # too much memory per vCPU
    cpu = math.ceil(cpu / CPU_STEP_M) * CPU_STEP_M
    memory = max(memory_mib, math.ceil(cpu / 1000 * MIN_GIB_PER_VCPU * 1024))
    return cpu, memory


def billed_requests(plan: Plan) -> dict[str, int]:
    """Summed billed requests of the plan's running pods, as {"cpu_m", "memory_mib"}."""
    cpu = memory = 0
    for pod in pods_of(plan):
        if pod.batch:
            continue
        pod_cpu, pod_memory = billed(*pod.requests())
        cpu, memory = cpu + pod.replicas * pod_cpu, memory + pod.replicas * pod_memory
    return {"cpu_m": cpu, "memory_mib": memory}


def plan_billed_requests(stack: str, stacks_dir: Path | None = None) -> dict[str, int]:
    from mlops.plan import run_program, stack_config

    return billed_requests(run_program(stack, stack_config(stack, stacks_dir)))
