"""Benchmark: backups and restore of the MLflow database (issue 17), with the restore drill's tools.

Run: `.venv/bin/python benchmarks/restore.py [--repeats 3] [--runs 10]`. The drill's machinery
(tests/restore_drill.py): a local PostgreSQL 15 archiving its WAL with barman-cloud under the onprem
plan's CloudNativePG settings (destination, server name, gzip, archive_timeout) to a local S3 API,
MLflow 3.17.2 with the platform's command line writing a demo-sized data set, then:
- base backup time (`barman-cloud-backup --immediate-checkpoint`, as often as --repeats),
- WAL archive lag (segment switched → `barman-cloud-wal-archive` done, the server's own clock),
- the off-cluster copy (the CronJob's rclone script) duration,
- restore time to a point in time after the newest backup — barman-cloud-restore, WAL replay with
  barman-cloud-wal-restore until recovery_target_time and promotion, then MLflow started on it
  (`mlflow db upgrade` + server) until it answers a registry call — (a) from the in-cluster
  archive, (b) from the off-cluster copy alone (original store wiped; artifacts copied back first),
  each --repeats times, every restored database checked against the state at the target.
The recovery point objective comes from the plans (`mlops.restore.recovery_points`). Writes
benchmarks/results/restore.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlops.plan import run_program, stack_config  # noqa: E402
from mlops.restore import Archive, pg_duration, recovery_points  # noqa: E402
from modules.database.offsite import replica_url  # noqa: E402
from tests.restore_drill import (ARTIFACTS, BACKUPS, MLFLOW_ROLE, Server, archive_current_wal,  # noqa: E402
                                 copy_back_artifacts, fetch_base_backup, mlflow_env, mlflow_state, register,
                                 replay_to, s3_resource, server_dir, stack_archive, start_archiving, wipe)
from tests.services import MlflowServer, Postgres, mlflow_server, s3_api  # noqa: E402
from tests.test_offsite_copy import copy_args, cronjob, run_copy  # noqa: E402

# The three demo workloads as they log to MLflow (workloads/*/train.py): experiment, model name,
# params per run, metrics per run (name → steps).
WORKLOADS = {
    "Hazardous_NEOs": ("NEOs", 28, {**{f"m{i}": 1 for i in range(6)}, **{f"candidates/c{i}": 1 for i in range(15)}}),
    "mnist": ("mnist", 14, {"loss": 10, "accuracy": 10, "val_accuracy": 10, "epoch_seconds": 10,
                            "test_accuracy": 1, **{f"accuracy_digit_{d}": 1 for d in range(10)}}),
    "energy-forecast": ("energy-forecast", 10, {"mape": 1, "naive_mape": 1, "mape_improvement": 1, "scored_hours": 1}),
}
PLANS = (("dev", None), ("onprem", None), ("full", ROOT / "tests" / "stacks"), ("gke", None), ("eks", None))


@contextmanager
def talking_to(server: MlflowServer) -> Iterator[Any]:
    """MLflow's client (and its fluent API) pointed at `server` as admin."""
    from mlflow import MlflowClient

    saved = {k: os.environ.get(k) for k in mlflow_env(server)}
    os.environ.update(mlflow_env(server))
    try:
        yield MlflowClient()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def log_runs(client: Any, phase: str, runs: int) -> None:
    """`runs` training runs per workload, shaped like the workload's own (one log_batch each)."""
    from mlflow.entities import Metric, Param

    for experiment, (_, params, metrics) in WORKLOADS.items():
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        for i in range(runs):
            run = client.create_run(experiment_id, run_name=f"{phase}-{i}", tags={"phase": phase})
            now = int(time.time() * 1000)
            client.log_batch(run.info.run_id,
                             params=[Param(f"p{k}", str(k * i)) for k in range(params)],
                             metrics=[Metric(name, 1.0 / (step + i + 1), now, step)
                                      for name, steps in metrics.items() for step in range(steps)])
            client.set_terminated(run.info.run_id)


