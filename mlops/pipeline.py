"""What the model pipeline (.github/workflows/model-pipeline.yml) asks of this repository.

    python -m mlops.pipeline build-args <workload>   # context=…, file=…, target=… for $GITHUB_OUTPUT

The image of a demo workload is built exactly as the stack builds it (`infra.images.PROJECT_BUILDS`:
the repository root as context, the workload's Dockerfile, its target), so CI and `pulumi up` cannot
drift apart.
"""

from __future__ import annotations

import sys

from infra.images import PROJECT_BUILDS, ROOT


def build_args(workload: str) -> dict[str, str]:
    if workload not in PROJECT_BUILDS:
        raise KeyError(f"{workload!r} is not built from this repository (infra.images.PROJECT_BUILDS has "
                       f"{sorted(PROJECT_BUILDS)})")
    context, dockerfile, target = PROJECT_BUILDS[workload]
    return {"context": str(context.relative_to(ROOT)) or ".",
            "file": str((dockerfile or context / "Dockerfile").relative_to(ROOT)),
            "target": target or ""}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "build-args":
        print("usage: python -m mlops.pipeline build-args <workload>", file=sys.stderr)
        return 2
    try:
        print("\n".join(f"{k}={v}" for k, v in build_args(argv[1]).items()))
    except KeyError as error:
        print(f"mlops.pipeline: {error.args[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
