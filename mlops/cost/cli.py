"""Arguments and entry point of `mlops cost` (registered in mlops/cli.py)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pulumi

from infra.settings import ConfigError
from mlops.cost.prices import PricingError
from mlops.cost.usage import UsageError

FORMATS = ("table", "markdown", "json", "html")


def _targets(text: str) -> list[str]:
    targets = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in targets if t not in ("gke", "eks", "onprem")]
    if bad:
        raise argparse.ArgumentTypeError(f"{', '.join(bad)}: allowed targets are gke, eks, onprem")
    return targets


def add_arguments(parser: argparse.ArgumentParser, stacks: str) -> None:
    parser.add_argument("--stack", action="append",
                        help=f"one of: {stacks} (repeatable with --base; default there: every stack)")
    parser.add_argument("--compare", type=_targets, default=[], help="also price on these targets: gke,eks,onprem")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--usage", type=Path, help="usage file overriding pricing/usage.default.yaml")
    parser.add_argument("--out", help="write the report to this file instead of stdout")
    parser.add_argument("--stacks-dir", help="folder of Pulumi.<stack>.yaml files (default: stacks/)")
    parser.add_argument("--refresh", action="store_true",
                        help="first update pricing/ from the AWS Price List and Cloud Billing Catalog APIs "
                             "(needs AWS credentials, GOOGLE_API_KEY and network)")
    parser.add_argument("--base", help="git ref: print the cost diff of the working tree against it "
                                       "(formats: table or markdown)")


def _emit(text: str, out: str | None) -> None:
    if out:
        Path(out).write_text(text)
    else:
        print(text, end="")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.base:
        from mlops.cost.diff import DiffError, cost_against_ref, render_cost_markdown, render_cost_text

        try:
            diff = cost_against_ref(args.base, args.stack)
        except DiffError as error:
            print(f"mlops cost: {error}", file=sys.stderr)
            return 2
        _emit(render_cost_markdown(diff) if args.format == "markdown" else render_cost_text(diff), args.out)
        print(f"cost diff against {args.base!r} in {time.perf_counter() - started:.2f} s", file=sys.stderr)
        return 0 if diff.ok else 1
    if args.refresh:
        from mlops.cost.prices import price_file
        from mlops.cost.refresh import refresh

        for target in ("eks", "gke"):
            try:
                print(refresh(target), file=sys.stderr)
            except Exception as error:  # noqa: BLE001 (credentials, network, API answers: all reported alike)
                print(f"mlops cost --refresh: {target}: {type(error).__name__}: {error}", file=sys.stderr)
                return 2
        price_file.cache_clear()
    if not args.stack or len(args.stack) != 1:
        print("mlops cost: give one --stack (several, or none for every stack, only with --base)", file=sys.stderr)
        return 2
    from mlops.cost.report import RENDERERS, build_report

    stack = args.stack[0]
    try:
        report = build_report(stack, args.compare, args.usage, Path(args.stacks_dir) if args.stacks_dir else None)
    except (ConfigError, UsageError, PricingError, FileNotFoundError, pulumi.RunError) as error:
        print(f"mlops cost: stack {stack!r}: {error}", file=sys.stderr)
        return 2
    _emit(RENDERERS[args.format](report), args.out)
    where = f" written to {args.out}" if args.out else ""
    print(f"cost of {stack!r}{where} in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    return 0
