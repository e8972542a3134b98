"""Offline infra diff: what a change declares, read from two plans — no state, no credentials.

Compares two plans of a stack (folders written by `write_plan`, or `Plan` objects): resources
added, removed and changed (keyed by URN), every changed input path with its old → new value,
Kubernetes objects field by field, the plan summary (resource counts, requests) and, when the
stack files are at hand, the stack config itself.

What it cannot see, it says: plans redact secrets to "[secret]", so a secret whose value changed
looks the same in both plans. A changed *encrypted config value* is visible (its ciphertext in the
stack file differs) and is reported without its value. Whether an update happens in place or as a
replacement is the providers' call against real state: that is `pulumi preview --diff`'s job.

`mlops diff --base <git-ref>` plans the base commit in a temporary `git worktree` with that
checkout's own program, plans the working tree the same way, and renders the difference as
Markdown (the pull-request comment, found again by its marker) or plain text.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mlops.paths import ROOT, stack_names
from mlops.plan import PLACEHOLDER_SECRET, SECRET, Plan, manifest_yaml

MARKER = "<!-- mlops-diff -->"
COMMENT_LIMIT = 60_000  # GitHub refuses comments over 65,536 characters
VALUE_WIDTH = 100
HIDDEN = "(not shown: Secret data)"
SECRET_NOTE = (
    "Secret values are redacted to `[secret]` in both plans, so a secret whose value changed looks "
    "unchanged here ({count} secret value(s) in this stack are not compared). Changed encrypted "
    "values in the stack file are listed under Config, without their values."
)


class DiffError(Exception):
    """A diff that could not be made at all (bad git ref, not a git checkout...)."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Sealed:
    """An encrypted config value: compared by its ciphertext, never printed."""

    token: str

    def __repr__(self) -> str:
        return "Sealed(...)"


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any = MISSING
    new: Any = MISSING
    hidden: bool = False  # value must not be printed (Kubernetes Secret data, sealed config)

    @property
    def kind(self) -> Literal["added", "removed", "changed"]:
        if self.old is MISSING:
            return "added"
        return "removed" if self.new is MISSING else "changed"


@dataclass
class ResourceChange:
    kind: Literal["added", "removed", "changed"]
    urn: str
    type: str
    name: str
    label: str  # "Deployment mlflow/mlflow", or "<type> <name>" for other resources
    fields: list[FieldChange] = field(default_factory=list)
    protected: bool = False
    manifest: dict[str, Any] | None = None
    note: str | None = None

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.fields]


@dataclass
class StackDiff:
    stack: str
    added: list[ResourceChange] = field(default_factory=list)
    removed: list[ResourceChange] = field(default_factory=list)
    changed: list[ResourceChange] = field(default_factory=list)
    unchanged: int = 0
    summary: list[FieldChange] = field(default_factory=list)
    outputs: list[FieldChange] = field(default_factory=list)
    config: list[FieldChange] = field(default_factory=list)
    secret_values: int = 0
    note: str | None = None
    error: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.summary or self.outputs or self.config)

    def resource(self, label_or_name: str) -> ResourceChange:
        for change in (*self.changed, *self.added, *self.removed):
            if label_or_name in (change.label, change.name, change.urn):
                return change
        raise KeyError(f"{label_or_name!r} is not among the differences of stack {self.stack!r}")


# ---- plans as data --------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanData:
    """What a diff reads of a plan: resources by URN, stack outputs, summary."""

    stack: str
    resources: dict[str, dict[str, Any]]
    outputs: dict[str, Any]
    summary: dict[str, Any]


PlanSource = Plan | PlanData | Path | str


def load_plan(source: PlanSource) -> PlanData:
    if isinstance(source, PlanData):
        return source
    if isinstance(source, Plan):
        summary = source.summary(str(source.outputs.get("platform", "unknown")))
        return PlanData(source.stack, {r["urn"]: r for r in source.resources}, dict(source.outputs), summary)
    folder = Path(source)
    records_path = folder / "resources.json"
    if not records_path.is_file():
        raise DiffError(f"{folder} is not a plan folder (no resources.json); write one with `mlops plan`")
    records = json.loads(records_path.read_text())
    summary = _read_json(folder / "summary.json")
    outputs = _read_json(folder / "outputs.json")
    stack = summary.get("stack") or _stack_of(records) or folder.name
    return PlanData(stack, {r["urn"]: r for r in records}, outputs, summary)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _stack_of(records: list[dict[str, Any]]) -> str | None:
    for record in records:
        match = re.match(r"^urn:pulumi:([^:]+)::", record.get("urn", ""))
        if match:
            return match.group(1)
    return None


