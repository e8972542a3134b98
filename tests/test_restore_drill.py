"""The restore drill: a real PostgreSQL holding MLflow data archives its WAL and a base backup with
barman-cloud (the pinned `barman[cloud]`, CloudNativePG's operand version) to a real S3 API, with
the destination, server name, compression and archive_timeout of the stack's own CloudNativePG
Cluster (the onprem plan). More runs are written, the database is destroyed, and it is restored to
a time between the two phases the way CloudNativePG's `bootstrap.recovery` does it
(barman-cloud-restore + barman-cloud-wal-restore + recovery_target_time). Row counts and aliases
must equal those at that time, and a model registered before the backup must load from MLflow on
the restored database. A second restore reads only the off-cluster copy (the CronJob's exact
script), with the original store wiped, artifacts included.
"""

from __future__ import annotations

import copy
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from mlops.restore import Archive, RestoreError, backup_for, check_archive, list_backups
from tests.services import Postgres, free_port, mlflow_server, s3_api
from tests.tools import require_tool

pytestmark = pytest.mark.integration
ARTIFACTS, BACKUPS, MODEL = "mlflow-artifacts", "backups", "drill-model"
S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
FEATURES = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]])
TABLES = ("experiments", "runs", "metrics", "params", "registered_models", "model_versions",
          "registered_model_aliases")


@dataclass(frozen=True)
class StackArchive:
    archive: Archive  # as the stack's Cluster declares it (endpoint: the cluster's object store)
    archive_timeout: str
    cluster: dict[str, Any]
    objects: list[dict[str, Any]]


@pytest.fixture(scope="module")
def stack() -> StackArchive:
    from mlops.plan import run_program, stack_config
    from mlops.restore import find_cluster

    objects = run_program("onprem", stack_config("onprem", None)).kubernetes_objects
    cluster = dict(find_cluster(objects))
    timeout = cluster["spec"]["postgresql"]["parameters"]["archive_timeout"]
    return StackArchive(Archive.of_cluster(cluster), timeout, cluster, list(objects))


