"""Where the project's files are, wherever the command is run from."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "infra"
STACKS = ROOT / "stacks"
PROJECT = "mlops-stack"


def stack_names(stacks_dir: Path | None = None) -> list[str]:
    folder = stacks_dir or STACKS
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in folder.glob("Pulumi.*.yaml"))


def stack_file(stack: str, stacks_dir: Path | None = None) -> Path:
    path = (stacks_dir or STACKS) / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no stack file {path}; stacks: {', '.join(stack_names(stacks_dir))}")
    return path
