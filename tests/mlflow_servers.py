"""MLflow servers as the platform runs them, several at a time: the migration Job's exact command
(`modules.mlflow.MIGRATE_COMMAND`), then `mlflow server` with the platform's command line and
auth.ini — or, for the throughput baseline, without `--app-name basic-auth`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from modules.mlflow import AUTH_CACHE_TTL_SECONDS, MIGRATE_COMMAND, SERVER_SETTINGS, auth_ini, server_command
from tests.services import Postgres, free_port, stop, wait_http

ADMIN = ("admin", "throughput-admin-pw-1")


@dataclass(frozen=True)
class Databases:
    tracking: str
    auth: str


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen
    log: Path


def _env(db: Postgres, dbs: Databases, work: Path, s3_endpoint: str, cache_ttl: int) -> dict[str, str]:
    (work / "auth.ini").write_text(auth_ini(db.uri(dbs.auth), "READ", cache_ttl))
    bin_dir = Path(sys.executable).parent
    return {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8",
        "MLFLOW_BACKEND_STORE_URI": db.uri(dbs.tracking),
        "MLFLOW_AUTH_DATABASE_URI": db.uri(dbs.auth),
        "MLFLOW_AUTH_CONFIG_PATH": str(work / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0], "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "throughput-secret-key",
        **SERVER_SETTINGS,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def migrate(db: Postgres, dbs: Databases) -> subprocess.CompletedProcess[str]:
    """The migration Job's command with only the env the Job has (no auth.ini, like the pod)."""
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", "HOME": tempfile.gettempdir(), "LANG": "C.UTF-8",
           "MLFLOW_BACKEND_STORE_URI": db.uri(dbs.tracking), "MLFLOW_AUTH_DATABASE_URI": db.uri(dbs.auth)}
    return subprocess.run(["sh", "-c", MIGRATE_COMMAND], env=env, capture_output=True, text=True, timeout=300)


@contextmanager
def servers(db: Postgres, dbs: Databases, s3_endpoint: str, bucket: str, count: int = 1, auth: bool = True,
            cache_ttl: int = AUTH_CACHE_TTL_SECONDS, workers: int = 1) -> Iterator[list[Server]]:
    """`count` servers on one pair of databases, started at the same moment, once all answer /health."""
    with ExitStack() as stack:
        started = [stack.enter_context(_server(db, dbs, s3_endpoint, bucket, auth, cache_ttl, workers))
                   for _ in range(count)]
        for server in started:
            try:
                wait_http(f"{server.url}/health", timeout=180, process=server.process)
            except Exception:
                print(server.log.read_text()[-4000:])
                raise
        yield started


@contextmanager
def _server(db: Postgres, dbs: Databases, s3_endpoint: str, bucket: str, auth: bool, cache_ttl: int,
            workers: int) -> Iterator[Server]:
    work = Path(tempfile.mkdtemp(prefix="mlops-mlflow-"))
    env = _env(db, dbs, work, s3_endpoint, cache_ttl)
    port = free_port()
    command = server_command(workers=workers, host="127.0.0.1", port=port, metrics_dir=str(work / "metrics"))
    if not auth:
        i = command.index("--app-name")
        del command[i:i + 2]
    log = work / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([*command, "--artifacts-destination", f"s3://{bucket}"], env=env,
                                   stdout=out, stderr=subprocess.STDOUT, cwd=work, start_new_session=True)
    try:
        yield Server(f"http://127.0.0.1:{port}", process, log)
    finally:
        stop(process)
        shutil.rmtree(work, ignore_errors=True)
