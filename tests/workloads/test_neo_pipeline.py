"""The NEO lifecycle for real, on the platform's MLflow server (PostgreSQL + S3 API, basic auth):
train → register `NEOs` (the first version becomes champion) → load `NEOs@champion` →
predict on the documented payloads, in-process and through MLflow's scoring server over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from tests.services import free_port, mlflow_server, postgres, s3_api, wait_http
from tests.workloads.test_neo_data import nasa_csv
from workloads.neo import payload, train

pytestmark = pytest.mark.integration
BUCKET = "mlflow-artifacts"


@pytest.fixture(scope="module")
def server():
    nasa_csv()  # skip (or fail under CI) before starting anything when the table is absent
    with postgres(("mlruns", "mlflow_auth")) as db, s3_api((BUCKET,)) as s3, mlflow_server(db, s3, BUCKET) as srv:
        yield srv


@pytest.fixture(scope="module")
def registered(server):
    """The training Job's run, with the env its pod gets."""
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", server.url)
    patch.setenv("MLFLOW_TRACKING_USERNAME", server.username)
    patch.setenv("MLFLOW_TRACKING_PASSWORD", server.password)
    patch.setenv("NEO_DATA", str(nasa_csv()))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        patch.delenv(var, raising=False)
    yield train.run(str(nasa_csv()), register=True)
    patch.undo()


def test_first_version_is_champion_with_its_metrics_in_the_experiment(registered):
    client = MlflowClient()
    assert registered.alias == "champion"
    assert client.get_model_version_by_alias(train.MODEL_NAME, "champion").version == str(registered.version)
    run = client.get_run(registered.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "Hazardous_NEOs"
    assert run.data.metrics["cv_f1_mean"] >= 0.99 and run.data.metrics["roc_auc"] >= 0.999
    assert run.data.params["features"] == "22"


def test_champion_loads_from_the_registry_with_signature_and_predicts_documented_payloads(registered):
    champion = mlflow.pyfunc.load_model(f"models:/{train.MODEL_NAME}@champion")
    rows = registered.result.X_test.head(5)
    assert champion.metadata.get_input_schema().input_names() == list(rows.columns)
    assert champion.metadata.saved_input_example_info is not None
    expected = registered.result.model.predict(rows).tolist()
    body = payload.invocations(rows)["dataframe_split"]
    from_invocations = champion.predict(pd.DataFrame(body["data"], columns=body["columns"]))
    assert list(from_invocations) == expected
    assert list(champion.predict(payload.v2_to_frame(payload.v2(rows)))) == expected


def test_scoring_server_answers_invocations_and_rejects_bad_payloads(registered, tmp_path):
    port = free_port()
    log = Path(tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{train.MODEL_NAME}@champion",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        # the server execs `uvicorn`, a console script beside this interpreter
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/ping", timeout=120, process=process)
        rows = registered.result.X_test.head(3)
        answer = requests.post(f"{url}/invocations", json=payload.invocations(rows), timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": registered.result.model.predict(rows).tolist()}
        missing = rows.drop(columns=["minimum_orbit_intersection"])
        for bad in ({"dataframe_split": {"columns": list(missing.columns), "data": missing.to_numpy().tolist()}},
                    {"no_such_key": []}):
            refused = requests.post(f"{url}/invocations", json=bad, timeout=30)
            assert 400 <= refused.status_code < 500, refused.text
        assert requests.post(f"{url}/invocations", json=payload.invocations(rows), timeout=30).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    if process.returncode not in (0, -15):
        print(Path(tmp_path / "serve.log").read_text()[-3000:])


def test_mlops_train_runs_the_entry_point_against_a_stacks_mlflow(registered, server, tmp_path):
    """`mlops train neo --stack …` with the stack outputs of a deployed stack: a second version,
    registered as challenger (the champion stays), logged with the admin login from the outputs."""
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"mlflowUrl": server.url, "mlflowAdminUsername": server.username,
                                   "mlflowAdminPassword": server.password}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run([sys.executable, "-m", "mlops.cli", "train", "neo", "--stack", "dev", "--outputs",
                           str(outputs), "--", "--data", str(nasa_csv()), "--register"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient()
    challenger = client.get_model_version_by_alias(train.MODEL_NAME, "challenger")
    assert int(challenger.version) == int(registered.version) + 1
    assert client.get_model_version_by_alias(train.MODEL_NAME, "champion").version == str(registered.version)
