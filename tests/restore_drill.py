"""The restore drill's machinery, shared by tests/test_restore_drill.py and benchmarks/restore.py:
a real PostgreSQL 15 archiving its WAL with barman-cloud under the settings of the stack's own
CloudNativePG Cluster, MLflow data written through a real MLflow server, and a point-in-time
restore done the way CloudNativePG's `bootstrap.recovery` does it (barman-cloud-restore, then
barman-cloud-wal-restore as restore_command up to recovery_target_time, then promote).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from mlops.restore import Archive, backup_for, list_backups
from tests.services import MlflowServer, free_port
from tests.tools import require_tool

ARTIFACTS, BACKUPS, MODEL = "mlflow-artifacts", "backups", "drill-model"
S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
FEATURES = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]])
TABLES = ("experiments", "runs", "metrics", "params", "registered_models", "model_versions",
          "registered_model_aliases")
MLFLOW_ROLE = ("mlflow", "test-password")
DATABASES = ("mlruns", "mlflow_auth")


@dataclass(frozen=True)
class StackArchive:
    archive: Archive  # as the stack's Cluster declares it (endpoint: the cluster's object store)
    archive_timeout: str
    cluster: dict[str, Any]
    objects: list[dict[str, Any]]


def stack_archive(stack: str = "onprem") -> StackArchive:
    """The archive settings of `stack`'s CloudNativePG Cluster, from its offline plan."""
    from mlops.plan import run_program, stack_config
    from mlops.restore import find_cluster

    objects = run_program(stack, stack_config(stack, None)).kubernetes_objects
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

    def log_tail(self, chars: int = 3000) -> str:
        return (self.root / "log").read_text()[-chars:]


@contextmanager
def server_dir() -> Iterator[Server]:
    root = Path(tempfile.mkdtemp(prefix="mlops-drill-"))
    server = Server(root, free_port())
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def start_archiving(server: Server, archive: Archive, archive_timeout: str) -> None:
    """A fresh server archiving every WAL segment to `archive` (CloudNativePG's archive_command:
    barman-cloud-wal-archive) with the stack's archive_timeout, holding MLflow's empty databases."""
    server.initdb()
    server.configure({"archive_mode": "on", "archive_command": shlex.join(archive.wal_archive("%p")),
                      "archive_timeout": archive_timeout, "wal_level": "replica"})
    subprocess.run(archive.check_wal_archive(), env=tools_env(), check=True, capture_output=True)
    server.start()
    server.sql(f"CREATE ROLE {MLFLOW_ROLE[0]} LOGIN PASSWORD '{MLFLOW_ROLE[1]}'")
    for db in DATABASES:
        server.sql(f"CREATE DATABASE {db} OWNER {MLFLOW_ROLE[0]}")


def mlflow_env(server: MlflowServer) -> dict[str, str]:
    """The client settings that talk to `server` as its admin."""
    return {"MLFLOW_TRACKING_URI": server.url, "MLFLOW_TRACKING_USERNAME": server.username,
            "MLFLOW_TRACKING_PASSWORD": server.password}


def mlflow_state(server: Server) -> dict[str, Any]:
    """Row counts of MLflow's tables and the registry's aliases, read with SQL."""
    counts = {t: int(server.sql(f"SELECT count(*) FROM {t}", "mlruns")) for t in TABLES}
    aliases = server.sql("SELECT name || '@' || alias || '=' || version FROM registered_model_aliases ORDER BY 1", "mlruns")
    return {**counts, "aliases": aliases.splitlines()}


def write_runs(prefix: str, n: int, experiment: str = "drill") -> None:
    import mlflow

    mlflow.set_experiment(experiment)
    for i in range(n):
        with mlflow.start_run(run_name=f"{prefix}-{i}"):
            mlflow.log_param("phase", prefix)
            for step in range(5):
                mlflow.log_metric("loss", 1.0 / (step + 1 + i), step=step)


