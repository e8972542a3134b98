"""Where the project's files are, wherever the command is run from."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "infra"
STACKS = ROOT / "stacks"
PROJECT = "mlops-stack"


def stack_names() -> list[str]:
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in STACKS.glob("Pulumi.*.yaml"))


def stack_file(stack: str) -> Path:
    path = STACKS / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no stack file {path.relative_to(ROOT)}; stacks: {', '.join(stack_names())}")
    return path
