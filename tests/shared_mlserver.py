"""One real MLServer process serving a model repository of many models, laid out as the shared
server's pod sees it (modules/serving/density.py): the repository is a ConfigMap volume, whose
files the kubelet writes under a hidden timestamped directory reached through `..data` and one
symlink per key path (`<model>/model-settings.json`). MLServer finds the models with a recursive
glob, so the test proves it finds them through those symlinks and skips the hidden directories.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.footprint_measure import listening_root
from tests.runtimes import MLSERVER_IMAGE, _server, tool_script
from tests.services import free_port


@dataclass(frozen=True)
class SharedServer:
    url: str
    port: int
    log: Path

    def pid(self) -> int:
        """The MLServer process (parallel_workers 0: the only one)."""
        return listening_root(self.port)


def write_configmap_volume(root: Path, files: Mapping[str, str]) -> None:
    """`files` (key path -> content) as the kubelet's atomic writer mounts a ConfigMap with `items`."""
    data = root / "..2026_01_01_00_00_00.000000000"
    for path, content in files.items():
        target = data / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    (root / "..data").symlink_to(data.name)
    for top in {path.split("/", 1)[0] for path in files}:
        (root / top).symlink_to(f"..data/{top}")


@contextmanager
def shared_mlserver(repository: Mapping[str, str], env: Mapping[str, str] | None = None,
                    timeout: float = 600, ready_path: str = "/v2/health/ready") -> Iterator[SharedServer]:
    """MLServer in the main process only (no inference workers, as the shared server runs) on a
    ConfigMap-shaped repository; server settings from the environment, as the pod's env sets them."""
    command = tool_script("mlserver", "mlserver", "MLServer, the runtime of the shared model server")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="mlserver-shared-") as tmp:
        work, models = Path(tmp), Path(tmp) / "models"
        models.mkdir()
        write_configmap_volume(models, repository)
        full = {"PYTHONPATH": str(MLSERVER_IMAGE), "MLSERVER_HOST": "127.0.0.1", "MLSERVER_PARALLEL_WORKERS": "0",
                "MLSERVER_HTTP_PORT": str(port), "MLSERVER_GRPC_PORT": str(free_port()),
                "MLSERVER_METRICS_PORT": str(free_port()), **(env or {})}
        with _server([command, "start", str(models)], full, ready_path, port, work, timeout) as url:
            yield SharedServer(url, port, work / "server.log")


def model_settings(name: str, implementation: str, uri: str | None = None,
                   extra: Mapping[str, Any] | None = None) -> str:
    parameters: dict[str, Any] = {}
    if uri is not None:
        parameters["uri"] = uri
    if extra is not None:
        parameters["extra"] = dict(extra)
    return json.dumps({"name": name, "implementation": implementation, "parameters": parameters})
