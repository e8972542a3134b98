"""The real model servers, started in a subprocess on one CPU and reached over HTTP.

Their pins clash with the project's (MLServer 1.7.1 wants an older FastAPI than the MLflow server;
seldon-core 1.17.1 wants numpy < 2), so each lives in its own virtualenv under `.venv/tools`,
built by `make test-deps` from the file its image is built from:

- MLServer + its MLflow runtime: what Seldon's MLFLOW_SERVER runs for registry models (V2);
- Seldon Core's Python wrapper (`seldon-core-microservice`): custom model images (Seldon protocol).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.services import free_port, stop
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / ".venv" / "tools"
MLSERVER_IMAGE = ROOT / "modules" / "serving" / "mlserver-image"  # its runtime module, as the image has it
MLFLOW_RUNTIME = "mlops_mlserver.MLflowRuntime"
ONE_CPU = ["taskset", "-c", "0"]
# the servers' numeric libraries use one thread, as a pod limited to one CPU should
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def tool_script(venv: str, script: str, why: str) -> str:
    bin_dir = TOOLS / venv / "bin"
    return require_tool(script, f"{why}; `make test-deps` builds {bin_dir}", path=str(bin_dir))


def wait_ready(url: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    """Until `url` answers 200 (a server answers 4xx/503 while its model loads)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # a loaded machine answers late
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready within {timeout} s:\n{log.read_text()[-3000:]}")


# credentials a pod of the serving namespace does not have; dropped where a test proves it needs none
BUCKET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_S3_ENDPOINT_URL",
              "GOOGLE_APPLICATION_CREDENTIALS")


@contextmanager
def _server(command: list[str], env: dict[str, str], ready_path: str, port: int, workdir: Path,
            timeout: float, drop: tuple[str, ...] = ()) -> Iterator[str]:
    log = workdir / "server.log"
    inherited = {k: v for k, v in os.environ.items() if k not in drop}
    with log.open("w") as out:
        process = subprocess.Popen([*ONE_CPU, *command], cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                   env={**inherited, **SINGLE_THREAD, **env}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + ready_path, process, timeout, log)
        yield url
    finally:
        stop(process)


@contextmanager
def mlserver(model_dir: Path, name: str, timeout: float = 180) -> Iterator[str]:
    """MLServer serving the MLflow model in `model_dir` as `name` (V2: /v2/models/<name>/infer),
    with the runtime class the stack's SeldonDeployments select.

    One inference worker process (MLServer's default); gRPC and metrics on their own free ports."""
    command = tool_script("mlserver", "mlserver", "MLServer, the V2 runtime of registry models")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="mlserver-") as tmp:
        workdir = Path(tmp)
        settings = {"http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
                    "host": "127.0.0.1", "parallel_workers": 1, "debug": False}
        (workdir / "settings.json").write_text(json.dumps(settings))
        (workdir / "model-settings.json").write_text(json.dumps(
            {"name": name, "implementation": MLFLOW_RUNTIME,
             "parameters": {"uri": str(model_dir)}}))
        with _server([command, "start", str(workdir)], {"PYTHONPATH": str(MLSERVER_IMAGE)}, f"/v2/models/{name}/ready", port, workdir,
                     timeout) as url:
            yield url


@dataclass(frozen=True)
class EnvServer:
    url: str  # V2 REST
    metrics_url: str  # Prometheus endpoint, at the path the container's env names
    log: Path


@contextmanager
def mlserver_from_env(env: dict[str, str], ready_path: str, timeout: float = 240) -> Iterator[EnvServer]:
    """MLServer configured only by environment, as a Seldon custom container is: `env` is the
    container's (its secrets resolved, as the kubelet does) plus what the operator injects; this
    adds free loopback ports for MLSERVER_HTTP/GRPC/METRICS_PORT. No bucket credentials are inherited."""
    command = tool_script("mlserver", "mlserver", "MLServer, the V2 runtime of registry models")
    port, metrics_port = free_port(), free_port()
    full = {"PYTHONPATH": str(MLSERVER_IMAGE), "MLSERVER_HOST": "127.0.0.1", **env,
            "MLSERVER_HTTP_PORT": str(port), "MLSERVER_GRPC_PORT": str(free_port()),
            "MLSERVER_METRICS_PORT": str(metrics_port)}
    with tempfile.TemporaryDirectory(prefix="mlserver-env-") as tmp:
        workdir = Path(tmp)  # an empty model repository: the model comes from MLSERVER_MODEL_*
        with _server([command, "start", str(workdir)], full, ready_path, port, workdir, timeout,
                     drop=BUCKET_ENV) as url:
            endpoint = env.get("MLSERVER_METRICS_ENDPOINT", "/metrics")
            yield EnvServer(url, f"http://127.0.0.1:{metrics_port}{endpoint}", workdir / "server.log")


def seldon_serve() -> list[str]:
    """The Seldon-protocol images' entrypoint (workloads/common/seldon_serve.py), in the wrapper's virtualenv."""
    return [tool_script("seldon", "python", "Seldon Core's Python model wrapper"), "-m", "workloads.common.seldon_serve"]


@contextmanager
def seldon_wrapper(interface: str, env: dict[str, str], timeout: float = 180) -> Iterator[str]:
    """Seldon Core's Python wrapper serving `interface` (module.Class from this repository) as the
    model container does (the images' entrypoint, workloads/common/seldon_serve.py): Seldon protocol
    on /api/v1.0/predictions, one worker, one thread."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="seldon-") as tmp:
        args = [*seldon_serve(), interface, "--service-type", "MODEL", "--http-port", str(port),
                "--grpc-port", str(free_port()), "--metrics-port", str(free_port()),
                "--workers", "1", "--threads", "1"]
        with _server(args, {"PYTHONPATH": str(ROOT), **env}, "/health/ping", port, Path(tmp), timeout) as url:
            yield url


@contextmanager
def mlflow_scoring_server(model_dir: Path, timeout: float = 120) -> Iterator[str]:
    """`mlflow models serve` (the project's own MLflow, one worker) on the model in `model_dir`:
    the local reference the serving runtimes are measured against (POST /invocations)."""
    port = free_port()
    bin_dir = Path(sys.executable).parent  # the scoring server starts its workers from PATH
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir), "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with tempfile.TemporaryDirectory(prefix="mlflow-serve-") as tmp:
        env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        with _server(command, env, "/ping", port, Path(tmp), timeout) as url:
            yield url
