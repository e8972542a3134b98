"""`mlops diff`: a known change between two plans is reported exactly, and no secret is ever printed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlops.diff import (
    COMMENT_LIMIT,
    MARKER,
    DiffReport,
    FieldChange,
    PlanData,
    diff_plans,
    diff_values,
    flatten_config,
    join_path,
    render_markdown,
    show_pair,
)
from mlops.paths import ROOT
from mlops.plan import PLACEHOLDER_SECRET, run_program, stack_config, write_plan

BASE_PASSWORD = "s3cret-base-7f1c0a"
HEAD_PASSWORD = "s3cret-head-92be4d"
MEMORY_LIMIT = "spec.template.spec.containers[0].resources.limits.memory"
MLFLOW_RESOURCES = {"cpu": "200m", "memory": "512Mi", "memoryLimit": "1Gi"}


def dev_with(mlflow: dict) -> tuple[dict[str, str], list[str]]:
    """The dev stack's config with an `mlflow` section; the section is a secret (it holds the password)."""
    values, secret_keys = stack_config("dev")
    return {**values, "mlops-stack:mlflow": json.dumps(mlflow)}, [*secret_keys, "mlops-stack:mlflow"]


@pytest.fixture(scope="module")
def base_plan():
    return run_program("dev", dev_with({"adminPassword": BASE_PASSWORD, "resources": MLFLOW_RESOURCES}))


@pytest.fixture(scope="module")
def memory_and_password_plan():
    """Memory limit 1Gi → 2Gi and a different admin password: nothing else changes."""
    resources = {**MLFLOW_RESOURCES, "memoryLimit": "2Gi"}
    return run_program("dev", dev_with({"adminPassword": HEAD_PASSWORD, "resources": resources}))


@pytest.fixture(scope="module")
def replicas_plan():
    return run_program("dev", dev_with({"adminPassword": BASE_PASSWORD, "resources": MLFLOW_RESOURCES, "replicas": 2}))


def differing_urns(base, head) -> set[str]:
    """Resources whose recorded inputs or options differ, found without the diff module."""
    old = {r["urn"]: r for r in base.resources}
    new = {r["urn"]: r for r in head.resources}
    keys = ("inputs", "protect", "provider", "parent", "depends_on")
    return {u for u in old.keys() & new.keys() if any(old[u][k] != new[u][k] for k in keys)}


def test_memory_limit_change_is_reported_at_exactly_its_path(base_plan, memory_and_password_plan):
    diff = diff_plans(base_plan, memory_and_password_plan)
    assert not diff.added and not diff.removed
    assert {c.urn for c in diff.changed} == differing_urns(base_plan, memory_and_password_plan)
    deployment = diff.resource("Deployment mlflow/mlflow")
    assert deployment.fields == [FieldChange(MEMORY_LIMIT, "1Gi", "2Gi")]
    for change in diff.changed:  # the migration Job shares the server's resources, nothing else moved
        assert change.paths == [MEMORY_LIMIT], change.label
    assert diff.unchanged == len(base_plan.resources) - len(diff.changed)


def test_replicas_change_shows_old_and_new_value(base_plan, replicas_plan):
    diff = diff_plans(base_plan, replicas_plan)
    deployment = diff.resource("Deployment mlflow/mlflow")
    assert FieldChange("spec.replicas", 1, 2) in deployment.fields
    assert {c.urn for c in diff.changed} == differing_urns(base_plan, replicas_plan)
    text = DiffReport("base", "head", [diff]).render("text")
    assert "~ spec.replicas: 1 → 2" in text


def test_summary_changes_follow_the_requests(base_plan, replicas_plan):
    diff = diff_plans(base_plan, replicas_plan)
    summary = {c.path: (c.old, c.new) for c in diff.summary}
    old_cpu, new_cpu = summary["requests.cpu_m"]
    assert new_cpu > old_cpu  # a second MLflow replica asks for more


def test_a_changed_secret_is_never_printed_and_the_blind_spot_is_stated(base_plan, memory_and_password_plan):
    report = DiffReport("base", "head", [diff_plans(base_plan, memory_and_password_plan)])
    for fmt in ("markdown", "text"):
        out = report.render(fmt)
        assert BASE_PASSWORD not in out and HEAD_PASSWORD not in out and PLACEHOLDER_SECRET not in out
        assert "a secret whose value changed looks unchanged here" in out
    assert report.stacks[0].secret_values > 0


def test_plan_folders_diff_like_plan_objects(base_plan, replicas_plan, tmp_path):
    write_plan(base_plan, "minikube", tmp_path / "base")
    write_plan(replicas_plan, "minikube", tmp_path / "head")
    from_dirs = diff_plans(tmp_path / "base", tmp_path / "head")
    from_objects = diff_plans(base_plan, replicas_plan)
    assert [(c.urn, c.fields) for c in from_dirs.changed] == [(c.urn, c.fields) for c in from_objects.changed]
    assert [c.urn for c in from_dirs.added] == [c.urn for c in from_objects.added]
    assert from_dirs.summary == from_objects.summary


def test_a_new_stack_is_all_added(base_plan):
    diff = diff_plans(None, base_plan)
    assert len(diff.added) == len(base_plan.resources) and diff.note == "new stack: not in the base"


