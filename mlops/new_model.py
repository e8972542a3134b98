"""`mlops new-model`: the smallest model repository that gets test → build → register → serve →
promote from this platform's reusable model pipeline.

The starter (mlops/templates/model-repo/) is a scikit-learn model on a bundled CSV, its tests,
executable ci/ hooks, a workflow calling model-pipeline.yml pinned to a tag or commit, and a README.
The hooks use the very helpers this repository's workloads use (workloads/common: hooks, promotion,
tracking, lineage), vendored into `mlops_helpers/` at generation time, so a model repository needs
no install of mlops-stack (its Pulumi SDKs) and follows the same contract.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlops.paths import ROOT

TEMPLATE = Path(__file__).parent / "templates" / "model-repo"
HELPERS = ("hooks", "promotion", "tracking", "lineage")  # workloads/common/<name>.py
HELPERS_PACKAGE = "mlops_helpers"
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
PINNED_REF = re.compile(r"^([0-9a-f]{40}|v\d+\.\d+\.\d+)$")
REPOSITORY = re.compile(r"^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$")
HOSTED_RUNNER = "ubuntu-24.04"


class StarterError(ValueError):
    """A bad argument, with the fix."""


@dataclass(frozen=True)
class Starter:
    name: str  # registered model and workload name (a DNS label)
    pipeline_repo: str  # owner/name of the mlops-stack repository
    pipeline_ref: str  # full commit SHA or vX.Y.Z tag
    stack: str = ""
    runs_on: str = HOSTED_RUNNER
    builder: str = ""

    def tokens(self) -> dict[str, str]:
        return {"__MODEL_NAME__": self.name, "__PIPELINE_REPO__": self.pipeline_repo,
                "__PIPELINE_REF__": self.pipeline_ref, "__STACK__": self.stack, "__RUNS_ON__": self.runs_on,
                "__BUILDER__": self.builder}


def check(starter: Starter) -> Starter:
    if not DNS_LABEL.match(starter.name):
        raise StarterError(f"--name {starter.name!r}: a DNS label (lowercase letters, digits, '-') is allowed: it "
                           "names the registered model, the image and the pipeline's workload")
    if not REPOSITORY.match(starter.pipeline_repo):
        raise StarterError(f"--pipeline-repo {starter.pipeline_repo!r}: owner/name of the mlops-stack repository")
    if not PINNED_REF.match(starter.pipeline_ref):
        raise StarterError(f"--pipeline-ref {starter.pipeline_ref!r}: a full 40-character commit SHA or a vX.Y.Z "
                           "tag is allowed (a branch moves under the model's feet)")
    return starter


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def default_ref() -> str | None:
    """This checkout's commit: the pipeline the starter was made with."""
    return _git("rev-parse", "HEAD")


def default_repository() -> str | None:
    """owner/name of this checkout's GitHub `origin`, if it has one."""
    url = _git("remote", "get-url", "origin") or ""
    found = re.search(r"github\.com[:/]([^/]+/[^/]+?)(\.git)?$", url)
    return found.group(1) if found else None


def from_stack(starter: Starter, stack: str, stacks_dir: Path | None) -> Starter:
    """Runner label and builder of a stack whose cluster GitHub cannot reach (ci.runners)."""
    from infra.settings import parse_stack_config, raw_from_pulumi_config
    from mlops.plan import stack_config
    from modules.ci.runners import builder_endpoint

    runners = parse_stack_config(*raw_from_pulumi_config(*stack_config(stack, stacks_dir))).ci.runners
    return Starter(starter.name, starter.pipeline_repo, starter.pipeline_ref, stack,
                   runners.scale_set_name if runners.enabled else HOSTED_RUNNER,
                   builder_endpoint() if runners.enabled and runners.builder.enabled else "")


def render(text: str, starter: Starter) -> str:
    for token, value in starter.tokens().items():
        text = text.replace(token, value)
    return text


def vendored_helper(name: str, ref: str) -> str:
    """workloads/common/<name>.py as `mlops_helpers.<name>`: the same code, imports renamed."""
    source = (ROOT / "workloads" / "common" / f"{name}.py").read_text()
    header = (f"# Vendored by `mlops new-model` from mlops-stack {ref}: workloads/common/{name}.py.\n"
              "# Do not edit: regenerate a starter at the pipeline ref you move to and copy mlops_helpers/.\n")
    return header + source.replace("workloads.common", HELPERS_PACKAGE)


def write(target: Path, starter: Starter) -> list[Path]:
    """Write the starter into `target` (new or empty); returns the files written."""
    check(starter)
    if target.exists() and any(target.iterdir()):
        raise StarterError(f"{target} is not empty: a starter is written into a new or empty directory")
    written = []
    for path in sorted(TEMPLATE.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts:
            continue
        out = target / path.relative_to(TEMPLATE)
        out.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".csv":
            shutil.copyfile(path, out)
        else:
            out.write_text(render(path.read_text(), starter))
        out.chmod(path.stat().st_mode & 0o777)
        written.append(out)
    helpers = target / HELPERS_PACKAGE
    helpers.mkdir()
    (helpers / "__init__.py").write_text(
        f'"""mlops-stack\'s pipeline helpers ({", ".join(HELPERS)}), vendored at {starter.pipeline_ref}."""\n')
    written.append(helpers / "__init__.py")
    for name in HELPERS:
        (helpers / f"{name}.py").write_text(vendored_helper(name, starter.pipeline_ref))
        written.append(helpers / f"{name}.py")
    return written


def serving_snippet(name: str) -> str:
    """The stack config that serves the starter's model by alias, with its shadow."""
    return (f"  mlops-stack:serving:\n    models:\n      {name}:\n"
            f"        source: {{model: {name}, alias: champion}}\n"
            f"        candidate: {{alias: challenger}}\n")
