"""`mlops`: the project's command line (offline plan, validation, diff)."""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import pulumi

from infra.settings import ConfigError, parse_stack_config, raw_from_pulumi_config
from mlops.paths import ROOT, stack_names


def _load(stack: str, stacks_dir: str | None):
    """(config, plan) for a stack, or exit 2 with the config problems."""
    from mlops.plan import run_program, stack_config

    try:
        values, secret_keys = stack_config(stack, Path(stacks_dir) if stacks_dir else None)
        raw, secret_top = raw_from_pulumi_config(values, secret_keys)
        config = parse_stack_config(raw, secret_top)
        return config, run_program(stack, (values, secret_keys))
    except (ConfigError, pulumi.RunError, FileNotFoundError) as error:
        print(f"mlops: stack {stack!r}: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_plan(args: argparse.Namespace) -> int:
    from mlops.plan import write_plan

    started = time.perf_counter()
    # The plan's hundreds of thousands of cycles (mlops.plan._no_collection) are never collected: a
    # command's process exits after it. Frozen, they are skipped by the interpreter's last collection
    # too (~1 s for a class of 60 tenants); an in-process caller gets collection back, not them.
    collecting = gc.isenabled()
    gc.disable()
    try:
        config, plan = _load(args.stack, args.stacks_dir)
        out = Path(args.out) if args.out else ROOT / "build" / "plan" / args.stack
        summary = write_plan(plan, config.platform, out)
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
    print(json.dumps(summary, indent=2))
    print(f"plan of {args.stack!r} written to {out} in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from infra.platforms import cluster_facts
    from mlops.validate import validate_plan

    config, plan = _load(args.stack, args.stacks_dir)
    print(f"config of {args.stack!r}: valid ({config.platform}, {config.environment})")
    report = validate_plan(plan, config.kubernetes.version, cluster_facts(config))
    print(report.render())
    return 0 if report.ok else 1


def cmd_local_images(args: argparse.Namespace) -> int:
    """One tab-separated line per image `make up` builds into minikube: ref, context, the Dockerfile
    relative to the context, target ("-" for the default Dockerfile or no target)."""
    from infra.images import local_builds
    from mlops.plan import stack_config

    try:
        values, secret_keys = stack_config(args.stack, Path(args.stacks_dir) if args.stacks_dir else None)
        config = parse_stack_config(*raw_from_pulumi_config(values, secret_keys))
    except (ConfigError, FileNotFoundError) as error:
        print(f"mlops: stack {args.stack!r}: {error}", file=sys.stderr)
        return 2
    for build in local_builds(config):
        dockerfile = build.dockerfile.relative_to(build.context)
        print("\t".join([build.ref, str(build.context.relative_to(ROOT)),
                         "-" if dockerfile == Path("Dockerfile") else str(dockerfile), build.target or "-"]))
    return 0


def cmd_new_model(args: argparse.Namespace) -> int:
    """Write a model repository starter (mlops/new_model.py)."""
    from mlops import new_model

    repo = args.pipeline_repo or new_model.default_repository()
    ref = args.pipeline_ref or new_model.default_ref()
    if repo is None or ref is None:
        print("mlops new-model: pass --pipeline-repo OWNER/mlops-stack and --pipeline-ref <commit SHA or vX.Y.Z> "
              "(this checkout has no GitHub origin or no commit to default to)", file=sys.stderr)
        return 2
    try:
        starter = new_model.check(new_model.Starter(args.name, repo, ref))
        if args.stack:
            starter = new_model.from_stack(starter, args.stack, Path(args.stacks_dir) if args.stacks_dir else None)
        written = new_model.write(Path(args.dir), starter)
    except (new_model.StarterError, ConfigError, FileNotFoundError) as error:
        print(f"mlops new-model: {error}", file=sys.stderr)
        return 2
    print(f"{len(written)} files written to {args.dir}: pipeline {repo}@{ref}, runs-on {starter.runs_on}"
          f"{', builder ' + starter.builder if starter.builder else ''}")
    print(f"serve it: add to the stack file (README.md of the starter, step 4):\n{new_model.serving_snippet(args.name)}")
    return 0


def cmd_config_reference(args: argparse.Namespace) -> int:
    from mlops.readme import update
    from mlops.reference import config_reference

    table = config_reference()
    if args.write_readme:
        update("config-reference", table)
    else:
        print(table)
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    from mlops.models import resolve

    print(resolve(args.name, args.alias, args.artifacts_destination))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from mlops.diff import DiffError, diff_against_ref

    started = time.perf_counter()
    try:
        report = diff_against_ref(args.base, args.stack)
    except DiffError as error:
        print(f"mlops diff: {error}", file=sys.stderr)
        return 2
    text = report.render(args.format)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    where = f" written to {args.out}" if args.out else ""
    print(f"diff against {args.base!r}{where} in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_smoke(args: argparse.Namespace) -> int:
    from mlops import smoke

    outputs = _outputs(args, "smoke")
    if outputs is None:
        return 2

    def get(url: str, auth: tuple[str, str] | None) -> smoke.Reply:
        return smoke.http_get(url, auth, args.timeout, verify_tls=not args.insecure)

    checks = smoke.run_checks(outputs, get)
    print(smoke.render(checks))
    return 0 if checks and all(c.ok for c in checks) else 1


def _outputs(args: argparse.Namespace, command: str) -> dict | None:
    from mlops import smoke

    try:
        return (json.loads(Path(args.outputs).read_text()) if args.outputs
                else smoke.stack_outputs(args.stack, str(ROOT)))
    except (OSError, ValueError, RuntimeError) as error:
        print(f"mlops {command}: {error}", file=sys.stderr)
        return None


def cmd_train(args: argparse.Namespace) -> int:
    from mlops import train

    outputs = _outputs(args, "train")
    if outputs is None:
        return 2
    try:
        return train.run(args.workload, outputs, args.train_args, insecure=args.insecure)
    except ValueError as error:
        print(f"mlops train: {error}", file=sys.stderr)
        return 2


def _registry_client(args: argparse.Namespace, command: str):
    """An MLflow client for the stack's registry: from its outputs when --stack/--outputs are
    given, else from MLFLOW_TRACKING_URI (+ _USERNAME/_PASSWORD)."""
    import os

    from mlflow import MlflowClient

    from mlops import train

    if args.stack or args.outputs:
        outputs = _outputs(args, command)
        if outputs is None:
            return None
        try:
            os.environ.update(train.training_env(outputs, args.insecure))
        except ValueError as error:
            print(f"mlops {command}: {error}", file=sys.stderr)
            return None
    elif not os.environ.get("MLFLOW_TRACKING_URI"):
        print(f"mlops {command}: give --stack (or --outputs), or set MLFLOW_TRACKING_URI", file=sys.stderr)
        return None
    return MlflowClient()


def cmd_rollback(args: argparse.Namespace) -> int:
    from mlops import registry

    client = _registry_client(args, "rollback")
    if client is None:
        return 2
    try:
        print(registry.rollback(client, args.model))
    except LookupError as error:
        print(f"mlops rollback: {error}", file=sys.stderr)
        return 1
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from mlops import registry

    client = _registry_client(args, "lineage")
    if client is None:
        return 2
    try:
        print(registry.lineage(client, args.model, args.alias))
    except LookupError as error:
        print(f"mlops lineage: {error}", file=sys.stderr)
        return 1
    return 0


def cmd_delivery(args: argparse.Namespace) -> int:
    """Lead time, deployment frequency, change failure rate, time to restore (mlops/delivery.py)."""
    from mlops import delivery, registry

    client = _registry_client(args, "delivery")
    if client is None:
        return 2
    return delivery.run(args, client, [registry.registered_name(m) for m in args.model or []])


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mlops.evaluate import run

    return run(args)


def cmd_drift(args: argparse.Namespace) -> int:
    from mlops import drift

    drift.print_report(drift.run(args))
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from mlops import feedback

    return feedback.run(args)


def cmd_models(args: argparse.Namespace) -> int:
    """The catalog (mlops/catalog.py): what each model endpoint says it serves."""
    from mlops import catalog

    if not (args.stack or args.outputs):
        print("mlops models: give --outputs FILE or --stack STACK", file=sys.stderr)
        return 2
    outputs = _outputs(args, "models")
    if outputs is None:
        return 2
    try:
        items = catalog.endpoints(outputs, [args.tenant] if args.tenant else None)
    except ValueError as error:
        print(f"mlops models: {error}", file=sys.stderr)
        return 2
    entries = catalog.catalog(items, catalog.http_get(args.timeout, verify_tls=not args.insecure))
    print(catalog.render_json(entries) if args.format == "json" else catalog.render_table(entries))
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    from mlops.cost.cli import run

    return run(args)


def _plan_objects(args: argparse.Namespace) -> list[dict]:
    _, plan = _load(args.stack, args.stacks_dir)
    return list(plan.kubernetes_objects)


def cmd_restore(args: argparse.Namespace) -> int:
    """Print the recovery Cluster and the steps; carry them out only with --yes."""
    from datetime import datetime, timezone

    from mlops import restore

    objects = _plan_objects(args)
    try:
        target = restore.parse_time(args.to) if args.to else None
        stamp = datetime.now(timezone.utc).strftime("r%Y%m%d%H%M")
        plan = restore.restore_plan(objects, target, stamp, from_offsite=args.from_offsite)
    except (restore.RestoreError, ValueError) as error:
        print(f"mlops restore: {error}", file=sys.stderr)
        return 2
    print(json.dumps(plan.cluster, indent=2))
    print(plan.render())
    if not args.yes:
        print("nothing done: add --yes to apply this on the current kubectl context", file=sys.stderr)
        return 0
    restore.run(plan)
    return 0


def cmd_backup_check(args: argparse.Namespace) -> int:
    """Newest base backup age and WAL continuity of the stack's archive (barman-cloud-backup-list)."""
    import os
    from datetime import timedelta

    from mlops import restore

    objects = _plan_objects(args)
    try:
        archive = restore.Archive.of_cluster(restore.find_cluster(objects))
        if args.endpoint_url:
            archive = archive.at(archive.destination_path, args.endpoint_url)
        max_age = (timedelta(hours=args.max_age_hours) if args.max_age_hours else
                   restore.longest_gap(restore.schedule_of(objects)) + timedelta(hours=1))
        result = restore.check_archive(archive, os.environ, max_age)
    except restore.RestoreError as error:
        print(f"mlops backup-check: {error}", file=sys.stderr)
        return 2
    print(result.render())
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # the commands whose modules load numpy get their arguments only when invoked: `mlops plan` is timed
    invoked = argv[0] if argv else None
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    stacks = ", ".join(stack_names())

    plan = commands.add_parser("plan", help="run the program offline and write its plan")
    plan.add_argument("--stack", required=True, help=f"one of: {stacks}")
    plan.add_argument("--out", help="output directory (default: build/plan/<stack>)")
    plan.add_argument("--stacks-dir", help="folder of Pulumi.<stack>.yaml files (default: stacks/)")
    plan.set_defaults(run=cmd_plan)

    validate = commands.add_parser("validate", help="check config and every manifest against the schema")
    validate.add_argument("--stack", required=True, help=f"one of: {stacks}")
    validate.add_argument("--stacks-dir", help="folder of Pulumi.<stack>.yaml files (default: stacks/)")
    validate.set_defaults(run=cmd_validate)

    local = commands.add_parser("local-images", help="images `make up` builds into minikube for a stack")
    local.add_argument("--stack", required=True, help=f"one of: {stacks}")
    local.add_argument("--stacks-dir", help="folder of Pulumi.<stack>.yaml files (default: stacks/)")
    local.set_defaults(run=cmd_local_images)

    reference = commands.add_parser("config-reference", help="print the config key reference (Markdown)")
    reference.add_argument("--write-readme", action="store_true", help="update the table in README.md")
    reference.set_defaults(run=cmd_config_reference)

    models = commands.add_parser("resolve-model", help="bucket URI of models:/<name>@<alias> (for serving.models)")
    models.add_argument("--name", required=True, help="registered model name, e.g. NEOs")
    models.add_argument("--alias", default="champion")
    models.add_argument("--artifacts-destination", default="s3://mlflow-artifacts",
                        help="the server's --artifacts-destination (stack output `buckets`)")
    models.set_defaults(run=cmd_resolve)

    diff = commands.add_parser("diff", help="diff the plans of a git ref and of the working tree")
    diff.add_argument("--base", required=True, help="git ref to compare against (e.g. origin/main, HEAD^1)")
    diff.add_argument("--stack", action="append", help="a stack to diff (repeatable; default: every stack)")
    diff.add_argument("--format", choices=("markdown", "text"), default="text", help="output format (default: text)")
    diff.add_argument("--out", help="write the diff to this file instead of stdout")
    diff.set_defaults(run=cmd_diff)

    def deployed_stack_arguments(command: argparse.ArgumentParser) -> None:
        """A deployed stack, known by its outputs (`pulumi stack output`, or a saved copy)."""
        command.add_argument("--stack", required=True, help=f"one of: {stacks}")
        command.add_argument("--outputs", help="JSON file of the stack outputs (default: `pulumi stack output`)")
        command.add_argument("--insecure", action="store_true", help="accept self-signed TLS certificates (dev)")

    smoke = commands.add_parser("smoke", help="check a deployed stack end to end (MLflow, Grafana, models)")
    deployed_stack_arguments(smoke)
    smoke.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default: 10)")
    smoke.set_defaults(run=cmd_smoke)

    train = commands.add_parser("train", help="run a workload's training against a stack's MLflow",
                                usage="mlops train {energy,neo,mnist} --stack STACK [options] [-- TRAIN_ARGS ...]",
                                epilog="arguments after `--` go to python -m workloads.<workload>.train")
    from mlops.train import WORKLOADS

    train.add_argument("workload", choices=WORKLOADS)
    deployed_stack_arguments(train)
    train.set_defaults(run=cmd_train)

    def registry_arguments(command: argparse.ArgumentParser) -> None:
        command.add_argument("--model", required=True, help="workload (energy, neo, mnist) or registered model name")
        command.add_argument("--stack", help=f"one of: {stacks} (default: MLFLOW_TRACKING_URI from the environment)")
        command.add_argument("--outputs", help="JSON file of the stack outputs (default: `pulumi stack output`)")
        command.add_argument("--insecure", action="store_true", help="accept self-signed TLS certificates (dev)")

    rollback = commands.add_parser("rollback", help="move a model's champion alias back to the previous champion")
    registry_arguments(rollback)
    rollback.set_defaults(run=cmd_rollback)

    lineage = commands.add_parser("lineage", help="version, run, datasets, commit and image behind an alias")
    registry_arguments(lineage)
    lineage.add_argument("--alias", default="champion")
    lineage.set_defaults(run=cmd_lineage)

    delivery = commands.add_parser("delivery", help="delivery (DORA) metrics per model: lead time, deployment "
                                                    "frequency, change failure rate, time to restore")
    delivery.add_argument("--stack", help=f"one of: {stacks} (default: MLFLOW_TRACKING_URI from the environment)")
    delivery.add_argument("--outputs", help="JSON file of the stack outputs (default: `pulumi stack output`)")
    delivery.add_argument("--insecure", action="store_true", help="accept self-signed TLS certificates (dev)")
    if invoked == "delivery":
        from mlops.delivery import add_arguments as delivery_arguments

        delivery_arguments(delivery)
    delivery.set_defaults(run=cmd_delivery)

    new = commands.add_parser("new-model", help="write a model repository starter: test, build, register, serve, promote")
    new.add_argument("dir", help="new or empty directory to write the repository into")
    new.add_argument("--name", required=True, help="registered model and workload name (a DNS label)")
    new.add_argument("--stack", help=f"one of: {stacks}: its in-cluster runners and builder (ci.runners) go into the workflow")
    new.add_argument("--stacks-dir", help="directory of the Pulumi.<stack>.yaml files (default: stacks/)")
    new.add_argument("--pipeline-repo", help="owner/name of mlops-stack on GitHub (default: this checkout's origin)")
    new.add_argument("--pipeline-ref", help="commit SHA or vX.Y.Z tag of model-pipeline.yml (default: this checkout's HEAD)")
    new.set_defaults(run=cmd_new_model)

    evaluate = commands.add_parser("evaluate", help="score every (tenant) model on the same held-out data: "
                                                    "leaderboard, MLflow, Prometheus")
    if invoked == "evaluate":
        from mlops.evaluate import add_arguments as evaluate_arguments

        evaluate_arguments(evaluate)
    evaluate.set_defaults(run=cmd_evaluate)

    drift_cmd = commands.add_parser("drift", help="served traffic vs the training reference: drift scores, "
                                                  "prediction shares, shadow agreement (Prometheus)")
    if invoked == "drift":
        from mlops.drift import add_arguments as drift_arguments

        drift_arguments(drift_cmd)
    drift_cmd.set_defaults(run=cmd_drift)

    feedback_cmd = commands.add_parser("feedback", help="labels fed back by request id: send them, or score the "
                                                        "served answers against them (accuracy/F1, Prometheus)")
    if invoked == "feedback":
        from mlops.feedback import add_arguments as feedback_arguments

        feedback_arguments(feedback_cmd)
    feedback_cmd.set_defaults(run=cmd_feedback)

    catalog = commands.add_parser("models", help="served models: versions, endpoints, inputs/outputs (metadata)")
    catalog.add_argument("--tenant", help="only this tenant's models (`platform`: the platform's own)")
    catalog.add_argument("--stack", help=f"one of: {stacks} (its outputs via `pulumi stack output`)")
    catalog.add_argument("--outputs", help="JSON file: stack outputs, or {tenant: {model: url}} / {model: url}")
    catalog.add_argument("--format", choices=("table", "json"), default="table")
    catalog.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default: 10)")
    catalog.add_argument("--insecure", action="store_true", help="accept self-signed TLS certificates (dev)")
    catalog.set_defaults(run=cmd_models)

    cost = commands.add_parser("cost", help="monthly list-price cost per resource; --compare gke,eks,onprem")
    if invoked == "cost":
        from mlops.cost.cli import add_arguments

        add_arguments(cost, stacks)
    cost.set_defaults(run=cmd_cost)

    restore_cmd = commands.add_parser("restore", help="restore the in-cluster database (and MLflow onto it) to a time")
    restore_cmd.add_argument("--stack", required=True, help=f"one of: {stacks}")
    restore_cmd.add_argument("--stacks-dir", help="folder of Pulumi.<stack>.yaml files (default: stacks/)")
    restore_cmd.add_argument("--to", help="recovery target time, ISO 8601 (e.g. 2026-12-01T14:30:00Z; default: latest)")
    restore_cmd.add_argument("--from-offsite", action="store_true", help="read the off-cluster copy, not the cluster's store")
    restore_cmd.add_argument("--yes", action="store_true", help="apply (without it: print what would be done)")
    restore_cmd.set_defaults(run=cmd_restore)

    check = commands.add_parser("backup-check", help="is the newest base backup recent and the WAL after it unbroken?")
    check.add_argument("--stack", required=True, help=f"one of: {stacks}")
    check.add_argument("--stacks-dir", help="folder of Pulumi.<stack>.yaml files (default: stacks/)")
    check.add_argument("--endpoint-url", help="the object store as reached from here (e.g. a port-forward)")
    check.add_argument("--max-age-hours", type=float, help="default: the schedule's longest gap + 1 h")
    check.set_defaults(run=cmd_backup_check)

    # `mlops train … -- <args>`: what follows `--` belongs to the workload's own parser
    passthrough: list[str] = []
    if argv[:1] == ["train"] and "--" in argv:
        argv, passthrough = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    args = parser.parse_args(argv)
    args.train_args = passthrough
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