def _manifest_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """The Kubernetes object a resource declares (`write_plan` keeps it as the resource's inputs)."""
    if record.get("manifest") is not None:
        return record["manifest"]
    inputs = record.get("inputs") or {}
    kind_token = record.get("type", "")
    if kind_token.startswith("kubernetes:") and not kind_token.startswith("kubernetes:helm.sh"):
        if "apiVersion" in inputs and "kind" in inputs:
            return inputs
    return None


def _label(record: dict[str, Any]) -> str:
    manifest = _manifest_of(record)
    if manifest is not None:
        meta = manifest.get("metadata") or {}
        where = f"{meta['namespace']}/" if meta.get("namespace") else ""
        return f"{manifest['kind']} {where}{meta.get('name', record['name'])}"
    return f"{record['type'].rsplit(':', 1)[-1]} {record['name']}"


def _k8s_identity(record: dict[str, Any]) -> tuple[str, str, str, str] | None:
    manifest = _manifest_of(record)
    if manifest is None:
        return None
    meta = manifest.get("metadata") or {}
    group = str(manifest.get("apiVersion", "")).rpartition("/")[0]
    return group, str(manifest.get("kind")), str(meta.get("namespace", "")), str(meta.get("name", ""))


# ---- comparing values -----------------------------------------------------------------------

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def join_path(path: str, key: str | int) -> str:
    """`spec.template.spec.containers[0]`; keys that are not identifiers are quoted: `labels["app.kubernetes.io/name"]`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _named(items: list[Any]) -> bool:
    """Lists Kubernetes merges by name (containers, env, volumes, ports...)."""
    names = [i.get("name") if isinstance(i, dict) else None for i in items]
    return bool(items) and all(isinstance(n, str) for n in names) and len(set(names)) == len(names)


def _leaves(value: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [leaf for key in sorted(value, key=str) for leaf in _leaves(value[key], join_path(path, key))]
    if isinstance(value, list) and value:
        return [leaf for index, item in enumerate(value) for leaf in _leaves(item, join_path(path, index))]
    return [(path, value)]


def _one_sided(path: str, old: Any, new: Any, out: list[FieldChange], most: int = 16) -> None:
    """An added or removed value; a small structure is spelled out leaf by leaf."""
    value, added = (new, True) if old is MISSING else (old, False)
    leaves = _leaves(value, path)
    if len(leaves) > most:
        leaves = [(path, value)]
    for sub, leaf in leaves:
        out.append(FieldChange(sub, MISSING, leaf) if added else FieldChange(sub, leaf, MISSING))


def diff_values(old: Any, new: Any, path: str = "", out: list[FieldChange] | None = None) -> list[FieldChange]:
    """Every leaf path where `old` and `new` differ, depth first, keys in sorted order."""
    out = [] if out is None else out
    if old == new:
        return out
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            sub = join_path(path, key)
            if key not in old or key not in new:
                _one_sided(sub, old.get(key, MISSING), new.get(key, MISSING), out)
            else:
                diff_values(old[key], new[key], sub, out)
    elif isinstance(old, list) and isinstance(new, list):
        _diff_lists(old, new, path, out)
    else:
        out.append(FieldChange(path, old, new))
    return out


def _diff_lists(old: list[Any], new: list[Any], path: str, out: list[FieldChange]) -> None:
    if not (_named(old) and _named(new)):
        for index in range(max(len(old), len(new))):
            before = old[index] if index < len(old) else MISSING
            after = new[index] if index < len(new) else MISSING
            if before is MISSING or after is MISSING:
                _one_sided(join_path(path, index), before, after, out)
            else:
                diff_values(before, after, join_path(path, index), out)
        return
    # Items matched by name: an inserted env var does not show as every later one changing.
    old_at = {item["name"]: (i, item) for i, item in enumerate(old)}
    new_names = [item["name"] for item in new]
    for index, item in enumerate(new):
        if item["name"] in old_at:
            diff_values(old_at[item["name"]][1], item, join_path(path, index), out)
        else:
            _one_sided(join_path(path, index), MISSING, item, out)
    for name, (index, item) in old_at.items():
        if name not in new_names:
            _one_sided(join_path(path, index), item, MISSING, out)
    common_old = [item["name"] for item in old if item["name"] in new_names]
    common_new = [n for n in new_names if n in old_at]
    if common_old != common_new:
        out.append(FieldChange(f"{path} (order of names)", common_old, common_new))


def _count_secrets(value: Any) -> int:
    if isinstance(value, dict):
        return sum(_count_secrets(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count_secrets(v) for v in value)
    return int(value in (SECRET, PLACEHOLDER_SECRET))


def _is_secret_data(record: dict[str, Any], path: str) -> bool:
    """Values of a Kubernetes Secret's data/stringData are never printed, redacted or not."""
    manifest = _manifest_of(record)
    return bool(manifest and manifest.get("kind") == "Secret" and re.match(r"^(data|stringData)\b", path))


