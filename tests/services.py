"""Real local services for integration tests: PostgreSQL, an S3 API (moto), an MLflow server.

They are started the way the platform runs them (same MLflow command line and auth config, from
`modules.mlflow`), on loopback ports, and stopped at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from modules.mlflow import SERVER_SETTINGS, auth_ini, server_command
from tests.tools import require_tool


_PORTS_FROM, _PORTS_PER_WORKER = 20000, 1500  # below Linux's ephemeral range (32768-60999)
_next_port: list[int] = []


def free_port() -> int:
    """A loopback port no other test process will hand out, outside the kernel's ephemeral range.

    `bind(("", 0))` returns an ephemeral port that is free *now*: a server takes seconds to bind it
    on a loaded machine, and meanwhile another xdist worker's `bind(0)` or any outgoing connection
    may take the same number (seen: an MLflow server that never bound, a client sent to another
    test's server). Each worker draws from its own block, so only a bind check is left to do.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    first = _PORTS_FROM + (int(worker) if worker.isdigit() else 0) % 8 * _PORTS_PER_WORKER
    if not _next_port:
        _next_port.append(first + os.getpid() % _PORTS_PER_WORKER)
    for _ in range(_PORTS_PER_WORKER):
        port = first + (_next_port[0] - first) % _PORTS_PER_WORKER
        _next_port[0] = port + 1
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {first}-{first + _PORTS_PER_WORKER - 1}")


def stop(process: subprocess.Popen, grace: float = 10) -> None:
    """Terminate the server and every process it started (servers run in a session of their own:
    gunicorn and uvicorn workers would outlive their master), and kill what is left after `grace` s."""
    own_group = _group_of(process.pid) == process.pid
    _signal(process, signal.SIGTERM, own_group)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _signal(process, signal.SIGKILL, own_group)  # the master's leftover workers too
    process.wait()


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _signal(process: subprocess.Popen, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(process.pid, sig)
        elif process.poll() is None:
            process.send_signal(sig)
    except ProcessLookupError:
        pass


def wait_http(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except (requests.ConnectionError, requests.Timeout):  # a loaded machine answers late
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextmanager
def server_process(command: list[str], ready_url: str, log: Path, timeout: float = 60) -> Iterator[subprocess.Popen]:
    """`command` with its output in `log`, once `ready_url` answers; a start that fails prints the
    log (the test alone would only say "exited" or "did not answer")."""
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            wait_http(ready_url, timeout=timeout, process=process)
        except (RuntimeError, TimeoutError):
            print(log.read_text()[-4000:])
            raise
        yield process
    finally:
        stop(process)


@contextmanager
def alertmanager(config_text: str, folder: Path) -> Iterator[str]:
    """A real Alertmanager on 127.0.0.1 running `config_text` (an alertmanager.yml), no cluster
    peers, its config, data and log in `folder`; yields its URL."""
    binary = require_tool("prometheus-alertmanager", "a real Alertmanager (Debian prometheus-alertmanager)")
    config = folder / "alertmanager.yml"
    config.write_text(config_text)
    url = f"http://127.0.0.1:{free_port()}"
    with server_process([binary, f"--config.file={config}", f"--storage.path={folder / 'data'}",
                         f"--web.listen-address={url.removeprefix('http://')}", "--cluster.listen-address=",
                         "--log.level=warn"], f"{url}/-/ready", folder / "alertmanager.log"):
        yield url


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    restart: Callable[[], None] | None = field(default=None, compare=False, repr=False)  # `pg_ctl restart`

    def uri(self, database: str) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{database}"


@contextmanager
def postgres(databases: tuple[str, ...], user: str = "mlflow", password: str = "test-password") -> Iterator[Postgres]:
    """A throwaway PostgreSQL server (initdb + pg_ctl) with `databases` owned by `user`."""
    initdb = require_tool("initdb", "PostgreSQL server binaries")
    pg_ctl = require_tool("pg_ctl", "PostgreSQL server binaries")
    psql = require_tool("psql", "PostgreSQL client")
    root = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
    # initdb refuses to run as root: run the server as the `postgres` account when we are root
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    subprocess.run([*as_postgres, initdb, "-D", str(data), "-U", "postgres", "--auth-local=trust",
                    "--auth-host=scram-sha-256"], check=True, capture_output=True)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root}"
    subprocess.run([*as_postgres, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
                   check=True, capture_output=True)
    try:
        statements = [f"CREATE ROLE {user} LOGIN PASSWORD '{password}'"]
        statements += [f"CREATE DATABASE {db} OWNER {user}" for db in databases]
        for statement in statements:
            subprocess.run([*as_postgres, psql, "-h", str(root), "-p", str(port), "-U", "postgres",
                            "-v", "ON_ERROR_STOP=1", "-c", statement], check=True, capture_output=True)
        def restart() -> None:  # a fast shutdown: every open connection is dropped, as in a failover
            subprocess.run([*as_postgres, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"),
                            "-m", "fast", "-w", "restart"], check=True, capture_output=True)

        yield Postgres("127.0.0.1", port, user, password, restart)
    finally:
        subprocess.run([*as_postgres, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


_open_s3 = 0  # s3_api servers running in this process


@contextmanager
def s3_api(buckets: tuple[str, ...]) -> Iterator[str]:
    """moto's S3 server on a loopback port, with `buckets` created; yields the endpoint URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    global _open_s3
    if _open_s3 == 0:  # moto keeps one backend per process: drop what an earlier test's servers left
        requests.post(f"{endpoint}/moto-api/reset", timeout=10)
    _open_s3 += 1
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        _open_s3 -= 1
        server.stop()


@contextmanager
def pushgateway() -> Iterator[str]:
    """Debian's Pushgateway on a loopback port; yields its URL. Debian's build persists to
    /var/lib/prometheus by default (upstream's image keeps metrics in memory): without
    `--persistence.file=` every run would see the pushes of earlier runs and of other tests."""
    binary = require_tool("prometheus-pushgateway", "Prometheus Pushgateway (Debian prometheus-pushgateway)")
    port = free_port()
    process = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/-/ready", timeout=20, process=process)
        yield url
    finally:
        stop(process)


@dataclass(frozen=True)
class MlflowServer:
    url: str
    username: str
    password: str
    log: Path


@contextmanager
def mlflow_server(db: Postgres, s3_endpoint: str, artifacts_bucket: str,
                  database: str = "mlruns", auth_database: str = "mlflow_auth",
                  extra_env: dict[str, str] | None = None) -> Iterator[MlflowServer]:
    """`mlflow db upgrade`, then the platform's exact server command, against real services
    (`extra_env`: settings a test takes from the plan, e.g. the allowed hosts)."""
    work = Path(tempfile.mkdtemp(prefix="mlops-mlflow-"))
    (work / "auth.ini").write_text(auth_ini(db.uri(auth_database), "READ"))
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_BACKEND_STORE_URI": db.uri(database),
        "MLFLOW_AUTH_CONFIG_PATH": str(work / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "integration-admin-pw",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "integration-secret-key",
        **SERVER_SETTINGS,
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        **(extra_env or {}),
    }
    subprocess.run(["mlflow", "db", "upgrade", db.uri(database)], env=env, check=True, capture_output=True)
    port = free_port()
    command = server_command(workers=1, host="127.0.0.1", port=port, metrics_dir=str(work / "metrics"))
    log = work / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([*command, "--artifacts-destination", f"s3://{artifacts_bucket}"],
                                   env=env, stdout=out, stderr=subprocess.STDOUT, cwd=work, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout=90, process=process)
        yield MlflowServer(url, "admin", "integration-admin-pw", log)
    except Exception:
        print(log.read_text()[-4000:])
        raise
    finally:
        if process.poll() is not None:  # died while tests used it: they only saw "connection refused"
            print(f"MLflow server on {url} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        stop(process)
        shutil.rmtree(work, ignore_errors=True)
