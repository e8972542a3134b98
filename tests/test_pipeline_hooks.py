"""The model pipeline's hooks, run exactly as its jobs run them (the executable, from the
repository root, with the pipeline's environment) against a real MLflow server (PostgreSQL + S3
API, basic auth), MLServer for the served endpoint and PostgreSQL for energy's tables:
register → challenger with lineage; promote only a better challenger; rollback; smoke; and mnist's
withheld zero through one served endpoint that follows `champion` as the hooks move it."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from tests.runtimes import mlserver, seldon_wrapper
from tests.services import mlflow_server, postgres, s3_api
from tests.workloads.test_neo_data import nasa_csv
from workloads.common import promotion
from workloads.energy import predict, store, synthetic

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
BUCKET = "mlflow-artifacts"
GIT_SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def services():
    with postgres(("mlruns", "mlflow_auth", "energy", "energy_crippled")) as db, s3_api((BUCKET,)) as s3, \
            mlflow_server(db, s3, BUCKET) as server:
        yield db, server


@pytest.fixture(scope="module")
def client(services):
    _, server = services
    patch = pytest.MonkeyPatch()
    for key, value in tracking(server).items():
        patch.setenv(key, value)
    # bounded: a request the loaded server drops is retried after 30 s, not waited on for minutes
    patch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        patch.delenv(var, raising=False)
    yield MlflowClient()
    patch.undo()


def tracking(server) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": server.url, "MLFLOW_TRACKING_USERNAME": server.username,
            "MLFLOW_TRACKING_PASSWORD": server.password}


def hook(services, tmp_path: Path, workload: str, step: str, **env: str) -> subprocess.CompletedProcess:
    return run_hook(services[1], tmp_path, workload, step, **env)


def run_hook(server, tmp_path: Path, workload: str, step: str, **env: str) -> subprocess.CompletedProcess:
    """`workloads/<workload>/ci/<step>` with the environment the pipeline's job gives it, against
    the MLflow server `server`; the step's outputs (`$GITHUB_OUTPUT`) in `.outputs`."""
    output = tmp_path / f"github-output-{workload}-{step}"
    output.write_text("")
    base = {k: v for k, v in os.environ.items()
            if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")}
    full = {**base, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "WORKLOAD": workload, "WORKLOAD_DIR": f"workloads/{workload}", "STACK": "test", "GIT_SHA": GIT_SHA,
            "IMAGE": f"registry.example.org/mlops-{workload}@sha256:{'ab' * 32}", "GITHUB_OUTPUT": str(output),
            "MODEL_ROLE": "challenger", **tracking(server), **env}
    result = subprocess.run([str(ROOT / "workloads" / workload / "ci" / step)], cwd=ROOT, env=full,
                            capture_output=True, text=True, timeout=600)
    result.outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())  # type: ignore[attr-defined]
    return result


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def alias(client: MlflowClient, model: str, name: str) -> str | None:
    version = promotion.version_of(client, model, name)
    return version.version if version else None