def new_versions(client: Any, label: str, alias: str) -> None:
    """One new registered version per workload model, under `alias` (the promotion's champion or
    challenger); its run lands in the workload's experiment."""
    import mlflow

    for experiment, (model, _, _) in WORKLOADS.items():
        mlflow.set_experiment(experiment)
        client.set_registered_model_alias(model, alias, register(label, model))


def timed(step: Callable[[], Any]) -> float:
    started = time.monotonic()
    step()
    return time.monotonic() - started


def newest_backup_bytes(s3: str, archive: Archive) -> int:
    """Size in the object store (gzip) of the newest base backup (ids are UTC time stamps)."""
    bucket, _, prefix = archive.destination_path.removeprefix("s3://").partition("/")
    objects = list(s3_resource(s3).Bucket(bucket).objects.filter(Prefix=f"{prefix}/{archive.server_name}/base/"))
    newest = max(o.key.split("/base/")[1].split("/")[0] for o in objects)
    return sum(o.size for o in objects if f"/base/{newest}/" in o.key)


def restore_once(archive: Archive, target: datetime, expected: dict[str, Any], s3: str,
                 before_mlflow: Callable[[], None] | None = None) -> dict[str, float]:
    """One point-in-time restore into a fresh data directory, timed step by step and checked."""
    with server_dir() as server:
        fetch_s = timed(lambda: fetch_base_backup(archive, target, server))
        replay_s = timed(lambda: replay_to(archive, target, server))
        if (state := mlflow_state(server)) != expected:
            raise SystemExit(f"restored state differs from the target's:\n{state}\n{expected}")
        segments = (server.root / "log").read_text().count("restored log file")
        steps = {"barman_cloud_restore_s": fetch_s, "wal_replay_s": replay_s}
        if before_mlflow is not None:
            steps["artifacts_copy_back_s"] = timed(before_mlflow)
        steps["mlflow_answers_s"] = timed(lambda: mlflow_answers(server, s3))
    return {**steps, "total_s": sum(steps.values()), "wal_segments_replayed": segments}


def mlflow_answers(server: Server, s3: str) -> None:
    """MLflow's usual start on the restored database, until the registry answers with the aliases."""
    with mlflow_server(Postgres("127.0.0.1", server.port, *MLFLOW_ROLE), s3, ARTIFACTS) as restored, \
            talking_to(restored) as client:
        aliases = client.get_registered_model("NEOs").aliases
        if set(aliases) != {"champion", "challenger"}:
            raise SystemExit(f"restored registry: NEOs aliases {aliases}")


def summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2)}


def summarize(rounds: list[dict[str, float]]) -> dict[str, Any]:
    return {key: summary([r[key] for r in rounds]) for key in rounds[0]}


