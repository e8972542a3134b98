"""The platform's MLflow server, for real: PostgreSQL metadata, proxied artifacts on an S3 API,
basic auth, registry aliases and Prometheus metrics — started with the component's own command."""

from __future__ import annotations

import json

import boto3
import numpy as np
import psycopg2
import pytest
import requests

from mlops.models import resolve
from tests.services import free_port, mlflow_server, postgres, s3_api

pytestmark = pytest.mark.integration
BUCKET = "mlflow-artifacts"


@pytest.fixture(scope="module")
def services():
    with postgres(("mlruns", "mlflow_auth")) as db, s3_api((BUCKET,)) as s3, mlflow_server(db, s3, BUCKET) as server:
        yield db, s3, server


@pytest.fixture
def client_env(services, monkeypatch):
    _, _, server = services
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.password)
    # proxied artifacts: the client must not need (or use) bucket credentials
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    return server


def test_requests_without_credentials_are_rejected(services):
    _, _, server = services
    response = requests.get(f"{server.url}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=10)
    assert response.status_code == 401
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200  # probes stay open


def test_log_register_alias_and_load_back(services, client_env):
    import mlflow
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    db, s3_endpoint, server = services
    features = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]])
    labels = np.array([0, 1, 0, 1])
    model = LogisticRegression().fit(features, labels)

    mlflow.set_experiment("platform-smoke")
    with mlflow.start_run() as run:
        mlflow.log_param("C", 1.0)
        mlflow.log_metric("accuracy", float((model.predict(features) == labels).mean()))
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name="smoke-model",
                                        input_example=features[:1], pip_requirements=["scikit-learn"])
    client = MlflowClient()
    version = info.registered_model_version
    client.set_registered_model_alias("smoke-model", "champion", version)

    loaded = mlflow.pyfunc.load_model("models:/smoke-model@champion")
    np.testing.assert_array_equal(loaded.predict(features), model.predict(features))
    assert client.get_model_version_by_alias("smoke-model", "champion").run_id == run.info.run_id

    # metadata went to PostgreSQL, artifacts to the bucket behind MLflow
    with psycopg2.connect(host=db.host, port=db.port, user=db.user, password=db.password, dbname="mlruns") as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = 'smoke-model'")
            assert cur.fetchall() == [("champion", int(version))]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert any(key.endswith("MLmodel") for key in keys), keys

    # what a SeldonDeployment is given: the bucket URI behind the alias, holding the MLmodel file
    uri = resolve("smoke-model", "champion", f"s3://{BUCKET}", client)
    assert uri.startswith(f"s3://{BUCKET}/")
    prefix = uri.removeprefix(f"s3://{BUCKET}/")
    assert f"{prefix}/MLmodel" in keys, (uri, keys)


def test_prometheus_metrics_are_exposed(services, client_env):
    _, _, server = services
    requests.get(f"{server.url}/health", timeout=10)
    response = requests.get(f"{server.url}/metrics", auth=(server.username, server.password), timeout=10)
    assert response.status_code == 200
    assert "mlflow_http_request_total" in response.text, response.text[:500]


# ---- `mlops smoke` against the real server ------------------------------------------------------

def _smoke(tmp_path, outputs: dict, capsys) -> tuple[int, str]:
    from mlops.cli import main

    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    code = main(["smoke", "--stack", "dev", "--outputs", str(path), "--timeout", "5"])
    return code, capsys.readouterr().out


def test_smoke_passes_on_a_healthy_mlflow(services, tmp_path, capsys):
    _, _, server = services
    code, out = _smoke(tmp_path, {"mlflowUrl": server.url, "mlflowAdminUsername": server.username,
                                  "mlflowAdminPassword": server.password}, capsys)
    assert code == 0, out
    assert "3/3 checks passed" in out and "ok   mlflow refuses anonymous API calls" in out


def test_smoke_fails_on_a_wrong_password_and_an_unreachable_service(services, tmp_path, capsys):
    _, _, server = services
    closed = f"http://127.0.0.1:{free_port()}"
    code, out = _smoke(tmp_path, {"mlflowUrl": server.url, "mlflowAdminUsername": server.username,
                                  "mlflowAdminPassword": "wrong", "grafanaUrl": closed,
                                  "modelUrls": {"neo": f"{closed}/seldon/serving/neo/v2/models/model/infer"}}, capsys)
    assert code == 1
    assert "FAIL mlflow admin login" in out and "HTTP 401" in out
    assert "FAIL grafana health" in out and "FAIL model neo ready" in out
    assert f"{closed}/seldon/serving/neo/v2/health/ready" in out
    assert "2/5 checks passed" in out


def test_smoke_finds_the_readiness_endpoint_of_both_protocols():
    from mlops.smoke import model_ready_url

    base = "http://models.localtest.me/seldon/serving"
    assert model_ready_url(f"{base}/neo/v2/models/model/infer") == f"{base}/neo/v2/health/ready"
    assert model_ready_url(f"{base}/mnist/api/v1.0/predictions") == f"{base}/mnist/api/v1.0/health/status"