# ---- the diff -------------------------------------------------------------------------------

_OPTIONS = (("protect", "(protect)"), ("provider", "(provider)"), ("parent", "(parent)"), ("depends_on", "(dependsOn)"))


def _short_urn(urn: Any) -> Any:
    """`urn:pulumi:dev::mlops-stack::a$b::name` → `b::name`: enough to name a resource in a diff."""
    if not isinstance(urn, str) or not urn.startswith("urn:pulumi:"):
        return urn
    qualified, _, name = urn.rpartition("::")
    return f"{qualified.rsplit('$', 1)[-1].rsplit('::', 1)[-1]}::{name}"


def _changes_of(before: dict[str, Any], after: dict[str, Any]) -> list[FieldChange]:
    fields = []
    for change in diff_values(before.get("inputs") or {}, after.get("inputs") or {}):
        hidden = _is_secret_data(after, change.path) or _is_secret_data(before, change.path)
        fields.append(FieldChange(change.path, change.old, change.new, hidden=hidden))
    for key, shown in _OPTIONS:
        old, new = before.get(key), after.get(key)
        if key == "depends_on":  # one line per dependency gained or lost
            old, new = set(map(_short_urn, old or [])), set(map(_short_urn, new or []))
            fields += [FieldChange(shown, urn, MISSING) for urn in sorted(old - new)]
            fields += [FieldChange(shown, MISSING, urn) for urn in sorted(new - old)]
            continue
        if key in ("provider", "parent"):
            old, new = _short_urn(old), _short_urn(new)
        if old != new:
            fields.append(FieldChange(shown, old, new))
    return fields


def _rekey(plan: PlanData, stack: str) -> PlanData:
    """The plan as if of `stack`: URNs carry the stack name, so two stacks' plans compare by the rest."""
    if plan.stack == stack:
        return plan
    text = json.dumps(plan.resources).replace(f"urn:pulumi:{plan.stack}::", f"urn:pulumi:{stack}::")
    return PlanData(stack, json.loads(text), plan.outputs, plan.summary)


def diff_plans(base: PlanSource | None, head: PlanSource | None, *,
               base_config: Mapping[str, Any] | None = None,
               head_config: Mapping[str, Any] | None = None) -> StackDiff:
    """The difference from `base` to `head` (either may be None: a stack added or removed).

    `base_config`/`head_config` are flat stack configs (`flatten_config`), compared without ever
    printing a sealed value.
    """
    if base is None and head is None:
        raise DiffError("nothing to compare: both plans are missing")
    head_data = load_plan(head) if head is not None else None
    base_data = load_plan(base) if base is not None else None
    stack = (head_data or base_data).stack  # type: ignore[union-attr]
    empty = PlanData(stack, {}, {}, {})
    base_data = _rekey(base_data, stack) if base_data else empty
    head_data = head_data or empty
    result = StackDiff(stack)
    if base is None:
        result.note = "new stack: not in the base"
    elif head is None:
        result.note = "stack removed: not in the head"

    old, new = base_data.resources, head_data.resources
    for urn in sorted(set(old) | set(new)):
        record = new.get(urn) or old[urn]
        common = dict(urn=urn, type=record["type"], name=record["name"], label=_label(record))
        if urn not in old:
            result.added.append(ResourceChange("added", manifest=_manifest_of(record),
                                               protected=bool(record.get("protect")), **common))
        elif urn not in new:
            result.removed.append(ResourceChange("removed", protected=bool(record.get("protect")), **common))
        else:
            fields = _changes_of(old[urn], new[urn])
            if fields:
                result.changed.append(ResourceChange("changed", fields=fields,
                                                     protected=bool(record.get("protect")), **common))
            else:
                result.unchanged += 1
    _explain_renames(result, old, new)
    for change in result.removed:
        if change.protected and change.note is None:
            change.note = "protected: `pulumi up` refuses to delete it until `protect` is lifted"

    result.summary = diff_values(base_data.summary, head_data.summary)
    result.outputs = diff_values(base_data.outputs, head_data.outputs)
    if base_config is not None or head_config is not None:
        result.config = _config_changes(base_config or {}, head_config or {})
    result.secret_values = sum(_count_secrets(r.get("inputs")) for r in new.values()) + _count_secrets(head_data.outputs)
    return result


