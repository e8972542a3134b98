"""The retraining loop's local pieces, shared by tests/test_retraining.py and
tests/test_retraining_chain.py: a stand-in for the Kubernetes Jobs API (the only thing that cannot
run here), the real receiver (modules/retraining/image/mlops_retrain.py) and a real Alertmanager
running a plan's routing, pointed at that receiver."""

from __future__ import annotations

import copy
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from mlops.plan import Plan
from modules.monitoring.alerting import CONFIG_NAME
from tests.services import alertmanager, free_port, server_process
from tests.test_alerting import operator_config

ROOT = Path(__file__).resolve().parents[1]
RECEIVER = ROOT / "modules" / "retraining" / "image" / "mlops_retrain.py"
NS = "ml-workloads"
IN_CLUSTER_URL = f"http://retraining.{NS}.svc.cluster.local:8080"
MODEL_LABEL = "mlops-stack/retrain-model"


def models_config(plan: Plan) -> dict[str, Any]:
    return json.loads(plan.manifest("ConfigMap", "retraining-models", NS)["data"]["models.json"])


class KubernetesStandIn(ThreadingHTTPServer):
    """The Jobs API of one namespace: records POSTed Jobs, answers label-selector lists; the next
    `failures` POSTs answer 500 (an API server that is briefly down)."""

    def __init__(self, port: int) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.refused = 0
        self.failures = 0
        self.lock = threading.Lock()
        server = self
        path = f"/apis/batch/v1/namespaces/{NS}/jobs"

        class Handler(BaseHTTPRequestHandler):
            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                assert url.path == path, url.path
                key, _, value = parse_qs(url.query)["labelSelector"][0].partition("=")
                with server.lock:
                    items = [j for j in server.jobs if j["metadata"]["labels"].get(key) == value]
                self._json(200, {"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": items})

            def do_POST(self) -> None:  # noqa: N802
                assert urlparse(self.path).path == path, self.path
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    if server.failures:
                        server.failures -= 1
                        server.refused += 1
                        return self._json(500, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                "message": "etcdserver: request timed out", "code": 500})
                    body["metadata"]["creationTimestamp"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                    body["metadata"]["uid"] = f"uid-{len(server.jobs)}"
                    server.jobs.append(body)
                self._json(201, body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", port), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def of(self, model: str) -> list[dict[str, Any]]:
        with self.lock:
            return [j for j in self.jobs if j["metadata"]["labels"].get(MODEL_LABEL) == model]

    def complete(self, model: str) -> None:
        with self.lock:
            for j in self.jobs:
                if j["metadata"]["labels"].get(MODEL_LABEL) == model:
                    j["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}


@contextmanager
def kubernetes_stand_in() -> Iterator[KubernetesStandIn]:
    server = KubernetesStandIn(free_port())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def wait_until(found, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not found():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds}s: {what}")
        time.sleep(0.1)


def http(url: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class Endpoint(str):
    """A local server's URL, and the pid of its process."""

    pid: int


@contextmanager
def receiver_process(models: Mapping[str, Any], api_server: str, folder: Path) -> Iterator[Endpoint]:
    """mlops_retrain.py serve with `models` (the plan's ConfigMap) on 127.0.0.1, creating Jobs at `api_server`."""
    (folder / "models.json").write_text(json.dumps(models))
    port = free_port()
    url = Endpoint(f"http://127.0.0.1:{port}")
    with server_process([sys.executable, str(RECEIVER), "serve", "--config", str(folder / "models.json"),
                         "--namespace", NS, "--host", "127.0.0.1", "--port", str(port), "--api-server", api_server],
                        f"{url}/healthz", folder / "receiver.log") as process:
        url.pid = process.pid
        yield url


@contextmanager
def alertmanager_process(plan: Plan, receiver: str, folder: Path) -> Iterator[str]:
    """A real Alertmanager running the plan's routing (as the operator writes it), the receiver's
    in-cluster URL pointed at the local `receiver` and the group timers shortened."""
    spec = copy.deepcopy(plan.manifest("AlertmanagerConfig", CONFIG_NAME, "monitoring")["spec"])
    spec["route"] |= {"groupWait": "1s", "groupInterval": "2s"}
    config = yaml.safe_dump(operator_config(spec, {}), sort_keys=False).replace(IN_CLUSTER_URL, receiver)
    with alertmanager(config, folder) as url:
        yield url


def counter(receiver: str, model: str, trigger: str, outcome: str) -> float:
    text = http(f"{receiver}/metrics")[1]
    line = f'retraining_triggers_total{{model="{model}",outcome="{outcome}",trigger="{trigger}"}} '
    [value] = [row[len(line):] for row in text.splitlines() if row.startswith(line)]
    return float(value)