def register(version_label: str, model_name: str = MODEL) -> str:
    """A small scikit-learn model logged and registered as a new version of `model_name`."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0 if version_label == "v1" else 0.5).fit(FEATURES, np.array([0, 1, 0, 1]))
    with mlflow.start_run(run_name=f"train-{version_label}"):
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=model_name,
                                        input_example=FEATURES[:1], pip_requirements=["scikit-learn"])
    return str(info.registered_model_version)


def archive_current_wal(server: Server, timeout: float = 60) -> float:
    """Switch to a new WAL segment and wait until the archiver has shipped the old one. Returns the
    archive lag: seconds from the switch to the archiver's success, both on the server's clock."""
    segment, switched = server.sql("SELECT pg_walfile_name(pg_switch_wal()), "
                                   "extract(epoch FROM clock_timestamp())").split("|")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last, archived = server.sql("SELECT coalesce(last_archived_wal, ''), "
                                    "coalesce(extract(epoch FROM last_archived_time), 0) FROM pg_stat_archiver").split("|")
        if last >= segment:
            return float(archived) - float(switched)
        time.sleep(0.1)
    raise TimeoutError(f"WAL {segment} not archived within {timeout} s: {server.log_tail(2000)}")


def fetch_base_backup(archive: Archive, target_time: datetime, server: Server) -> None:
    """The newest backup that ended before the target, into the server's (empty) data directory."""
    backup = backup_for(list_backups(archive, tools_env()), target_time)
    server.run(*archive.restore(backup.backup_id, str(server.data)))


def replay_to(archive: Archive, target_time: datetime, server: Server, timeout: float = 120) -> None:
    """Recovery from the archive's WAL up to `target_time`, then promote; returns once the server
    accepts writes."""
    (server.data / "recovery.signal").touch()
    server.configure({"restore_command": shlex.join(archive.wal_restore("%f", "%p")), "archive_mode": "off",
                      "recovery_target_time": target_time.strftime("%Y-%m-%d %H:%M:%S.%f+00"),
                      "recovery_target_action": "promote"})
    server.start()
    deadline = time.monotonic() + timeout
    while server.sql("SELECT pg_is_in_recovery()") == "t":
        if time.monotonic() > deadline:
            raise TimeoutError(f"still in recovery after {timeout} s: {server.log_tail()}")
        time.sleep(0.1)


def restore(archive: Archive, target_time: datetime, server: Server) -> None:
    """What CloudNativePG's bootstrap.recovery does: the newest backup that ended before the
    target, then WAL from the archive until the target, then promote."""
    fetch_base_backup(archive, target_time, server)
    replay_to(archive, target_time, server)


def remote(name: str, endpoint: str) -> dict[str, str]:
    """rclone's S3 remote `name` at `endpoint` with the test keys, as environment variables."""
    prefix = f"RCLONE_CONFIG_{name.upper()}_"
    return {prefix + "TYPE": "s3", prefix + "PROVIDER": "Other", prefix + "ENDPOINT": endpoint,
            prefix + "ACCESS_KEY_ID": "test", prefix + "SECRET_ACCESS_KEY": "test", prefix + "REGION": "us-east-1"}


def copy_back_artifacts(replica_artifacts: str, offsite: str, cluster: str) -> subprocess.CompletedProcess[str]:
    """The runbook's step: the artifact bucket's copy (`bucket/path`, no scheme) back into the
    cluster's bucket with rclone."""
    return subprocess.run(["rclone", "copy", f"offsite:{replica_artifacts}", f"cluster:{ARTIFACTS}"],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**tools_env(), **remote("offsite", offsite), **remote("cluster", cluster)})


def s3_resource(endpoint: str) -> Any:
    import boto3

    return boto3.resource("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"])


def wipe(endpoint: str, buckets: tuple[str, ...]) -> None:
    """Every object of `buckets` deleted: the original cluster's store is gone."""
    source = s3_resource(endpoint)
    for bucket in buckets:
        source.Bucket(bucket).objects.all().delete()
