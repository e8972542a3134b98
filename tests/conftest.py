"""Shared fixtures: offline plans of the shipped stacks, and the CI rule that nothing may skip."""

from __future__ import annotations

from collections.abc import Callable

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