def _explain_renames(result: StackDiff, old: dict[str, Any], new: dict[str, Any]) -> None:
    """A Kubernetes object whose logical name changed: Pulumi replaces it (delete + create)."""
    removed = {_k8s_identity(old[c.urn]): c for c in result.removed if _k8s_identity(old[c.urn])}
    for change in result.added:
        twin = removed.get(_k8s_identity(new[change.urn]))
        if twin is not None:
            hint = "same object, new URN: Pulumi replaces it unless the resource gets `aliases=`"
            change.note = f"{hint} (was `{_short_urn(twin.urn)}`)"
            twin.note = f"{hint} (now `{_short_urn(change.urn)}`)"


# ---- stack config ---------------------------------------------------------------------------

def flatten_config(document: Mapping[str, Any] | None) -> dict[str, Any]:
    """A stack file's `config:` as dotted keys; `secure:` values become `Sealed` (never printed)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and set(value) == {"secure"}:
            flat[prefix] = Sealed(str(value["secure"]))
        elif isinstance(value, dict) and value:
            for key, sub in value.items():
                walk(join_path(prefix, str(key)), sub)
        elif isinstance(value, list) and value:
            for index, sub in enumerate(value):
                walk(join_path(prefix, index), sub)
        else:
            flat[prefix] = value

    for key, value in ((document or {}).get("config") or {}).items():
        walk(key, value)
    return flat


def config_of_stack_file(path: Path) -> dict[str, Any] | None:
    return flatten_config(yaml.safe_load(path.read_text()) or {}) if path.is_file() else None


def _config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[FieldChange]:
    changes = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, MISSING), new.get(key, MISSING)
        if before != after:
            hidden = isinstance(before, Sealed) or isinstance(after, Sealed)
            changes.append(FieldChange(key, before, after, hidden=hidden))
    return changes


# ---- rendering ------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    if isinstance(value, Sealed):
        return SECRET
    if value == PLACEHOLDER_SECRET:
        return SECRET  # stands in for an encrypted config value
    return value


def show(value: Any, width: int = VALUE_WIDTH) -> str:
    if value is MISSING:
        return "(none)"
    text = json.dumps(_plain(value), sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def show_pair(change: FieldChange, width: int = VALUE_WIDTH) -> tuple[str, str]:
    """Old and new value as text; long strings are cut around the part that differs."""
    if change.hidden:
        return {
            "added": ("(none)", "(set, not shown)"),
            "removed": ("(not shown)", "(none)"),
            "changed": ("(not shown)", "(changed, not shown)"),
        }[change.kind]
    old, new = _plain(change.old), _plain(change.new)
    if isinstance(old, str) and isinstance(new, str) and max(len(old), len(new)) > width - 2:
        start = 0
        while start < min(len(old), len(new)) and old[start] == new[start]:
            start += 1
        end = 0
        while end < min(len(old), len(new)) - start and old[-1 - end] == new[-1 - end]:
            end += 1
        context = 12
        cut = max(0, start - context)

        def around(text: str) -> str:
            stop = len(text) - max(0, end - context)
            middle = text[cut:stop]
            return ("…" if cut else "") + middle + ("…" if stop < len(text) else "")

        return show(around(old), width), show(around(new), width)
    return show(old, width), show(new, width)


_SIGN = {"added": "+", "removed": "-", "changed": "~"}


@dataclass
class DiffReport:
    """Differences of one or more stacks between two versions of the project."""

    base: str
    head: str
    stacks: list[StackDiff]

    @property
    def ok(self) -> bool:
        return all(s.error is None for s in self.stacks)

    def render(self, fmt: Literal["markdown", "text"] = "markdown") -> str:
        return render_markdown(self) if fmt == "markdown" else render_text(self)


def _counts(diff: StackDiff) -> str:
    if diff.error:
        return "plan failed"
    return (f"{len(diff.added)} added, {len(diff.changed)} changed, {len(diff.removed)} removed, "
            f"{diff.unchanged} unchanged")


def render_text(report: DiffReport) -> str:
    lines = [f"mlops diff: {report.base} → {report.head}"]
    for diff in report.stacks:
        lines += ["", f"== stack {diff.stack}: {_counts(diff)}"]
        if diff.note:
            lines.append(f"   ({diff.note})")
        if diff.error:
            lines += ["   " + line for line in diff.error.splitlines()]
            continue
        if diff.empty:
            lines.append("   no change")
        for title, changes in (("config", diff.config), ("summary", diff.summary), ("outputs", diff.outputs)):
            if changes:
                lines.append(f"{title}:")
                lines += [f"  {_SIGN[c.kind]} {c.path}: {' → '.join(show_pair(c))}" for c in changes]
        for change in (*diff.changed, *diff.added, *diff.removed):
            lines.append(f"{_SIGN[change.kind]} {change.label}  [{change.name}, {change.type}]")
            if change.note:
                lines.append(f"    note: {change.note}")
            lines += [f"    {_SIGN[c.kind]} {c.path}: {' → '.join(show_pair(c))}" for c in change.fields]
        lines.append("note: " + SECRET_NOTE.replace("`", "").format(count=diff.secret_values))
    return "\n".join(lines) + "\n"


def _code(text: str) -> str:
    """Inline code safe inside a Markdown table cell."""
    text = text.replace("|", "\\|")
    ticks = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (ticks + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _table(changes: Sequence[FieldChange]) -> list[str]:
    rows = ["| | path | base | head |", "|---|---|---|---|"]
    for change in changes:
        old, new = show_pair(change)
        rows.append(f"| {_SIGN[change.kind]} | {_code(change.path)} | {_code(old)} | {_code(new)} |")
    return rows


def _markdown_stack(diff: StackDiff, manifests: bool) -> list[str]:
    lines = [f"### `{diff.stack}` — {_counts(diff)}", ""]
    if diff.note:
        lines += [f"_{diff.note}_", ""]
    if diff.error:
        return lines + ["```text", diff.error.rstrip(), "```", ""]
    if diff.empty:
        return lines + ["No change.", ""]
    for title, changes in (("Config", diff.config), ("Summary", diff.summary), ("Stack outputs", diff.outputs)):
        if changes:
            lines += [f"**{title}**", "", *_table(changes), ""]
    for change in diff.changed:
        lines += [f"#### ~ {change.label}", f"`{change.name}` · `{change.type}`", ""]
        if change.note:
            lines += [f"> {change.note}", ""]
        lines += [*_table(change.fields), ""]
    for kind, changes in (("Added", diff.added), ("Removed", diff.removed)):
        if not changes:
            continue
        lines += [f"**{kind}**", ""]
        for change in changes:
            extra = f" — {change.note}" if change.note else ""
            lines.append(f"- {change.label} (`{change.name}` · `{change.type}`){extra}")
            if manifests and change.manifest is not None:
                lines += ["  <details><summary>manifest</summary>", "", "  ```yaml",
                          *["  " + line for line in manifest_yaml(change.manifest).splitlines()],
                          "  ```", "  </details>"]
        lines.append("")
    lines += ["<sub>" + SECRET_NOTE.format(count=diff.secret_values) + "</sub>", ""]
    return lines


def render_markdown(report: DiffReport, limit: int = COMMENT_LIMIT) -> str:
    """The pull-request comment; `MARKER` lets the workflow find and update it instead of adding one."""
    head = [
        MARKER,
        "## Infra diff (offline plans)",
        "",
        f"Base {report.base} → head {report.head}",
        "",
        "| stack | added | changed | removed | unchanged |",
        "|---|---:|---:|---:|---:|",
    ]
    for diff in report.stacks:
        if diff.error:
            head.append(f"| `{diff.stack}` | plan failed | | | |")
        else:
            head.append(f"| `{diff.stack}` | {len(diff.added)} | {len(diff.changed)} | {len(diff.removed)} | {diff.unchanged} |")
    tail = [
        "---",
        "<sub>Made by `mlops diff` from offline plans (the real program under Pulumi mocks): what the "
        "code declares, not the live state. Whether a change updates in place or replaces a resource "
        "is decided by the providers: see `pulumi preview --diff` where credentials exist.</sub>",
    ]
    for manifests in (True, False):
        body = [line for diff in report.stacks for line in _markdown_stack(diff, manifests)]
        text = "\n".join([*head, "", *body, *tail]) + "\n"
        if len(text) <= limit:
            return text
    # Still too long: keep whole lines while they fit, close an open code block, say so.
    cut = ["", "_… cut to fit a comment: run `mlops diff` locally or read the job summary for all of it._", ""]
    budget = limit - len("\n".join([*head, "", *cut, "```", *tail])) - 2
    kept: list[str] = []
    for line in body:
        if len(line) + 1 > budget:
            break
        kept.append(line)
        budget -= len(line) + 1
    if sum(line.lstrip().startswith("```") for line in kept) % 2:
        kept.append("```")
    return "\n".join([*head, "", *kept, *cut, *tail]) + "\n"


# ---- git: plan the base commit with its own program -----------------------------------------

def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise DiffError(f"`git {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout.strip()


def _plan_in(tree: Path, stack: str, out: Path) -> str | None:
    """Run `python -m mlops plan` of the checkout `tree`; the error text if it failed."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "mlops", "plan", "--stack", stack, "--out", str(out)]
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode == 0:
        return None
    tail = "\n".join(result.stderr.strip().splitlines()[-25:])
    return f"`mlops plan --stack {stack}` failed (exit {result.returncode}):\n{tail}"


