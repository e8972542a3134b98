"""Energy data: the synthetic generator has the structure it documents; loaders reject bad exports
with a message naming the column and value; the Open-Meteo client speaks the API's format."""

from __future__ import annotations

import io
import json
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest

from workloads.energy import data, synthetic
from workloads.energy.calendar import easter, spanish_holidays

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def generated() -> synthetic.SyntheticData:
    return synthetic.generate(n_users=8, days=120, start="2024-01-01", seed=3)


def _grid(consumption: pd.DataFrame) -> pd.DataFrame:
    """user × (day, hour) table of kWh."""
    frame = consumption.assign(day=consumption["timestamp"].dt.normalize(), hour=consumption["timestamp"].dt.hour)
    return frame.pivot_table(index=["user_id", "day"], columns="hour", values="kwh", dropna=False)


def test_generator_shapes_and_determinism(generated):
    consumption, weather = generated.consumption, generated.weather
    assert list(consumption.columns) == ["user_id", "timestamp", "kwh"]
    assert len(consumption) == 8 * 120 * 24
    assert len(weather) == 120 * 24 and weather["timestamp"].is_unique
    assert (consumption["kwh"].dropna() >= 0).all()
    again = synthetic.generate(n_users=8, days=120, start="2024-01-01", seed=3)
    pd.testing.assert_frame_equal(again.consumption, consumption)
    other = synthetic.generate(n_users=8, days=120, start="2024-01-01", seed=4)
    assert not np.allclose(other.consumption["kwh"].fillna(0), consumption["kwh"].fillna(0))


def test_generator_covers_every_archetype_and_they_differ(generated):
    names = [a.name for a in synthetic.ARCHETYPES]
    assert sorted(generated.users["archetype"].unique()) == sorted(names)
    frame = generated.consumption.merge(generated.users, on="user_id")
    frame["hour"] = frame["timestamp"].dt.hour
    profiles = frame.groupby(["archetype", "hour"])["kwh"].mean().unstack()
    peak_hour = profiles.idxmax(axis=1)
    # working households peak in the evening and are out at lunch; retired people are home at lunch;
    # night-shift workers peak after midnight; the shop during opening hours
    assert 20 <= peak_hour["working_household"] <= 23
    assert peak_hour["night_shift"] in (23, 0, 1, 2)
    assert 9 <= peak_hour["small_business"] <= 20
    lunch_to_evening = profiles[[12, 13, 14]].mean(axis=1) / profiles[[21, 22, 23]].mean(axis=1)
    assert lunch_to_evening["retired"] > 2 * lunch_to_evening["working_household"]
    shares = profiles.div(profiles.sum(axis=1), axis=0)
    for a in names:
        for b in names:
            if a < b:
                assert np.abs(shares.loc[a] - shares.loc[b]).sum() > 0.15, (a, b)
    assert profiles.sum(axis=1)["small_business"] > 1.5 * profiles.sum(axis=1)["retired"]


def test_missing_readings_are_present_but_rare(generated):
    missing = generated.consumption["kwh"].isna()
    assert 0.002 < missing.mean() < 0.08
    # outages: some users lose several consecutive hours
    runs = generated.consumption.assign(m=missing).groupby("user_id")["m"].apply(
        lambda s: (s.astype(int).groupby((~s).cumsum()).sum()).max()
    )
    assert runs.max() >= 3


def test_holidays_and_weekends_lower_a_business_and_heat_raises_households(generated):
    frame = generated.consumption.merge(generated.users, on="user_id")
    frame["day"] = frame["timestamp"].dt.normalize()
    daily = frame.groupby(["archetype", "day"])["kwh"].sum(min_count=20).dropna().reset_index()
    holidays = spanish_holidays([2024])
    weekday_holiday = daily["day"].dt.date.isin(holidays) & (daily["day"].dt.day_of_week < 5)
    workday = ~daily["day"].dt.date.isin(holidays) & (daily["day"].dt.day_of_week < 5)
    shop = daily["archetype"] == "small_business"
    assert weekday_holiday[shop].sum() == 2  # Jan 1 and Good Friday (Mar 29); Jan 6 is a Saturday
    assert daily.loc[shop & weekday_holiday, "kwh"].mean() < 0.5 * daily.loc[shop & workday, "kwh"].mean()
    # temperature dependence: cold January days use more than mild April days
    temp = generated.weather.assign(day=generated.weather["timestamp"].dt.normalize()).groupby("day")["temperature_c"].mean()
    retired = daily[daily["archetype"] == "retired"].set_index("day")["kwh"]
    assert temp[temp.index.month == 1].mean() < temp[temp.index.month == 4].mean()
    assert retired[retired.index.month == 1].mean() > 1.1 * retired[retired.index.month == 4].mean()


def test_easter_and_holidays():
    assert easter(2024) == date(2024, 3, 31) and easter(2025) == date(2025, 4, 20)
    assert date(2025, 4, 18) in spanish_holidays([2025])  # Good Friday
    assert date(2025, 12, 25) in spanish_holidays([2025]) and date(2025, 12, 24) not in spanish_holidays([2025])


