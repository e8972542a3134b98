"""The energy lifecycle for real: CSV ingest into PostgreSQL → train from the tables → register on
the platform's MLflow server (PostgreSQL + S3 API, auth) → champion and challenger → both batch
CronJob commands write their tables → the monitor scores yesterday and a real Pushgateway exposes
`model_quality_mape{model,alias}`."""

from __future__ import annotations


import mlflow
import pandas as pd
import psycopg
import pytest
import requests
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from tests.services import mlflow_server, postgres, s3_api
from tests.services import pushgateway as start_pushgateway
from workloads.energy import ingest, model, monitor, predict, store, synthetic, train

pytestmark = pytest.mark.integration
BUCKET = "mlflow-artifacts"
DAY = pd.Timestamp("2024-04-19")  # the last generated day: forecast, then its readings arrive


@pytest.fixture(scope="module")
def services():
    with postgres(("mlruns", "mlflow_auth", "energy")) as db, s3_api((BUCKET,)) as s3, \
            mlflow_server(db, s3, BUCKET) as server:
        yield db, server


@pytest.fixture(scope="module")
def pushgateway():
    with start_pushgateway() as url:
        yield url


@pytest.fixture
def env(services, monkeypatch):
    db, server = services
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.password)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    url = f"postgresql://{db.user}:{db.password}@{db.host}:{db.port}/energy"
    monkeypatch.setenv("DATABASE_URL", url)
    return url


def _metric(gateway: str, name: str) -> dict[str, float]:
    text = requests.get(f"{gateway}/metrics", timeout=10).text
    return {
        sample.labels["alias"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels.get("model") == train.MODEL_NAME
    }


def test_train_register_predict_and_monitor(env, pushgateway, tmp_path, capsys):
    generated = synthetic.generate(n_users=8, days=50, start="2024-03-01", seed=5)
    consumption, weather = generated.consumption, generated.weather
    before = consumption[consumption["timestamp"] < DAY]
    before.to_csv(tmp_path / "readings.csv", index=False)
    weather.to_csv(tmp_path / "weather.csv", index=False)
    ingest.main(["--consumption", str(tmp_path / "readings.csv"), "--weather", str(tmp_path / "weather.csv")])

    # first training run serves at once; the second shadows it
    train.main(["--from-database", "--register", "--trees", "30", "--seed", "0"])
    train.main(["--from-database", "--register", "--trees", "30", "--seed", "1"])
    out = capsys.readouterr().out
    assert "as @champion" in out and "as @challenger" in out
    client = MlflowClient()
    champion = client.get_model_version_by_alias(train.MODEL_NAME, "champion")
    challenger = client.get_model_version_by_alias(train.MODEL_NAME, "challenger")
    assert (int(champion.version), int(challenger.version)) == (1, 2)
    run = client.get_run(champion.run_id)
    assert run.data.metrics["mape"] < run.data.metrics["naive_mape"]
    assert run.data.params["data"] == "database"
    signature = mlflow.models.get_model_info(f"models:/{train.MODEL_NAME}@champion").signature
    assert [c.name for c in signature.inputs.inputs] == model.FEATURES

    # the two CronJobs' commands
    predict.main(["--alias", "champion", "--table", "energy_prod", "--day", str(DAY.date())])
    predict.main(["--alias", "challenger", "--table", "energy_pre", "--day", str(DAY.date())])
    with psycopg.connect(env) as conn:
        for table, alias, version in (("energy_prod", "champion", 1), ("energy_pre", "challenger", 2)):
            rows = conn.execute(f"SELECT count(*), min(timestamp), max(timestamp), min(alias), min(version), "
                                f"max(version) FROM {table}").fetchone()
            assert rows == (8 * 24, DAY.to_pydatetime(), (DAY + pd.Timedelta(hours=23)).to_pydatetime(),
                            alias, version, version)
        # re-running a CronJob replaces its rows instead of duplicating them
        predict.main(["--alias", "champion", "--table", "energy_prod", "--day", str(DAY.date())])
        assert conn.execute("SELECT count(*) FROM energy_prod").fetchone() == (8 * 24,)

        # the day's readings arrive; the monitor scores it
        store.write_readings(conn, consumption[consumption["timestamp"].dt.normalize() == DAY])
        actual = store.read_readings(conn, DAY, DAY + pd.Timedelta(days=1))
        expected = {}
        for table, alias in (("energy_prod", "champion"), ("energy_pre", "challenger")):
            joined = actual.merge(store.read_predictions(conn, table, DAY, DAY + pd.Timedelta(days=1)),
                                  on=["user_id", "timestamp"], suffixes=("", "_predicted"))
            expected[alias] = model.mape(joined["kwh"], joined["kwh_predicted"]) / 100

    monitor.main(["--day", str(DAY.date()), "--pushgateway", pushgateway])
    exposed = _metric(pushgateway, "model_quality_mape")
    assert exposed == pytest.approx(expected)
    assert 0.03 < exposed["champion"] < 0.40  # a fraction, as the platform's alert threshold (0.25) expects
    timestamps = _metric(pushgateway, "model_quality_evaluation_timestamp_seconds")
    assert set(timestamps) == {"champion", "challenger"}


def test_predict_names_the_missing_weather(env, services):
    with psycopg.connect(env) as conn:
        store.ensure_tables(conn)
        with pytest.raises(RuntimeError, match="no complete hourly temperature for 2031-01-01"):
            predict.day_weather(conn, pd.Timestamp("2031-01-01"), None, "Europe/Madrid")