class Traffic:
    """Requests sent back to back from a thread while a test moves aliases: every answer's time,
    status and the version it reports (`version(body)`), so a switch is seen without a failure."""

    def __init__(self, send: Callable[[], requests.Response], version: Callable[[dict[str, Any]], str | None]) -> None:
        self.send, self.version = send, version
        self.answers: list[tuple[float, int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self.send()
                version = self.version(response.json()) if response.status_code == 200 else None
                self.answers.append((time.monotonic(), response.status_code, version))
            except requests.RequestException:
                self.answers.append((time.monotonic(), 0, None))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    @property
    def failed(self) -> int:
        return sum(1 for _, status, _ in self.answers if status != 200)

    def first(self, version: str) -> float | None:
        return next((t for t, status, v in self.answers if status == 200 and v == version), None)

    def sequence(self) -> list[str | None]:
        """The versions answered, one entry per switch."""
        return [v for v, _ in itertools.groupby(v for _, _, v in self.answers)]


def write_neo_tables(folder: Path) -> tuple[Path, Path]:
    """400 rows of the NASA table, and the same rows with their labels shuffled (nothing to learn)."""
    raw = pd.read_csv(nasa_csv())
    rows = pd.concat([raw[raw["Hazardous"]].sample(80, random_state=0),
                      raw[~raw["Hazardous"]].sample(320, random_state=0)]).sort_index()
    crippled = rows.copy()
    rng = np.random.default_rng(0)
    crippled["Hazardous"] = rng.permutation(crippled["Hazardous"].to_numpy())
    rows.to_csv(folder / "good.csv", index=False)
    crippled.to_csv(folder / "crippled.csv", index=False)
    return folder / "good.csv", folder / "crippled.csv"


@pytest.fixture(scope="module")
def neo_tables(tmp_path_factory):
    return write_neo_tables(tmp_path_factory.mktemp("neo"))


def test_neo_register_gate_promote_rollback_lineage_and_smoke(services, client, neo_tables, tmp_path):
    good, crippled = map(str, neo_tables)
    model = "NEOs"
    first = ok(hook(services, tmp_path, "neo", "register", NEO_DATA=crippled))
    assert first.outputs["model-version"] == "1" and alias(client, model, "challenger") == "1"
    ok(hook(services, tmp_path, "neo", "deploy", MODEL_VERSION="1"))
    assert "no champion yet" in ok(hook(services, tmp_path, "neo", "promote", MODEL_VERSION="1")).stdout
    assert alias(client, model, "champion") == "1" and promotion.history(client, model) == []

    # lineage: the version names its run, the exact data (digest of the stored copy), commit and image
    version = client.get_model_version(model, "1")
    assert version.tags["mlflow.source.git.commit"] == GIT_SHA
    assert version.tags["lineage.image"].startswith("registry.example.org/mlops-neo@sha256:")
    run = client.get_run(version.run_id)
    [logged] = run.inputs.dataset_inputs
    assert logged.dataset.name == "nasa" and run.data.tags["lineage.dataset.nasa.rows"] == "400"
    assert json.loads(logged.dataset.profile)["num_rows"] == 400
    copy = mlflow.artifacts.download_artifacts(json.loads(logged.dataset.source)["uri"], dst_path=str(tmp_path))
    digest = hashlib.sha256(Path(copy).read_bytes()).hexdigest()
    assert run.data.tags["lineage.dataset.nasa.digest"] == digest and digest.startswith(logged.dataset.digest)
    assert pd.read_csv(copy).equals(pd.read_csv(crippled))
    assert run.data.tags["trigger"] == "manual"  # no RETRAIN_TRIGGER: started by hand (workloads/common/tracking.py)

    # a better challenger: refused under a margin it cannot meet, promoted under the default one
    # started by the retraining receiver (modules/retraining): the run records which trigger
    second = ok(hook(services, tmp_path, "neo", "register", NEO_DATA=good, RETRAIN_TRIGGER="drift")).outputs["model-version"]
    assert client.get_run(client.get_model_version(model, second).run_id).data.tags["trigger"] == "drift"
    ok(hook(services, tmp_path, "neo", "deploy", MODEL_VERSION=second))
    refused = hook(services, tmp_path, "neo", "promote", MODEL_VERSION=second, PROMOTE_MARGIN="2")
    assert refused.returncode == 1 and "not better enough" in refused.stdout
    assert alias(client, model, "champion") == "1"
    ok(hook(services, tmp_path, "neo", "promote", MODEL_VERSION=second))
    assert alias(client, model, "champion") == second
    assert [e["version"] for e in promotion.history(client, model)] == ["1"]

    # the champion served by MLServer (V2), reached through the stack outputs' modelUrls
    with mlserver(Path(mlflow.artifacts.download_artifacts(f"models:/{model}@champion", dst_path=str(tmp_path / "m"))),
                  "neo") as url:
        outputs = tmp_path / "outputs.json"
        outputs.write_text(json.dumps({"modelUrls": {"neo": f"{url}/v2/models/neo/infer"}}))
        smoke = ok(hook(services, tmp_path, "neo", "smoke", MODEL_ROLE="champion", NEO_DATA=good,
                        STACK_OUTPUTS=str(outputs)))
        assert f"{url}/v2/models/neo/infer (champion v{second})" in smoke.stdout
        unserved = hook(services, tmp_path, "neo", "smoke", MODEL_ROLE="champion", NEO_DATA=good,
                        STACK_OUTPUTS=str(outputs), SERVING_NAME="asteroids")
        assert unserved.returncode == 1 and "serving.models.asteroids" in unserved.stdout

        # a worse challenger: its own smoke test fails, the gate refuses it, the champion stays
        third = ok(hook(services, tmp_path, "neo", "register", NEO_DATA=crippled)).outputs["model-version"]
        ok(hook(services, tmp_path, "neo", "deploy", MODEL_VERSION=third))
        bad_smoke = hook(services, tmp_path, "neo", "smoke", NEO_DATA=good, STACK_OUTPUTS=str(outputs))
        assert bad_smoke.returncode == 1 and "(in-process)" in bad_smoke.stdout
    worse = hook(services, tmp_path, "neo", "promote", MODEL_VERSION=third)
    assert worse.returncode == 1 and "worse" in worse.stdout and "stays v" + second in worse.stdout
    assert alias(client, model, "champion") == second

    # `mlops lineage` prints the chain; `mlops rollback` moves champion back
    env = {**os.environ, **tracking(services[1])}
    shown = subprocess.run([sys.executable, "-m", "mlops.cli", "lineage", "--model", "neo"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True).stdout
    digest = client.get_model_version(model, second).tags["lineage.dataset.nasa.digest"]
    assert f"NEOs@champion → version {second}" in shown and digest in shown and GIT_SHA in shown
    assert "registry.example.org/mlops-neo@sha256:" in shown
    back = subprocess.run([sys.executable, "-m", "mlops.cli", "rollback", "--model", "neo"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert back.returncode == 0, back.stderr
    assert alias(client, model, "champion") == "1" and promotion.history(client, model) == []
    again = subprocess.run([sys.executable, "-m", "mlops.cli", "rollback", "--model", "neo"], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    assert again.returncode == 1 and "no earlier champion" in again.stderr


def held_out_zeros() -> np.ndarray:
    """The zeros of the sample's test split: no training run of these tests sees them."""
    from workloads.mnist import train  # torch: imported by the test that needs it

    _, test = train.splits("sample", "")
    return test.X[test.y == 0]


def seldon_version(reply: dict[str, Any]) -> str | None:
    return (reply.get("meta") or {}).get("tags", {}).get("model_version")


def test_mnist_withheld_zero_story_on_one_served_endpoint(services, client, tmp_path):
    """The source's story through the mnist image's server (Seldon's Python wrapper) following
    `mnist@champion`: blind to zeros over HTTP, the hooks promote the retrained challenger, the
    same endpoint recognises zeros, and a rollback brings the blind one back, no request failing."""
    blind = ok(hook(services, tmp_path, "mnist", "register", MNIST_SOURCE="sample", MNIST_EPOCHS="1",
                    MNIST_TRAIN_LIMIT="1500", MNIST_EXCLUDE_DIGITS="0 1 2 3 4")).outputs["model-version"]
    ok(hook(services, tmp_path, "mnist", "promote", MODEL_VERSION=blind))
    seeing = ok(hook(services, tmp_path, "mnist", "register", MNIST_SOURCE="sample",
                     MNIST_EPOCHS="2")).outputs["model-version"]
    ok(hook(services, tmp_path, "mnist", "deploy", MODEL_VERSION=seeing))
    zeros = held_out_zeros()
    with seldon_wrapper("workloads.mnist.serving.MnistClassifier",
                        {"MODEL_URI": "models:/mnist@champion", "MODEL_POLL_SECONDS": "2", **tracking(services[1])}) as url:
        predictions = f"{url}/api/v1.0/predictions"
        outputs = tmp_path / "outputs.json"
        outputs.write_text(json.dumps({"modelUrls": {"mnist": predictions}}))

        def smoke(**env: str) -> subprocess.CompletedProcess:
            return hook(services, tmp_path, "mnist", "smoke", STACK_OUTPUTS=str(outputs), SMOKE_TIMEOUT="120", **env)

        def zero_share() -> tuple[float, str | None]:
            reply = requests.post(predictions, json={"data": {"ndarray": zeros.tolist()}}, timeout=60).json()
            return float(np.mean(np.array(reply["jsonData"]["digits"]) == 0)), seldon_version(reply)

        assert zero_share() == (0.0, blind)  # never saw a 0: never says 0
        challenger_smoke = ok(smoke(SMOKE_MIN_ACCURACY="0.5"))
        assert "(in-process)" in challenger_smoke.stdout and f"(champion v{blind})" in challenger_smoke.stdout
        served = smoke(MODEL_ROLE="champion", SMOKE_MIN_ACCURACY="0.9")
        assert served.returncode == 1 and "at least 0.90 required" in served.stdout  # the blind one fails

        with Traffic(lambda: requests.post(predictions, json={"data": {"ndarray": zeros[:2].tolist()}}, timeout=30),
                     seldon_version) as traffic:
            ok(hook(services, tmp_path, "mnist", "promote", MODEL_VERSION=seeing))
            assert f"(champion v{seeing})" in ok(smoke(MODEL_ROLE="champion")).stdout  # waits for the switch
            share, version = zero_share()
            assert version == seeing and share >= 0.95, (version, share)
            rolled = ok(hook(services, tmp_path, "mnist", "rollback"))
            assert rolled.outputs["model-version"] == blind
            assert f"(champion v{blind})" in ok(smoke(MODEL_ROLE="champion", SMOKE_MIN_ACCURACY="0")).stdout
            assert zero_share() == (0.0, blind)
        assert traffic.failed == 0, [a for a in traffic.answers if a[1] != 200][:5]
        assert traffic.sequence()[-3:] == [blind, seeing, blind], traffic.sequence()
    assert alias(client, "mnist", "champion") == blind
    assert client.get_model_version("mnist", seeing).tags[promotion.ROLLED_BACK_TAG]
    run = client.get_run(client.get_model_version("mnist", seeing).run_id)
    contexts = {i.dataset.name: [t.value for t in i.tags if t.key == "mlflow.data.context"] for i in run.inputs.dataset_inputs}
    assert contexts == {"train": ["training"], "test": ["evaluation"]}
    assert run.data.tags["lineage.dataset.train.rows"] == "4000"
    blind_rows = client.get_run(client.get_model_version("mnist", blind).run_id).data.tags["lineage.dataset.train.rows"]
    assert 0 < int(blind_rows) < 1500  # what it was trained on: the first 1,500 images without 0-4


def _shadow_days(url: str, readings: pd.DataFrame, days: list[pd.Timestamp]) -> None:
    """What the energy-prod / energy-pre CronJobs do each day, then the day's readings arrive."""
    for day in days:
        predict.run(url, "champion", "energy_prod", day)
        predict.run(url, "challenger", "energy_pre", day)
        with store.connect(url) as conn:
            store.write_readings(conn, readings[readings["timestamp"].dt.normalize() == day])


def test_energy_promotes_on_shadow_mape_over_n_days(services, client, tmp_path):
    db, _ = services
    url = f"postgresql://{db.user}:{db.password}@{db.host}:{db.port}/energy"
    crippled_url = url.removesuffix("/energy") + "/energy_crippled"
    generated = synthetic.generate(n_users=4, days=50, start="2024-03-01", seed=3)
    readings, weather = generated.consumption, generated.weather
    cut = pd.Timestamp("2024-04-08")
    history = readings[readings["timestamp"] < cut]
    # the same readings with each user's hours shuffled: a model trained on them learns no daily shape
    rng = np.random.default_rng(0)
    shuffled = history.assign(kwh=history.groupby("user_id")["kwh"].transform(lambda s: rng.permutation(s.to_numpy())))
    for target, frame in ((url, history), (crippled_url, shuffled)):
        with store.connect(target) as conn:
            store.ensure_tables(conn)
            store.write_readings(conn, frame)
            store.write_weather(conn, weather)
    quick = {"ENERGY_TREES": "20", "PROMOTE_DAYS": "3", "DATABASE_URL": url}
    model = "energy-forecast"

    first = ok(hook(services, tmp_path, "energy", "register", **{**quick, "DATABASE_URL": crippled_url}))
    ok(hook(services, tmp_path, "energy", "promote", **quick))
    assert alias(client, model, "champion") == first.outputs["model-version"]
    second = ok(hook(services, tmp_path, "energy", "register", **quick)).outputs["model-version"]
    ok(hook(services, tmp_path, "energy", "deploy", MODEL_VERSION=second, **quick))
    early = hook(services, tmp_path, "energy", "promote", MODEL_VERSION=second, **quick)
    assert early.returncode == 1 and "0 of 3 days" in early.stdout
    assert alias(client, model, "champion") == first.outputs["model-version"]

    days = [cut + pd.Timedelta(days=i) for i in range(6)]
    _shadow_days(url, readings, days[:3])
    smoke = ok(hook(services, tmp_path, "energy", "smoke", SMOKE_DAY=str(days[3].date()), **quick))
    assert "24 hours for 4 users" in smoke.stdout and "energy_pre" in smoke.stdout
    ok(hook(services, tmp_path, "energy", "promote", MODEL_VERSION=second, **quick))
    assert alias(client, model, "champion") == second

    third = ok(hook(services, tmp_path, "energy", "register", **{**quick, "DATABASE_URL": crippled_url}))
    ok(hook(services, tmp_path, "energy", "deploy", MODEL_VERSION=third.outputs["model-version"], **quick))
    _shadow_days(url, readings, days[3:])
    worse = hook(services, tmp_path, "energy", "promote", MODEL_VERSION=third.outputs["model-version"], **quick)
    assert worse.returncode == 1 and "worse" in worse.stdout, worse.stdout + worse.stderr
    assert alias(client, model, "champion") == second
    lineage = client.get_model_version(model, second).tags
    assert lineage["lineage.dataset.consumption.source"].endswith("/energy#energy_readings")
    assert db.password not in lineage["lineage.dataset.consumption.source"]