def plan_rpos() -> dict[str, list[dict[str, Any]]]:
    result = {}
    for stack, stacks_dir in PLANS:
        points = recovery_points(run_program(stack, stack_config(stack, stacks_dir)).resources)
        result[stack] = [{"source": p.source, "survives": p.survives,
                          "rpo_s": None if p.rpo is None else p.rpo.total_seconds(), "basis": p.basis}
                         for p in points]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10, help="training runs per workload before the backup")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    stack = stack_archive("onprem")
    with s3_api((BACKUPS, ARTIFACTS)) as s3, s3_api(("offsite",)) as offsite, server_dir() as server:
        archive = stack.archive.at(stack.archive.destination_path, s3)
        start_archiving(server, archive, stack.archive_timeout)
        postgres_version = server.sql("SHOW server_version")
        with mlflow_server(Postgres("127.0.0.1", server.port, *MLFLOW_ROLE), s3, ARTIFACTS) as srv, \
                talking_to(srv) as client:
            log_runs(client, "demo", args.runs)
            new_versions(client, "v1", "champion")
            new_versions(client, "v2", "challenger")
            dataset = mlflow_state(server)
            # an immediate checkpoint (data.immediateCheckpoint) skips the spread checkpoint's wait
            # (up to 0.9 x checkpoint_timeout); what is copied is the same
            quick = replace(archive, immediate_checkpoint=True)
            backup_s = [timed(lambda: server.run(*quick.backup(f"bench-{i}"), env=server.socket_env()))
                        for i in range(args.repeats)]
            backup_bytes = newest_backup_bytes(s3, archive)
            lags = []
            for i in range(args.repeats):  # after the backup: only the WAL holds these
                log_runs(client, f"after-backup-{i}", 1)
                lags.append(archive_current_wal(server))
            new_versions(client, "v3", "challenger")  # the alias moves; v2 keeps its version
            lags.append(archive_current_wal(server))
            at_target = mlflow_state(server)
            time.sleep(1.5)
            target = datetime.now(timezone.utc)
            time.sleep(1.5)
            log_runs(client, "after-target", 1)  # gone after a restore to `target`
            for model, _, _ in WORKLOADS.values():
                client.delete_registered_model_alias(model, "challenger")
            archive_current_wal(server)
            at_end = mlflow_state(server)
        if at_end == at_target:
            raise SystemExit("the writes after the target changed nothing: the restore would prove nothing")
        server.stop()
        shutil.rmtree(server.data)
        in_cluster = [restore_once(archive, target, at_target, s3) for _ in range(args.repeats)]

        copy = copy_args(s3, offsite, buckets=(BACKUPS, ARTIFACTS))

        def copy_offsite() -> None:
            if (done := run_copy(copy)).returncode != 0:
                raise SystemExit(f"off-cluster copy failed: {done.stderr[-2000:]}")

        copy_s = [timed(copy_offsite) for _ in range(args.repeats)]  # the first copies, the others find no change
        wipe(s3, (BACKUPS, ARTIFACTS))  # the original cluster's store is gone
        job = cronjob(copy)
        replica = archive.at(replica_url(job, archive.destination_path), offsite)
        artifacts = replica_url(job, f"s3://{ARTIFACTS}").removeprefix("s3://")

        def artifacts_back() -> None:
            wipe(s3, (ARTIFACTS,))  # a fresh cluster's empty bucket, every round
            if (back := copy_back_artifacts(artifacts, offsite, s3)).returncode != 0:
                raise SystemExit(f"artifacts copy back failed: {back.stderr[-2000:]}")

        off_cluster = [restore_once(replica, target, at_target, s3, artifacts_back) for _ in range(args.repeats)]

    rpo = plan_rpos()
    report = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}",
        "load_average_1m": {"before": round(load_before, 1), "after": round(os.getloadavg()[0], 1)},
        "repeats": args.repeats,
        "settings": {"stack": "onprem", "archive_timeout": stack.archive_timeout,
                     "wal_compression": archive.wal_compression, "data_compression": archive.data_compression,
                     "server_name": archive.server_name, "postgresql": postgres_version},
        "dataset": {"experiments": list(WORKLOADS), "models": [m for m, _, _ in WORKLOADS.values()],
                    "before_backup": {k: v for k, v in dataset.items() if k != "aliases"},
                    "at_target": {k: v for k, v in at_target.items() if k != "aliases"},
                    "aliases_at_target": at_target["aliases"]},
        "base_backup_s": summary(backup_s), "base_backup_bytes": backup_bytes,
        "wal_archive_lag_s": summary(lags), "offsite_copy_first_s": round(copy_s[0], 2),
        "offsite_copy_unchanged_s": summary(copy_s[1:] or copy_s),
        "restore_in_cluster": summarize(in_cluster), "restore_off_cluster": summarize(off_cluster),
        "rpo_from_plans": rpo,
        # the onprem archive's worst case: a segment closed by archive_timeout, then the slowest upload seen
        "rpo_onprem_worst_seen_s": round(pg_duration(stack.archive_timeout).total_seconds() + max(lags), 1),
    }
    out = ROOT / "benchmarks" / "results" / "restore.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
