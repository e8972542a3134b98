"""External tools the tests need: skipped with a reason on a laptop, a failure under CI=true."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str, why: str) -> str:
    """The tool's path; skip with a reason on a laptop, fail under CI=true (CI must install it)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found on PATH ({why}); `.ci/run` installs it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path
