"""Which stacks CI may preview and deploy, as GitHub Actions matrices.

CI only touches the stacks named in the repository variable MLOPS_CI_STACKS (JSON list or
comma/space separated): a laptop's minikube stack is not reachable from a hosted runner, and a
stack is opted in once its state backend and keyless cloud auth are set up. Each stack's
environment (from its stack file) decides the lane: dev/staging are deployed on merge, prod
only through the protected `production` environment.

Writes `preview`, `deploy` and `prod` (JSON lists of {stack, platform, environment}) to
$GITHUB_OUTPUT, or prints them when run by hand.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import yaml

PROJECT = "mlops-stack"


def selected(raw: str) -> list[str]:
    raw = raw.strip()
    if not raw:
        return []
    names = json.loads(raw) if raw.startswith("[") else re.split(r"[\s,]+", raw)
    return [str(n).strip() for n in names if str(n).strip()]


def stack_entries(stacks_dir: Path, names: list[str]) -> list[dict[str, str]]:
    entries = []
    for name in names:
        path = stacks_dir / f"Pulumi.{name}.yaml"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not path.is_file():
            known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in stacks_dir.glob("Pulumi.*.yaml"))
            raise SystemExit(f"MLOPS_CI_STACKS names {name!r}, which has no stack file {path}; stacks: {', '.join(known)}")
        config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
        entries.append({
            "stack": name,
            "platform": str(config.get(f"{PROJECT}:platform", "minikube")),
            "environment": str(config.get(f"{PROJECT}:environment", "dev")),
        })
    return entries


def lanes(entries: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    return {
        "preview": entries,
        "deploy": [e for e in entries if e["environment"] != "prod"],
        "prod": [e for e in entries if e["environment"] == "prod"],
    }


def main() -> int:
    stacks_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "stacks")
    result = lanes(stack_entries(stacks_dir, selected(os.environ.get("MLOPS_CI_STACKS", ""))))
    lines = [f"{lane}={json.dumps(items, separators=(',', ':'))}" for lane, items in result.items()]
    target = os.environ.get("GITHUB_OUTPUT")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
