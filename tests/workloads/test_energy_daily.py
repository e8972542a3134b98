"""The energy demo day after day, for real: the plan's `energy-ingest` CronJob command writes each
new day into PostgreSQL (re-runs replace, values agree with the training Job's seed), the monitor
scores that day through a real Pushgateway, the forecast's weather comes from Open-Meteo (a local
stub speaking its format and its errors) or falls back to `energy_weather`, and the plan says where
the weather comes from."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pandas as pd
import psycopg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from urllib3.util.retry import Retry

from mlops.plan import Plan, run_program, stack_config
from mlops.validate import validate_plan
from tests.services import free_port, postgres
from tests.services import pushgateway as start_pushgateway
from workloads.energy import data, ingest, model, monitor, predict, store, synthetic

TODAY = pd.Timestamp("2024-04-20")  # the seed Job runs today: readings up to yesterday
DIGEST = "sha256:" + "ab" * 32
IMAGE = {"repository": "ghcr.io/my-org/energy", "tag": "3f2c1ab", "digest": DIGEST}
NAMESPACE = "ml-workloads"


def _plan(**energy) -> Plan:
    values, secret_keys = stack_config("dev")
    workloads = {"energy": {"enabled": True, "image": IMAGE, **energy}}
    return run_program("dev", ({**values, "mlops-stack:workloads": json.dumps(workloads)}, secret_keys))


@pytest.fixture(scope="module")
def demo() -> Plan:
    return _plan()


def _container(plan: Plan, kind: str, name: str, init: bool = False) -> dict:
    obj = plan.manifest(kind, name, NAMESPACE)
    spec = obj["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else obj["spec"]
    return spec["template"]["spec"]["initContainers" if init else "containers"][0]


def _argv(container: dict, module: str) -> list[str]:
    """The container's `python -m <module> ARGS...` as ARGS (what the module's main() parses)."""
    assert container["command"][:3] == ["python", "-m", module], container["command"]
    return container["command"][3:]


def _daily_at(schedule: str) -> tuple[int, int]:
    minute, hour, *rest = schedule.split()
    assert rest == ["*", "*", "*"], f"not a daily schedule: {schedule}"
    return int(hour), int(minute)


# ---------------------------------------------------------------- the plan


def test_demo_stack_ingests_daily_before_the_monitor_and_validates(demo):
    crons = {o["metadata"]["name"]: o for o in demo.kubernetes_objects if o["kind"] == "CronJob"}
    ingest_cron, monitor_cron = crons["energy-ingest"], crons["energy-monitor"]
    assert ingest_cron["spec"]["timeZone"] == monitor_cron["spec"]["timeZone"] == "Europe/Madrid"
    assert _daily_at(ingest_cron["spec"]["schedule"]) < _daily_at(monitor_cron["spec"]["schedule"])
    assert ingest_cron["spec"]["concurrencyPolicy"] == "Forbid"
    # the same synthetic site as the training Job's seed: same users and seed
    seed = _argv(_container(demo, "Job", "energy-train", init=True), "workloads.energy.ingest")
    daily = _argv(_container(demo, "CronJob", "energy-ingest"), "workloads.energy.ingest")
    assert seed[:5] == daily[:5] == ["--synthetic", "--users", "20", "--seed", "0"]
    env = {e["name"]: e for e in _container(demo, "CronJob", "energy-ingest")["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "workloads-database"
    report = validate_plan(demo, "1.34")
    assert report.ok, report.render()


def test_ingest_cronjob_only_on_demo_stacks_and_the_plan_says_where_the_weather_comes_from(demo):
    assert not [w for w in demo.warnings if "workloads.energy" in w]  # demo weather: energy_weather
    site = _plan(demoData=False)
    assert not [o for o in site.kubernetes_objects if o["metadata"]["name"] == "energy-ingest"]
    [warning] = [w for w in site.warnings if "workloads.energy" in w]
    assert warning.startswith("mlops-stack:workloads.energy.latitude/longitude: not set")
    assert "energy_weather" in warning and "Open-Meteo" in warning
    located = _plan(demoData=False, latitude=36.72, longitude=-4.42, ingestSchedule="15 1 * * *")
    assert not [w for w in located.warnings if "workloads.energy" in w]
    assert _container(located, "CronJob", "energy-prod")["command"][-4:] == ["--latitude", "36.72",
                                                                             "--longitude", "-4.42"]
    demo_located = _plan(latitude=36.72, longitude=-4.42, ingestSchedule="15 1 * * *")
    assert demo_located.manifest("CronJob", "energy-ingest", NAMESPACE)["spec"]["schedule"] == "15 1 * * *"
    assert [w for w in demo_located.warnings if "workloads.energy.demoData" in w]


# ---------------------------------------------------------------- the daily ingest, for real


@pytest.fixture(scope="module")
def database():
    with postgres(("energy",)) as db:
        yield f"postgresql://{db.user}:{db.password}@{db.host}:{db.port}/energy"


@pytest.fixture(scope="module")
def pushgateway():
    with start_pushgateway() as url:
        yield url


def _day(conn, day: pd.Timestamp) -> pd.DataFrame:
    return store.read_readings(conn, day, day + pd.Timedelta(days=1))


@pytest.mark.integration
def test_daily_ingest_replaces_its_day_agrees_with_the_seed_and_the_monitor_scores_it(
        demo, database, pushgateway, monkeypatch, capsys):  # fmt: skip
    monkeypatch.setenv("DATABASE_URL", database)
    seed = _argv(_container(demo, "Job", "energy-train", init=True), "workloads.energy.ingest")
    daily = _argv(_container(demo, "CronJob", "energy-ingest"), "workloads.energy.ingest")
    yesterday = TODAY - pd.Timedelta(days=1)

    # day 0: the training Job seeds 120 days; the ingest CronJob runs (and is re-run) the same night
    ingest.main([*seed, "--today", str(TODAY.date())])
    with psycopg.connect(database) as conn:
        seeded = _day(conn, yesterday)
        total = conn.execute("SELECT count(*) FROM energy_readings").fetchone()[0]
    assert total == 20 * 120 * 24 and len(seeded) == 20 * 24
    for _ in range(2):
        ingest.main([*daily, "--today", str(TODAY.date())])
        with psycopg.connect(database) as conn:
            assert conn.execute("SELECT count(*) FROM energy_readings").fetchone()[0] == total
            pd.testing.assert_frame_equal(_day(conn, yesterday), seeded)  # same values, no duplicates
    assert "wrote 1440 readings" in capsys.readouterr().out

    # day 1: the forecast of day 0 from the readings before it, then the night's ingest brings day 0
    # (the day the monitor scores) and the weather through tomorrow
    with psycopg.connect(database) as conn:
        history = store.read_readings(conn, TODAY - pd.Timedelta(days=120), TODAY)
        weather = store.read_weather(conn, TODAY - pd.Timedelta(days=120), TODAY + pd.Timedelta(days=1))
        assert _day(conn, TODAY).empty
        forecaster = model.fit(history, weather, n_estimators=20, seed=0)
        forecast = forecaster.forecast(history, weather, TODAY)
        store.ensure_tables(conn, ["energy_prod"])
        store.write_predictions(conn, "energy_prod", forecast.dropna(), "energy-forecast", 1, "champion")
    ingest.main([*daily, "--today", str((TODAY + pd.Timedelta(days=1)).date())])
    with psycopg.connect(database) as conn:
        arrived = _day(conn, TODAY)
        assert conn.execute("SELECT count(*) FROM energy_readings").fetchone()[0] == total + 20 * 24
        assert store.read_weather(conn, TODAY, TODAY + pd.Timedelta(days=2))["temperature_c"].notna().sum() == 48
    expected = synthetic.generate(n_users=20, days=1, start=str(TODAY.date()), seed=0).consumption
    pd.testing.assert_frame_equal(arrived, expected, check_dtype=False)

    # day 1, 10:00: the monitor CronJob's own command scores day 0 and pushes
    monitor_container = _container(demo, "CronJob", "energy-monitor")
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway)
    before = time.time()
    monitor.main([*_argv(monitor_container, "workloads.energy.monitor"), "--day", str(TODAY.date())])
    joined = arrived.merge(forecast, on=["user_id", "timestamp"], suffixes=("", "_predicted"))
    counted = joined["kwh"].notna() & (joined["kwh"] >= model.MIN_ACTUAL_KWH)
    mape = model.mape(joined.loc[counted, "kwh"], joined.loc[counted, "kwh_predicted"]) / 100
    exposed = _gauges(pushgateway)
    assert exposed["model_quality_mape"] == {"champion": pytest.approx(mape)}
    assert 0.03 < mape < 0.40
    assert set(exposed["model_quality_evaluation_timestamp_seconds"]) == {"champion"}  # no challenger yet
    assert exposed["model_quality_evaluation_timestamp_seconds"]["champion"] >= before


def _gauges(gateway: str) -> dict[str, dict[str, float]]:
    text = requests.get(f"{gateway}/metrics", timeout=10).text
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("model_quality_") and sample.labels.get("job") == "energy-monitor":
                out.setdefault(sample.name, {})[sample.labels["alias"]] = sample.value
    return out


# ---------------------------------------------------------------- Open-Meteo, and without it


class _OpenMeteo(BaseHTTPRequestHandler):
    """api.open-meteo.com's /v1/forecast as documented: a real-shaped hourly response, or, chosen
    by the latitude, a 400 with its `reason`, a 503 (counted) or an answer later than any timeout."""

    queries: list[dict] = []

    def do_GET(self):  # noqa: N802
        query = parse_qs(urlparse(self.path).query)
        _OpenMeteo.queries.append(query)
        latitude = query["latitude"][0]
        if latitude == "91.0":
            self._send(400, {"error": True, "reason": "Latitude must be in range of -90 to 90°."})
        elif latitude == "1.0":
            self._send(503, {"error": True, "reason": "Service Unavailable"})
        elif latitude == "2.0":
            time.sleep(2)
        else:
            day = pd.Timestamp(query["start_date"][0])
            hours = pd.date_range(day, periods=24, freq="h")
            self._send(200, {
                "latitude": 36.72, "longitude": -4.42, "generationtime_ms": 0.05, "utc_offset_seconds": 7200,
                "timezone": query["timezone"][0], "timezone_abbreviation": "GMT+2", "elevation": 12.0,
                "hourly_units": {"time": "iso8601", "temperature_2m": "°C"},
                "hourly": {"time": [h.strftime("%Y-%m-%dT%H:%M") for h in hours],
                           "temperature_2m": [30.0 + h.hour / 10 for h in hours]},
            })

    def _send(self, status: int, body: dict) -> None:
        encoded = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def open_meteo():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _OpenMeteo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/forecast"
    server.shutdown()
    server.server_close()


FAST_RETRY = Retry(total=2, backoff_factor=0, status_forcelist=(429, 500, 502, 503, 504),
                   allowed_methods=("GET",), raise_on_status=False)


def test_open_meteo_forecast_request_and_retries(open_meteo):
    _OpenMeteo.queries.clear()
    weather = data.fetch_open_meteo(36.72, -4.42, TODAY.date(), TODAY.date(), forecast=True, url=open_meteo)
    [query] = _OpenMeteo.queries
    assert query == {"latitude": ["36.72"], "longitude": ["-4.42"], "start_date": ["2024-04-20"],
                     "end_date": ["2024-04-20"], "hourly": ["temperature_2m"], "timezone": ["Europe/Madrid"]}
    assert len(weather) == 24 and weather["temperature_c"].iloc[13] == pytest.approx(31.3)
    # a server error is retried, then reported with the API's reason
    _OpenMeteo.queries.clear()
    with pytest.raises(RuntimeError, match="HTTP 503: Service Unavailable"):
        data.fetch_open_meteo(1.0, 0.0, TODAY.date(), TODAY.date(), url=open_meteo, retry=FAST_RETRY)
    assert len(_OpenMeteo.queries) == 3
    # a rejected request is not
    _OpenMeteo.queries.clear()
    with pytest.raises(RuntimeError, match="HTTP 400: Latitude must be in range"):
        data.fetch_open_meteo(91.0, 0.0, TODAY.date(), TODAY.date(), url=open_meteo, retry=FAST_RETRY)
    assert len(_OpenMeteo.queries) == 1
    # no answer: each attempt gives up after the timeout
    _OpenMeteo.queries.clear()
    with pytest.raises(requests.ConnectionError, match="Read timed out"):
        data.fetch_open_meteo(2.0, 0.0, TODAY.date(), TODAY.date(), url=open_meteo, timeout=0.3,
                              retry=Retry(total=1, backoff_factor=0, allowed_methods=("GET",)))
    assert len(_OpenMeteo.queries) == 2


@pytest.mark.integration
def test_forecast_weather_from_open_meteo_else_the_table_else_a_loud_failure(open_meteo, database, capsys):
    day = TODAY + pd.Timedelta(days=1)
    with psycopg.connect(database) as conn:
        store.ensure_tables(conn)
        store.write_weather(conn, synthetic.generate(n_users=1, days=1, start=str(day.date()), seed=0).weather)
        table = store.read_weather(conn, day, day + pd.Timedelta(days=1))
        fetched = predict.day_weather(conn, day, (36.72, -4.42), "Europe/Madrid", open_meteo_url=open_meteo)
        assert fetched["temperature_c"].min() == 30.0  # Open-Meteo's, not the table's
        fallback = predict.day_weather(conn, day, (91.0, 0.0), "Europe/Madrid", open_meteo_url=open_meteo)
        pd.testing.assert_frame_equal(fallback, table)
        assert "Open-Meteo failed (RuntimeError" in capsys.readouterr().err
        with pytest.raises(RuntimeError, match=r"no complete hourly temperature for 2031-01-01: Open-Meteo failed "
                                               r"\(RuntimeError: .*HTTP 400.*; fill table energy_weather"):
            predict.day_weather(conn, pd.Timestamp("2031-01-01"), (91.0, 0.0), "Europe/Madrid",
                                open_meteo_url=open_meteo)