def diff_against_ref(base_ref: str, stacks: Iterable[str] | None = None, repo: Path = ROOT) -> DiffReport:
    """Plan every stack at `base_ref` (a temporary worktree) and in `repo`'s working tree; diff them."""
    repo = Path(repo)
    _git(repo, "rev-parse", "--git-dir")
    found = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{base_ref}^{{commit}}"],
                           capture_output=True, text=True)
    base_sha = found.stdout.strip() if found.returncode == 0 and base_ref else ""
    if not base_sha:
        raise DiffError(f"unknown git ref {base_ref!r} (in CI, fetch it: actions/checkout with fetch-depth 0 or 2)")
    head_sha = _git(repo, "rev-parse", "--short=12", "HEAD")
    dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))
    head_label = f"`{head_sha}`" + (" + uncommitted changes" if dirty else "")
    base_label = f"`{base_ref}` (`{base_sha[:12]}`)" if base_ref[:12] != base_sha[:12] else f"`{base_sha[:12]}`"

    scratch = Path(tempfile.mkdtemp(prefix="mlops-diff-"))
    tree = scratch / "base"
    try:
        _git(repo, "worktree", "add", "--detach", "--quiet", str(tree), base_sha)
        trees = {"base": tree, "head": repo}
        present = {side: set(stack_names(t / "stacks")) if (t / "stacks").is_dir() else set() for side, t in trees.items()}
        wanted = list(stacks) if stacks else sorted(present["base"] | present["head"])
        unknown = [s for s in wanted if s not in present["base"] | present["head"]]
        if unknown:
            raise DiffError(f"no stack file for {', '.join(unknown)} in base or head; stacks: "
                            f"{', '.join(sorted(present['base'] | present['head']))}")
        jobs = [(side, s) for s in wanted for side in trees if s in present[side]]
        with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
            errors = dict(zip(jobs, pool.map(lambda j: _plan_in(trees[j[0]], j[1], scratch / j[0] / j[1]), jobs)))
        results = []
        for stack in wanted:
            failed = [f"{side}: {errors[(side, stack)]}" for side in trees if errors.get((side, stack))]
            if failed:
                results.append(StackDiff(stack, error="\n".join(failed)))
                continue
            plans = {side: (scratch / side / stack if stack in present[side] else None) for side in trees}
            configs = {side: config_of_stack_file(trees[side] / "stacks" / f"Pulumi.{stack}.yaml") for side in trees}
            diff = diff_plans(plans["base"], plans["head"], base_config=configs["base"], head_config=configs["head"])
            results.append(diff)
        return DiffReport(base_label, head_label, results)
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], capture_output=True)
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
