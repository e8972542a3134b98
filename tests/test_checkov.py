"""Checkov's Kubernetes checks on the rendered manifests of every shipped stack: all pass except
the ones `policy/checkov-skips.yaml` skips, each with its reason."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from mlops.paths import ROOT, stack_names
from mlops.plan import write_plan
from tests.tools import require_tool

SKIPS = yaml.safe_load((ROOT / "policy" / "checkov-skips.yaml").read_text())


def test_every_skip_says_why():
    assert SKIPS and all(check.startswith("CKV") and len(reason) > 40 for check, reason in SKIPS.items())


@pytest.mark.parametrize("stack", stack_names())
def test_manifests_pass_checkov(stack, plan_of, tmp_path):
    checkov = require_tool("checkov", "IaC scanner; `make test-deps` installs it into .venv/tools/checkov")
    plan = plan_of(stack)
    write_plan(plan, plan.outputs["platform"], tmp_path)
    result = subprocess.run(
        [checkov, "-d", str(tmp_path / "manifests"), "--framework", "kubernetes", "--quiet", "-o", "json",
         "--skip-check", ",".join(SKIPS)],
        capture_output=True, text=True, timeout=600,
    )
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [f"{f['check_id']} {f['check_name']}: {f['resource']}" for r in reports
              for f in r["results"]["failed_checks"]]
    assert failed == [], "\n".join(failed)
    assert sum(r["summary"]["passed"] for r in reports) > 100  # it did look at the manifests
