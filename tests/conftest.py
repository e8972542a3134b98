"""Shared fixtures: offline plans of the shipped stacks, each test module's clean MLflow client state,
and the CI rule that nothing may skip."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

import pytest

from mlops.plan import Plan, run_program, stack_config
from tests.tools import IN_CI

_skipped: list[str] = []


@pytest.fixture(scope="session")
def plan_of() -> Callable[[str], Plan]:
    """`plan_of("dev")`: the offline plan of a shipped stack (the runner `mlops plan` uses), cached."""
    cache: dict[str, Plan] = {}

    def get(stack: str) -> Plan:
        if stack not in cache:
            cache[stack] = run_program(stack, stack_config(stack))
        return cache[stack]

    return get


@pytest.fixture(scope="module", autouse=True)
def _fresh_mlflow_client() -> Iterator[None]:
    """Every test module starts with no MLflow tracking or registry URI set in the process.

    `mlflow.set_tracking_uri` is process-global, outranks $MLFLOW_TRACKING_URI and also writes that
    variable into os.environ: a module that set it left the next module of the same xdist worker
    talking to a server that was gone (seen: "connection refused" in modules that passed alone).
    """
    _forget_mlflow_uris()
    yield
    _forget_mlflow_uris()


def _forget_mlflow_uris() -> None:
    mlflow = sys.modules.get("mlflow")  # not imported yet: no URI held in the process
    if mlflow is not None:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(var, None)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true a skipped test is a failure: a missing tool must not pass silently."""
    if IN_CI and _skipped and exitstatus == 0:
        print(f"\nCI=true: {len(_skipped)} test(s) skipped, which CI does not accept:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
