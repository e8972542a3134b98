"""MLflow servers as the platform runs them, several at a time: the migration Job's exact command
(`modules.mlflow.MIGRATE_COMMAND`), then `mlflow server` with the platform's command line and
auth.ini — or, for the throughput baseline, without `--app-name basic-auth`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from modules.mlflow import AUTH_APP, AUTH_CACHE_TTL_SECONDS, MIGRATE_COMMAND, SERVER_SETTINGS, auth_ini, server_command
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
            cache_ttl: int = AUTH_CACHE_TTL_SECONDS, workers: int = 1, app: str = AUTH_APP) -> Iterator[list[Server]]:
    """`count` servers on one pair of databases, started at the same moment, once all answer /health.

    `app`: the `--app-name` with `auth` (MLflow's own `basic-auth` for comparison)."""
    with ExitStack() as stack:
        started = [stack.enter_context(_server(db, dbs, s3_endpoint, bucket, auth, cache_ttl, workers, app))
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
            workers: int, app: str) -> Iterator[Server]:
    work = Path(tempfile.mkdtemp(prefix="mlops-mlflow-"))
    env = _env(db, dbs, work, s3_endpoint, cache_ttl)
    port = free_port()
    command = server_command(workers=workers, host="127.0.0.1", port=port, metrics_dir=str(work / "metrics"))
    i = command.index("--app-name")
    if auth:
        command[i + 1] = app
    else:
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


# MLflow's client defaults (MLFLOW_HTTP_REQUEST_MAX_RETRIES=7, ..._BACKOFF_FACTOR=2) and retry codes
TRANSIENT = (408, 429, 500, 502, 503, 504)


def retrying_session(auth: tuple[str, str] | None) -> requests.Session:
    """A session that retries like MLflow's own client (`mlflow.utils.request_utils`): transient
    status codes and connection errors, every method, exponential backoff."""
    session = requests.Session()
    session.auth = auth
    retry = Retry(total=7, connect=7, read=7, status=7, status_forcelist=TRANSIENT, allowed_methods=None,
                  backoff_factor=2, raise_on_status=True)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


class MetricWriter(threading.Thread):
    """Logs one run's metric, step after step, until `until`; counts what the server acknowledged,
    the 5xx answers its retries absorbed, and the errors the caller would have seen."""

    def __init__(self, url: str, auth: tuple[str, str] | None, experiment: str, until: float):
        super().__init__()
        self.url, self.auth, self.experiment, self.until = url, auth, experiment, until
        self.run_id, self.acked, self.retried_5xx, self.errors = "", 0, 0, []

    def run(self) -> None:
        session = retrying_session(self.auth)
        created = session.post(f"{self.url}/api/2.0/mlflow/runs/create", json={"experiment_id": self.experiment},
                               timeout=30)
        self.run_id = created.json()["run"]["info"]["run_id"]
        while time.monotonic() < self.until:
            try:
                response = session.post(f"{self.url}/api/2.0/mlflow/runs/log-metric", timeout=30, json={
                    "run_id": self.run_id, "key": "loss", "value": 1.0 / (self.acked + 1),
                    "timestamp": int(time.time() * 1000), "step": self.acked})
            except requests.RequestException as e:
                self.errors.append(repr(e))
                continue
            self.retried_5xx += sum(1 for h in response.raw.retries.history if (h.status or 0) >= 500)
            if response.status_code == 200:
                self.acked += 1
            else:
                self.errors.append(f"{response.status_code}: {response.text[:200]}")
