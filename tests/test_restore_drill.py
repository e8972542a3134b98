"""The restore drill: a real PostgreSQL holding MLflow data archives its WAL and a base backup with
barman-cloud (the pinned `barman[cloud]`, CloudNativePG's operand version) to a real S3 API, with
the destination, server name, compression and archive_timeout of the stack's own CloudNativePG
Cluster (the onprem plan). More runs are written, the database is destroyed, and it is restored to
a time between the two phases the way CloudNativePG's `bootstrap.recovery` does it
(barman-cloud-restore + barman-cloud-wal-restore + recovery_target_time). Row counts and aliases
must equal those at that time, and a model registered before the backup must load from MLflow on
the restored database. A second restore reads only the off-cluster copy (the CronJob's exact
script), with the original store wiped, artifacts included. The machinery is in tests/restore_drill.py
(benchmarks/restore.py times the same steps).
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import pytest

from mlops.restore import Archive, RestoreError, backup_for, check_archive, list_backups
from tests.restore_drill import (ARTIFACTS, BACKUPS, FEATURES, MLFLOW_ROLE, MODEL, Server, StackArchive,
                                 archive_current_wal, copy_back_artifacts, mlflow_env, mlflow_state, register,
                                 restore, server_dir, stack_archive, start_archiving, tools_env, wipe, write_runs)
from tests.services import Postgres, mlflow_server, s3_api

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack() -> StackArchive:
    return stack_archive("onprem")


@dataclass(frozen=True)
class Drill:
    s3: str
    archive: Archive  # at the test's S3 API
    target_time: datetime
    at_target: dict[str, Any]
    at_end: dict[str, Any]
    predictions: list[int]


@pytest.fixture(scope="module")
def drill(stack: StackArchive) -> Iterator[Drill]:
    monkey = pytest.MonkeyPatch()
    with s3_api((BACKUPS, ARTIFACTS)) as s3, server_dir() as server:
        archive = stack.archive.at(stack.archive.destination_path, s3)
        assert archive.destination_path.startswith(f"s3://{BACKUPS}/"), "the stack archives outside the backups bucket"
        start_archiving(server, archive, stack.archive_timeout)
        with mlflow_server(Postgres("127.0.0.1", server.port, *MLFLOW_ROLE), s3, ARTIFACTS) as mlflow_srv:
            for key, value in mlflow_env(mlflow_srv).items():
                monkey.setenv(key, value)
            from mlflow import MlflowClient

            client = MlflowClient()
            write_runs("before-backup", 2)
            v1 = register("v1")
            client.set_registered_model_alias(MODEL, "champion", v1)
            import mlflow

            predictions = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(FEATURES).tolist()
            # an immediate start checkpoint (data.immediateCheckpoint) only saves the test the wait
            # for a spread one (up to 0.9 x checkpoint_timeout = 4.5 min); the backup is the same
            quick = replace(archive, immediate_checkpoint=True)
            result = server.run(*quick.backup("backup-drill"), env=server.socket_env(), check=False)
            assert result.returncode == 0, result.stderr
            write_runs("after-backup", 2)  # only the WAL holds these: the restore must replay it
            client.set_registered_model_alias(MODEL, "challenger", register("v2"))
            archive_current_wal(server)
            at_target = mlflow_state(server)
            time.sleep(1.5)
            target_time = datetime.now(timezone.utc)
            time.sleep(1.5)
            write_runs("after-target", 2)  # must be gone after the restore
            client.set_registered_model_alias(MODEL, "champion", register("v3"))
            client.delete_registered_model_alias(MODEL, "challenger")
            archive_current_wal(server)
            at_end = mlflow_state(server)
        server.stop()
        shutil.rmtree(server.data)  # the database is destroyed
        yield Drill(s3, archive, target_time, at_target, at_end, predictions)
    monkey.undo()


def check_restored_rows(server: Server, drill: Drill) -> None:
    assert drill.at_end != drill.at_target, "the writes after the target changed nothing: the drill proves nothing"
    assert mlflow_state(server) == drill.at_target


def check_restored_mlflow(server: Server, s3: str, drill: Drill) -> None:
    """MLflow on the restored database (its usual startup: `mlflow db upgrade`, then the server)."""
    import mlflow
    from mlflow import MlflowClient

    pg = Postgres("127.0.0.1", server.port, *MLFLOW_ROLE)
    with mlflow_server(pg, s3, ARTIFACTS) as restored, pytest.MonkeyPatch.context() as monkey:
        for key, value in mlflow_env(restored).items():
            monkey.setenv(key, value)
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
            monkey.delenv(var, raising=False)  # proxied artifacts: through the restored server only
        client = MlflowClient()
        assert client.get_registered_model(MODEL).aliases == {"champion": "1", "challenger": "2"}
        runs = client.search_runs([client.get_experiment_by_name("drill").experiment_id], max_results=100)
        assert sorted(r.data.params.get("phase", "train") for r in runs).count("after-target") == 0
        loaded = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
        assert loaded.predict(FEATURES).tolist() == drill.predictions


def test_restore_to_a_point_in_time_between_the_two_phases(drill: Drill) -> None:
    with server_dir() as server:
        restore(drill.archive, drill.target_time, server)
        check_restored_rows(server, drill)


def test_a_target_before_the_first_backup_is_refused(drill: Drill) -> None:
    backups = list_backups(drill.archive, tools_env())
    with pytest.raises(RestoreError, match="no completed base backup ends before"):
        backup_for(backups, backups[0].end_time - timedelta(seconds=1))


def test_backup_check_passes_on_the_fresh_archive_and_fails_when_stale_or_broken(drill: Drill) -> None:
    fresh = check_archive(drill.archive, tools_env(), max_age=timedelta(hours=25))
    assert fresh.ok, fresh.render()
    stale = check_archive(drill.archive, tools_env(), max_age=timedelta(hours=25),
                          now=datetime.now(timezone.utc) + timedelta(days=2))
    assert not stale.ok and "FAIL newest base backup" in stale.render()
    bucket, _, prefix = drill.archive.destination_path.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=drill.s3, region_name="us-east-1", aws_access_key_id="test",
                      aws_secret_access_key="test")
    wals = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{drill.archive.server_name}/wals/")
                  ["Contents"] if o["Key"].endswith(".gz"))
    assert len(wals) >= 3, wals
    body = s3.get_object(Bucket=bucket, Key=wals[-2])["Body"].read()
    s3.delete_object(Bucket=bucket, Key=wals[-2])
    try:
        broken = check_archive(drill.archive, tools_env(), max_age=timedelta(hours=25))
        assert not broken.ok and "WAL segments missing" in broken.render(), broken.render()
    finally:
        s3.put_object(Bucket=bucket, Key=wals[-2], Body=body)


# ------------------------------------------------------------------ `mlops restore` (offline)

def test_the_recovery_cluster_passes_the_crd_schema_and_restores_from_the_stack_archive(stack: StackArchive) -> None:
    from mlops.crds import validate_custom_resource
    from mlops.restore import restore_plan

    target = datetime(2026, 12, 1, 14, 30, tzinfo=timezone.utc)
    plan = restore_plan(stack.objects, target, "r202612011500")
    cluster = plan.cluster
    assert validate_custom_resource(cluster) == []
    spec, source_store = cluster["spec"], stack.cluster["spec"]["backup"]["barmanObjectStore"]
    assert spec["bootstrap"]["recovery"]["recoveryTarget"] == {"targetTime": "2026-12-01T14:30:00Z"}
    origin = {e["name"]: e for e in spec["externalClusters"]}[spec["bootstrap"]["recovery"]["source"]]
    assert origin["barmanObjectStore"] == {**source_store, "serverName": stack.archive.server_name}
    assert spec["backup"]["barmanObjectStore"]["serverName"] == "postgres-r202612011500" != stack.archive.server_name
    assert spec["instances"] == stack.cluster["spec"]["instances"]
    assert ("kubectl", "-n", "mlflow", "scale", "deployment/mlflow", "--replicas=0") in plan.commands


def test_a_bad_recovery_cluster_is_rejected_by_the_crd_schema(stack: StackArchive) -> None:
    from mlops.crds import validate_custom_resource
    from mlops.restore import restore_plan

    cluster = restore_plan(stack.objects, None, "r1").cluster
    cluster["spec"]["bootstrap"]["recovery"]["targetTime"] = "2026-12-01T14:30:00Z"  # belongs in recoveryTarget
    assert any("targetTime" in problem for problem in validate_custom_resource(cluster))


def test_restore_refuses_a_plan_without_an_archive(stack: StackArchive) -> None:
    from mlops.restore import restore_plan

    bare = copy.deepcopy(stack.objects)
    for obj in bare:
        if obj.get("kind") == "Cluster":
            obj["spec"].pop("backup")
    with pytest.raises(RestoreError, match="no spec.backup.barmanObjectStore"):
        restore_plan(bare, None, "r1")
    with pytest.raises(RestoreError, match="no CronJob offsite-copy"):
        restore_plan(stack.objects, None, "r1", from_offsite=True)


def test_mlflow_secret_is_repointed_to_the_recovery_cluster() -> None:
    import base64

    from mlops.restore import repoint_secret

    uri = "postgresql+psycopg2://mlflow:pw@postgres-rw.mlops-platform.svc.cluster.local:5432/mlruns"
    secret = {"metadata": {"name": "mlflow-db", "namespace": "mlflow"},
              "data": {"backend-store-uri": base64.b64encode(uri.encode()).decode()}}
    moved = repoint_secret(secret, "postgres-rw", "postgres-r1-rw")
    assert base64.b64decode(moved["data"]["backend-store-uri"]).decode() == uri.replace("@postgres-rw.", "@postgres-r1-rw.")
    with pytest.raises(RestoreError, match="no URI names host"):
        repoint_secret(secret, "other-rw", "postgres-r1-rw")


def test_backup_check_allows_the_schedules_longest_gap() -> None:
    from mlops.restore import longest_gap

    assert longest_gap("0 2 * * *") == timedelta(days=1)
    assert longest_gap("0 1,13 * * 1-5") == timedelta(days=2, hours=12)
    with pytest.raises(RestoreError):
        longest_gap("0 2 30 2 *")  # never runs


def test_restore_from_the_offsite_copy_alone(drill: Drill) -> None:
    """Last in this file: it wipes the original store the other tests read. The CronJob's script copies both buckets to a second S3 API; the original store is wiped;
    the database and the artifacts come back from the copy only, and MLflow serves the model
    registered before the backup from them."""
    from modules.database.offsite import replica_url
    from tests.test_offsite_copy import copy_args, cronjob, run_copy

    with s3_api(("offsite",)) as offsite:
        args = copy_args(drill.s3, offsite, buckets=(BACKUPS, ARTIFACTS))
        assert run_copy(args).returncode == 0
        wipe(drill.s3, (BACKUPS, ARTIFACTS))  # the original cluster's store is gone
        job = cronjob(args)
        replica = drill.archive.at(replica_url(job, drill.archive.destination_path), offsite)
        with server_dir() as server:
            restore(replica, drill.target_time, server)
            # artifacts back into the (new) cluster's bucket: the runbook's rclone copy
            back = copy_back_artifacts(replica_url(job, f"s3://{ARTIFACTS}").removeprefix("s3://"), offsite, drill.s3)
            assert back.returncode == 0, back.stderr
            check_restored_rows(server, drill)
            check_restored_mlflow(server, drill.s3, drill)

