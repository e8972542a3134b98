"""Cost diff of a change: monthly totals before/after and the lines whose cost changed.

Like `mlops diff`, the base commit is checked out in a temporary `git worktree` and priced with
its own code, stack files and price files (`python -m mlops cost --format json`); the working
tree is priced the same way. A base without `mlops cost` is reported as such, not as zero.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlops.diff import DiffError, _git
from mlops.paths import ROOT, stack_names
from mlops.cost.report import DISCLAIMER

MARKER = "<!-- mlops-cost -->"


@dataclass
class StackCost:
    stack: str
    base: dict | None = None  # the own-target estimate of `mlops cost --format json`
    head: dict | None = None
    error: str | None = None
    base_note: str | None = None  # why the base has no price: new stack, no cost model, or its error

    @property
    def changes(self) -> list[tuple[str, float, float]]:
        """(line key, base USD, head USD) of lines whose monthly cost differs."""
        old = _by_key(self.base)
        new = _by_key(self.head)
        return [(k, old.get(k, 0.0), new.get(k, 0.0)) for k in sorted(set(old) | set(new))
                if round(old.get(k, 0.0), 2) != round(new.get(k, 0.0), 2)]


def _by_key(estimate: dict | None) -> dict[str, float]:
    totals: dict[str, float] = {}
    for line in (estimate or {}).get("lines", []):
        totals[line["key"]] = totals.get(line["key"], 0.0) + line["monthly"]
    return totals


@dataclass
class CostDiff:
    base: str
    head: str
    stacks: list[StackCost] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.error is None for s in self.stacks)


def _cost_in(tree: Path, stack: str, out: Path) -> tuple[dict | None, str | None]:
    """(own-target estimate, None) or (None, why not) for `stack` priced by the code in `tree`."""
    if not (tree / "mlops" / "cost").is_dir():  # else an editable install would lend it today's package
        return None, "no `mlops cost` at this commit"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "mlops", "cost", "--stack", stack, "--format", "json", "--out", str(out)]
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode == 0:
        return json.loads(out.read_text())["estimates"][0], None
    tail = "\n".join(result.stderr.strip().splitlines()[-15:])
    return None, f"`mlops cost --stack {stack}` failed (exit {result.returncode}):\n{tail}"


def cost_against_ref(base_ref: str, stacks: list[str] | None = None, repo: Path = ROOT) -> CostDiff:
    repo = Path(repo)
    found = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{base_ref}^{{commit}}"],
                           capture_output=True, text=True)
    base_sha = found.stdout.strip() if found.returncode == 0 and base_ref else ""
    if not base_sha:
        raise DiffError(f"unknown git ref {base_ref!r} (in CI, fetch it: actions/checkout with fetch-depth 0 or 2)")
    head_sha = _git(repo, "rev-parse", "--short=12", "HEAD")
    dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))
    head_label = f"`{head_sha}`" + (" + uncommitted changes" if dirty else "")
    result = CostDiff(f"`{base_ref}` (`{base_sha[:12]}`)", head_label)
    scratch = Path(tempfile.mkdtemp(prefix="mlops-cost-"))
    tree = scratch / "base"
    try:
        _git(repo, "worktree", "add", "--detach", "--quiet", str(tree), base_sha)
        base_stacks = set(stack_names(tree / "stacks")) if (tree / "stacks").is_dir() else set()
        head_stacks = set(stack_names(repo / "stacks"))
        for stack in stacks or sorted(base_stacks | head_stacks):
            cost = StackCost(stack)
            if stack in head_stacks:
                cost.head, cost.error = _cost_in(repo, stack, scratch / f"head-{stack}.json")
            if stack in base_stacks:
                cost.base, cost.base_note = _cost_in(tree, stack, scratch / f"base-{stack}.json")
            else:
                cost.base_note = "stack added by this change"
            result.stacks.append(cost)
        return result
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], capture_output=True)
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _usd(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def _delta(base: float | None, head: float | None) -> str:
    if base is None or head is None:
        return "—"
    return f"{head - base:+,.2f}"


def render_cost_markdown(diff: CostDiff) -> str:
    lines = [MARKER, "## Cost diff (monthly, list prices)", "", f"Base {diff.base} → head {diff.head}", "",
             f"> {DISCLAIMER}", "", "| stack | target | base USD | head USD | change |", "|---|---|---:|---:|---:|"]
    for s in diff.stacks:
        base = s.base["total"] if s.base else None
        head = s.head["total"] if s.head else None
        target = (s.head or s.base or {}).get("target", "—")
        lines.append(f"| `{s.stack}` | {target} | {_usd(base)} | {_usd(head)} | {_delta(base, head)} |")
    for s in diff.stacks:
        if s.error:
            lines += ["", f"### `{s.stack}`: cost failed", "", "```text", s.error, "```"]
            continue
        if s.base_note and "\n" in s.base_note:
            lines += ["", f"### `{s.stack}`: base not priced", "", "```text", s.base_note, "```"]
            continue
        if s.base_note:
            lines += ["", f"_`{s.stack}`: base not priced ({s.base_note})._"]
            continue
        if s.changes:
            lines += ["", f"### `{s.stack}`: lines whose cost changed", "", "| line | base USD | head USD | change |",
                      "|---|---:|---:|---:|"]
            lines += [f"| {k} | {_usd(old)} | {_usd(new)} | {new - old:+,.2f} |" for k, old, new in s.changes]
    lines += ["", "<sub>Made by `mlops cost --base`: both commits priced with their own code and price files "
                  "(prices taken: see `pricing/`).</sub>", ""]
    return "\n".join(lines)


def render_cost_text(diff: CostDiff) -> str:
    lines = [f"mlops cost: {diff.base} → {diff.head}", DISCLAIMER]
    for s in diff.stacks:
        base = s.base["total"] if s.base else None
        head = s.head["total"] if s.head else None
        lines.append(f"{s.stack}: {_usd(base)} → {_usd(head)} USD/month ({_delta(base, head)})")
        if s.error or s.base_note:
            lines += [f"  {line}" for line in (s.error or s.base_note).splitlines()]
            continue
        lines += [f"  ~ {k}: {_usd(old)} → {_usd(new)} ({new - old:+,.2f})" for k, old, new in s.changes]
    return "\n".join(lines) + "\n"