def test_load_consumption_parses_sorts_and_keeps_missing():
    csv = io.StringIO(
        "user_id,timestamp,kwh\n"
        "b7,2024-05-01 01:00,0.30\n"
        "a1,2024-05-01T00:00:00,0.25\n"
        "a1,2024-05-01 01:00,\n"
        "007,2024-05-01 00:00,1\n"
    )
    frame = data.load_consumption(csv)
    assert list(frame["user_id"]) == ["007", "a1", "a1", "b7"]  # ids stay strings (leading zeros kept)
    assert frame["timestamp"].iloc[1] == pd.Timestamp("2024-05-01 00:00")
    assert np.isnan(frame["kwh"].iloc[2])


def test_load_consumption_with_utc_offsets_converts_to_local_and_merges_the_repeated_hour():
    # 2024-10-27: Madrid clocks go back at 03:00 CEST, so 02:00 local happens twice
    csv = io.StringIO(
        "user_id,timestamp,kwh\n"
        "u,2024-10-27T01:00:00+02:00,0.2\n"
        "u,2024-10-27T02:00:00+02:00,0.3\n"
        "u,2024-10-27T02:00:00+01:00,0.4\n"
        "u,2024-10-27T03:00:00+01:00,0.5\n"
    )
    frame = data.load_consumption(csv)
    assert list(frame["timestamp"].dt.hour) == [1, 2, 3]
    assert frame["kwh"].tolist() == pytest.approx([0.2, 0.7, 0.5])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user,timestamp,kwh\nu,2024-01-01 00:00,1\n", "missing column(s) ['user_id']"),
        ("user_id,timestamp,kwh\nu,yesterday,1\n", "column 'timestamp': not an ISO 8601 date-time: 'yesterday'"),
        ("user_id,timestamp,kwh\nu,2024-01-01 00:30,1\n", "readings must be hourly"),
        ("user_id,timestamp,kwh\nu,2024-01-01 00:00,1.2.3\n", "column 'kwh': not a number: '1.2.3' (row 0)"),
        ("user_id,timestamp,kwh\nu,2024-01-01 00:00,-0.1\n", "column 'kwh': negative reading -0.1"),
        ("user_id,timestamp,kwh\nu,2024-01-01 00:00,1\nu,2024-01-01 00:00,2\n", "two readings for user u"),
        ("user_id,timestamp,kwh\n,2024-01-01 00:00,1\n", "column 'user_id': empty at row 0"),
    ],
)
def test_load_consumption_names_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "export.csv"
    path.write_text(content)
    with pytest.raises(ValueError) as error:
        data.load_consumption(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_load_weather_parses_and_rejects_repeats():
    frame = data.load_weather(io.StringIO("timestamp,temperature_c,humidity\n2024-01-01 01:00,9.5,80\n2024-01-01 00:00,10,81\n"))
    assert frame["temperature_c"].tolist() == [10.0, 9.5] and "humidity" in frame
    with pytest.raises(ValueError, match="repeated hour"):
        data.load_weather(io.StringIO("timestamp,temperature_c\n2024-01-01 00:00,1\n2024-01-01 00:00,2\n"))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['temperature_c'\]"):
        data.load_weather(io.StringIO("timestamp,temp\n2024-01-01 00:00,1\n"))


class _FakeOpenMeteo(BaseHTTPRequestHandler):
    """Answers like api.open-meteo.com: the fixture (hand-written in the API's documented response
    format; the test machines have no internet) or, for an invalid latitude, a 400 with a reason."""

    queries: list[dict] = []

    def do_GET(self):  # noqa: N802
        query = parse_qs(urlparse(self.path).query)
        _FakeOpenMeteo.queries.append(query)
        if query.get("latitude") != ["nan"]:
            status, body = 200, (FIXTURES / "open_meteo_archive.json").read_bytes()
        else:
            status, body = 400, json.dumps({"error": True, "reason": "Latitude must be in range of -90 to 90°."}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def open_meteo():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenMeteo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/archive"
    server.shutdown()


def test_open_meteo_client_sends_a_keyless_local_time_query_and_parses_hours(open_meteo):
    _FakeOpenMeteo.queries.clear()
    weather = data.fetch_open_meteo(36.72, -4.42, date(2024, 3, 30), date(2024, 3, 31), url=open_meteo)
    query = _FakeOpenMeteo.queries[-1]
    assert query["start_date"] == ["2024-03-30"] and query["end_date"] == ["2024-03-31"]
    assert query["timezone"] == ["Europe/Madrid"] and query["hourly"] == ["temperature_2m"]
    assert not any("key" in name for name in query)
    assert len(weather) == 48 and weather["timestamp"].iloc[0] == pd.Timestamp("2024-03-30 00:00")
    assert weather["temperature_c"].between(-10, 40).all()


def test_open_meteo_client_reports_the_api_reason(open_meteo):
    with pytest.raises(RuntimeError, match="HTTP 400: Latitude must be in range"):
        data.fetch_open_meteo(float("nan"), 0.0, date(2024, 1, 1), date(2024, 1, 1), url=open_meteo)


def test_parse_open_meteo_rejects_a_response_without_hours():
    with pytest.raises(ValueError, match="without hourly"):
        data.parse_open_meteo({"daily": {}})