def tools_env() -> dict[str, str]:
    """barman-cloud-* and mlflow from this interpreter's virtualenv first on PATH, S3 keys set."""
    bin_dir = str(Path(sys.executable).parent)
    require_tool("barman-cloud-backup", "barman[cloud] (the test extra)", path=bin_dir)
    return {**os.environ, **S3_ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


class Server:
    """A PostgreSQL 15 data directory and server. As root it runs in a user namespace as a
    non-root uid (PostgreSQL refuses root) that can still execute this virtualenv's barman tools."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.data, self.port = root, root / "data", port
        self.wrap = (["unshare", "--user", "--map-user=1000", "--map-group=1000"] if os.geteuid() == 0 else [])

    def run(self, *command: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.wrap, *command], env=env or tools_env(), capture_output=True, text=True,
                              check=check, timeout=300)

    def initdb(self) -> None:
        self.run(require_tool("initdb", "PostgreSQL server binaries"), "-D", str(self.data), "-U", "postgres",
                 "--auth-local=trust", "--auth-host=scram-sha-256")

    def configure(self, settings: dict[str, str]) -> None:
        with (self.data / "postgresql.auto.conf").open("a") as conf:
            conf.writelines(f"{k} = '{v}'\n" for k, v in settings.items())

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
        self.run(require_tool("pg_ctl", "PostgreSQL server binaries"), "-D", str(self.data), "-o", options,
                 "-l", str(self.root / "log"), "-w", "-t", "120", "start")

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "stop", check=False)

    def sql(self, statement: str, database: str = "postgres") -> str:
        return self.run(require_tool("psql", "PostgreSQL client"), "-h", str(self.root), "-p", str(self.port),
                        "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-tAc", statement).stdout.strip()

    def socket_env(self) -> dict[str, str]:
        return {**tools_env(), "PGHOST": str(self.root), "PGPORT": str(self.port)}


@contextmanager
def server_dir() -> Iterator[Server]:
    root = Path(tempfile.mkdtemp(prefix="mlops-drill-"))
    server = Server(root, free_port())
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def mlflow_state(server: Server) -> dict[str, Any]:
    """Row counts of MLflow's tables and the registry's aliases, read with SQL."""
    counts = {t: int(server.sql(f"SELECT count(*) FROM {t}", "mlruns")) for t in TABLES}
    aliases = server.sql("SELECT name || '@' || alias || '=' || version FROM registered_model_aliases ORDER BY 1", "mlruns")
    return {**counts, "aliases": aliases.splitlines()}


def write_runs(prefix: str, n: int) -> None:
    import mlflow

    mlflow.set_experiment("drill")
    for i in range(n):
        with mlflow.start_run(run_name=f"{prefix}-{i}"):
            mlflow.log_param("phase", prefix)
            for step in range(5):
                mlflow.log_metric("loss", 1.0 / (step + 1 + i), step=step)


def register(version_label: str) -> str:
    import mlflow
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0 if version_label == "v1" else 0.5).fit(FEATURES, np.array([0, 1, 0, 1]))
    with mlflow.start_run(run_name=f"train-{version_label}"):
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=MODEL,
                                        input_example=FEATURES[:1], pip_requirements=["scikit-learn"])
    return str(info.registered_model_version)


def archive_current_wal(server: Server, timeout: float = 60) -> None:
    """Switch to a new WAL segment and wait until the archiver has shipped the old one."""
    segment = server.sql("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (server.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") or "") >= segment:
            return
        time.sleep(0.5)
    raise TimeoutError(f"WAL {segment} not archived within {timeout} s: {(server.root / 'log').read_text()[-2000:]}")


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
        server.initdb()
        server.configure({"archive_mode": "on", "archive_command": shlex.join(archive.wal_archive("%p")),
                          "archive_timeout": stack.archive_timeout, "wal_level": "replica"})
        subprocess.run(archive.check_wal_archive(), env=tools_env(), check=True, capture_output=True)
        server.start()
        server.sql("CREATE ROLE mlflow LOGIN PASSWORD 'test-password'")
        for db in ("mlruns", "mlflow_auth"):
            server.sql(f"CREATE DATABASE {db} OWNER mlflow")
        pg = Postgres("127.0.0.1", server.port, "mlflow", "test-password")
        with mlflow_server(pg, s3, ARTIFACTS) as mlflow_srv:
            for key, value in {"MLFLOW_TRACKING_URI": mlflow_srv.url, "MLFLOW_TRACKING_USERNAME": mlflow_srv.username,
                               "MLFLOW_TRACKING_PASSWORD": mlflow_srv.password}.items():
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


def restore(archive: Archive, target_time: datetime, server: Server) -> None:
    """What CloudNativePG's bootstrap.recovery does: the newest backup that ended before the
    target, then WAL from the archive until the target, then promote."""
    backup = backup_for(list_backups(archive, tools_env()), target_time)
    server.run(*archive.restore(backup.backup_id, str(server.data)))
    (server.data / "recovery.signal").touch()
    server.configure({"restore_command": shlex.join(archive.wal_restore("%f", "%p")), "archive_mode": "off",
                      "recovery_target_time": target_time.strftime("%Y-%m-%d %H:%M:%S.%f+00"),
                      "recovery_target_action": "promote"})
    server.start()
    deadline = time.monotonic() + 120
    while server.sql("SELECT pg_is_in_recovery()") == "t":
        assert time.monotonic() < deadline, (server.root / "log").read_text()[-3000:]
        time.sleep(0.5)


def check_restored_rows(server: Server, drill: Drill) -> None:
    assert drill.at_end != drill.at_target, "the writes after the target changed nothing: the drill proves nothing"
    assert mlflow_state(server) == drill.at_target


def check_restored_mlflow(server: Server, s3: str, drill: Drill) -> None:
    """MLflow on the restored database (its usual startup: `mlflow db upgrade`, then the server)."""
    import mlflow
    from mlflow import MlflowClient

    pg = Postgres("127.0.0.1", server.port, "mlflow", "test-password")
    with mlflow_server(pg, s3, ARTIFACTS) as restored, pytest.MonkeyPatch.context() as monkey:
        for key, value in {"MLFLOW_TRACKING_URI": restored.url, "MLFLOW_TRACKING_USERNAME": restored.username,
                           "MLFLOW_TRACKING_PASSWORD": restored.password}.items():
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
        source = boto3.resource("s3", endpoint_url=drill.s3, **{k.lower(): v for k, v in S3_ENV.items()
                                                                 if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")
        for bucket in (BACKUPS, ARTIFACTS):
            source.Bucket(bucket).objects.all().delete()  # the original cluster's store is gone
        job = cronjob(args)
        replica = drill.archive.at(replica_url(job, drill.archive.destination_path), offsite)
        with server_dir() as server:
            restore(replica, drill.target_time, server)
            # artifacts back into the (new) cluster's bucket: the runbook's rclone copy
            back = subprocess.run(
                ["rclone", "copy", f"offsite:{replica_url(job, f's3://{ARTIFACTS}').removeprefix('s3://')}",
                 f"cluster:{ARTIFACTS}"], capture_output=True, text=True, timeout=120, check=False,
                env={**tools_env(), **remote("offsite", offsite), **remote("cluster", drill.s3)})
            assert back.returncode == 0, back.stderr
            check_restored_rows(server, drill)
            check_restored_mlflow(server, drill.s3, drill)


def remote(name: str, endpoint: str) -> dict[str, str]:
    prefix = f"RCLONE_CONFIG_{name.upper()}_"
    return {prefix + "TYPE": "s3", prefix + "PROVIDER": "Other", prefix + "ENDPOINT": endpoint,
            prefix + "ACCESS_KEY_ID": "test", prefix + "SECRET_ACCESS_KEY": "test", prefix + "REGION": "us-east-1"}