def secret_plan(value: str) -> PlanData:
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "ns"},
                "stringData": {"token": value}}
    record = {"urn": "urn:pulumi:dev::p::kubernetes:core/v1:Secret::creds", "type": "kubernetes:core/v1:Secret",
              "name": "creds", "inputs": manifest}
    return PlanData("dev", {record["urn"]: record}, {}, {})


def test_kubernetes_secret_data_is_hidden_even_when_a_plan_holds_it_in_clear():
    diff = diff_plans(secret_plan("plain-value-one"), secret_plan("plain-value-two"))
    change = diff.resource("Secret ns/creds").fields[0]
    assert change.path == "stringData.token" and change.hidden
    out = DiffReport("b", "h", [diff]).render("markdown") + DiffReport("b", "h", [diff]).render("text")
    assert "plain-value" not in out and "(changed, not shown)" in out


def test_encrypted_config_changes_are_listed_without_their_ciphertext():
    base = flatten_config({"config": {"mlops-stack:mlflow": {"replicas": 1, "adminPassword": {"secure": "v1:AAAA"}}}})
    head = flatten_config({"config": {"mlops-stack:mlflow": {"replicas": 2, "adminPassword": {"secure": "v1:BBBB"}}}})
    plan = secret_plan("[secret]")
    diff = diff_plans(plan, plan, base_config=base, head_config=head)
    assert [(c.path, c.hidden) for c in diff.config] == [
        ("mlops-stack:mlflow.adminPassword", True), ("mlops-stack:mlflow.replicas", False)]
    out = DiffReport("b", "h", [diff]).render("markdown")
    assert "v1:AAAA" not in out and "v1:BBBB" not in out and "(changed, not shown)" in out


def test_paths_quote_keys_that_are_not_identifiers():
    assert join_path("metadata.labels", "app.kubernetes.io/name") == 'metadata.labels["app.kubernetes.io/name"]'
    assert join_path(join_path("spec", "containers"), 0) == "spec.containers[0]"


def test_named_lists_match_by_name_so_an_insert_does_not_cascade():
    old = {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
    new = {"env": [{"name": "A", "value": "1"}, {"name": "NEW", "value": "x"}, {"name": "B", "value": "3"}]}
    changes = {c.path: (c.old, c.new) for c in diff_values(old, new)}
    assert set(changes) == {"env[1].name", "env[1].value", "env[2].value"}
    assert changes["env[2].value"] == ("2", "3")


def test_long_strings_are_cut_around_the_difference():
    old, new = "x" * 300 + "-old-" + "y" * 300, "x" * 300 + "-new-" + "y" * 300
    shown_old, shown_new = show_pair(FieldChange("a", old, new))
    assert "-old-" in shown_old and "-new-" in shown_new and len(shown_old) < 120


def test_markdown_starts_with_the_marker_and_fits_a_comment(base_plan):
    report = DiffReport("base", "head", [diff_plans(None, base_plan)])
    roomy = render_markdown(report, limit=10**7)
    assert roomy.startswith(MARKER) and "<details>" in roomy  # manifests of added objects when they fit
    default = render_markdown(report)
    assert default.startswith(MARKER) and len(default) <= COMMENT_LIMIT
    short = render_markdown(report, limit=3000)
    assert short.startswith(MARKER) and len(short) <= 3000 and "cut to fit" in short


# ---- the command, on a real git history ------------------------------------------------------

PROJECT_PATHS = ("Pulumi.yaml", "pyproject.toml", "infra", "modules", "mlops", "stacks", "workloads")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def project_clone(tmp_path) -> Path:
    """A fresh repository holding this checkout's project files, committed once."""
    repo = tmp_path / "repo"
    listed = git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "--", *PROJECT_PATHS)
    for name in listed.splitlines():
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    git(repo.parent, "init", "-q", "-b", "main", str(repo))
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-q", "-m", "base")
    return repo


def test_mlops_diff_against_head_reports_a_modified_stack_file(project_clone, tmp_path):
    stack_file = project_clone / "stacks" / "Pulumi.dev.yaml"
    document = yaml.safe_load(stack_file.read_text())
    document["config"]["mlops-stack:mlflow"] = {"replicas": 2, "adminPassword": {"secure": "v1:c2VjcmV0LWNpcGhlcg=="}}
    stack_file.write_text(yaml.safe_dump(document))
    out = tmp_path / "diff.md"
    result = subprocess.run(
        [sys.executable, "-m", "mlops", "diff", "--base", "HEAD", "--stack", "dev", "--format", "markdown",
         "--out", str(out)],
        cwd=project_clone, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.startswith(MARKER)
    assert "`spec.replicas` | `1` | `2`" in text
    assert "`mlops-stack:mlflow.adminPassword` | `(none)` | `(set, not shown)`" in text
    assert "mlflow-admin-password" in text  # the generated password gives way to the configured one
    assert "c2VjcmV0LWNpcGhlcg" not in text and PLACEHOLDER_SECRET not in text
    assert git(project_clone, "worktree", "list").count("\n") == 1  # the base worktree is gone


def test_mlops_diff_rejects_an_unknown_ref(project_clone):
    result = subprocess.run([sys.executable, "-m", "mlops", "diff", "--base", "no-such-ref"],
                            cwd=project_clone, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown git ref 'no-such-ref'" in result.stderr
