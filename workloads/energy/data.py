"""Loaders for real hourly consumption and weather, and a keyless Open-Meteo client.

Consumption CSV: one row per user and hour, columns `user_id`, `timestamp`, `kwh` (energy used
during the hour starting at `timestamp`). Weather CSV: `timestamp`, `temperature_c`, any other
columns kept. Timestamps are local wall-clock hours, as the model's calendar features expect;
timestamps with a UTC offset are converted to `tz` first, and the two readings of the repeated
hour when summer time ends are added together. A missing hour needs no row (or a NaN `kwh`).

Errors name the offending column and value, so a bad export is fixed at its source.
"""

from __future__ import annotations

import os
from datetime import date

import pandas as pd
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

CONSUMPTION_COLUMNS = ("user_id", "timestamp", "kwh")
WEATHER_COLUMNS = ("timestamp", "temperature_c")
LOCAL_TZ = "Europe/Madrid"
ARCHIVE_URL = "https://archive-api.open-meteo.com/v1/archive"
FORECAST_URL = "https://api.open-meteo.com/v1/forecast"
# a rate limit or a server hiccup is worth waiting out (0 s, 4 s, 8 s, honouring Retry-After);
# a rejected request (400: the reason says what) is not
OPEN_METEO_RETRY = Retry(total=3, backoff_factor=2, status_forcelist=(429, 500, 502, 503, 504),
                         allowed_methods=("GET",), raise_on_status=False)


def _require(frame: pd.DataFrame, columns: tuple[str, ...], source: object) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {list(frame.columns)}")


def _timestamps(column: pd.Series, source: object, tz: str) -> pd.Series:
    """Parse to naive local wall-clock hours; reject empty, unparseable or off-the-hour values."""
    aware = _has_offset(column)
    parsed = pd.to_datetime(column, format="ISO8601", utc=aware, errors="coerce")
    bad = column[parsed.isna()]
    if not bad.empty:
        raise ValueError(f"{source}: column 'timestamp': not an ISO 8601 date-time: {str(bad.iloc[0])!r} (row {bad.index[0]})")
    if aware:
        parsed = parsed.dt.tz_convert(tz).dt.tz_localize(None)
    off_hour = parsed[parsed != parsed.dt.floor("h")]
    if not off_hour.empty:
        raise ValueError(f"{source}: column 'timestamp': readings must be hourly, got {off_hour.iloc[0]}")
    return parsed


def _has_offset(column: pd.Series) -> bool:
    """Whether any timestamp carries a UTC offset (`+02:00`, `Z`)."""
    return bool(column.astype(str).str.contains(r"(?:[+-]\d\d:?\d\d|Z)$").any())


def _numbers(frame: pd.DataFrame, column: str, source: object) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = frame[column][values.isna() & frame[column].notna()]
    if not bad.empty:
        raise ValueError(f"{source}: column {column!r}: not a number: {bad.iloc[0]!r} (row {bad.index[0]})")
    return values.astype(float)


def _label(source: object) -> str:
    return str(source) if isinstance(source, str | os.PathLike) else "CSV"


def load_consumption(source: object, tz: str = LOCAL_TZ) -> pd.DataFrame:
    """Read a consumption CSV (path, URL or file object) into user_id, timestamp, kwh."""
    raw = pd.read_csv(source, dtype={"user_id": str})
    source = _label(source)
    _require(raw, CONSUMPTION_COLUMNS, source)
    if raw["user_id"].isna().any():
        raise ValueError(f"{source}: column 'user_id': empty at row {raw.index[raw['user_id'].isna()][0]}")
    kwh = _numbers(raw, "kwh", source)
    negative = kwh[kwh < 0]
    if not negative.empty:
        raise ValueError(f"{source}: column 'kwh': negative reading {negative.iloc[0]} (row {negative.index[0]})")
    timestamps = _timestamps(raw["timestamp"], source, tz)
    frame = pd.DataFrame({"user_id": raw["user_id"], "timestamp": timestamps, "kwh": kwh})
    if _has_offset(raw["timestamp"]):
        frame = frame.groupby(["user_id", "timestamp"], as_index=False)["kwh"].sum(min_count=1)
    duplicated = frame[frame.duplicated(["user_id", "timestamp"])]
    if not duplicated.empty:
        first = duplicated.iloc[0]
        raise ValueError(f"{source}: column 'timestamp': two readings for user {first.user_id} at {first.timestamp}")
    return frame.sort_values(["user_id", "timestamp"], ignore_index=True)


def load_weather(source: object, tz: str = LOCAL_TZ) -> pd.DataFrame:
    """Read an hourly weather CSV with at least timestamp and temperature_c."""
    raw = pd.read_csv(source)
    source = _label(source)
    _require(raw, WEATHER_COLUMNS, source)
    out = raw.assign(
        timestamp=_timestamps(raw["timestamp"], source, tz), temperature_c=_numbers(raw, "temperature_c", source)
    )
    repeated = out["timestamp"][out["timestamp"].duplicated()]
    if not repeated.empty:
        raise ValueError(f"{source}: column 'timestamp': repeated hour {repeated.iloc[0]}")
    return out.sort_values("timestamp", ignore_index=True)


def parse_open_meteo(payload: dict) -> pd.DataFrame:
    """Open-Meteo's `hourly` block (local times when `timezone` was given) → timestamp, temperature_c."""
    hourly = payload.get("hourly")
    if not hourly or "time" not in hourly or "temperature_2m" not in hourly:
        raise ValueError(f"Open-Meteo response without hourly time/temperature_2m: {sorted(payload)}")
    return pd.DataFrame(
        {"timestamp": pd.to_datetime(hourly["time"]), "temperature_c": pd.to_numeric(hourly["temperature_2m"])}
    )


def fetch_open_meteo(latitude: float, longitude: float, start: date, end: date, *, forecast: bool = False,
                     tz: str = LOCAL_TZ, timeout: float = 30.0, url: str | None = None,
                     retry: Retry = OPEN_METEO_RETRY) -> pd.DataFrame:  # fmt: skip
    """Hourly 2 m temperature from Open-Meteo (no API key): the archive for past days (ERA5, ~5 days
    behind), the forecast API for recent and coming days (up to 16 ahead) — what a daily batch job
    passes to the model for the day it predicts. `url` overrides the endpoint (a mirror, a test server).
    `timeout` bounds each connect and each read; timeouts and connection errors are retried like 5xx,
    then raised (requests.RequestException), as is an HTTP error (RuntimeError with the API's reason)."""
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        response = session.get(
            url or (FORECAST_URL if forecast else ARCHIVE_URL),
            params={
                "latitude": latitude,
                "longitude": longitude,
                "start_date": start.isoformat(),
                "end_date": end.isoformat(),
                "hourly": "temperature_2m",
                "timezone": tz,
            },
            timeout=timeout,
        )
    if not response.ok:  # Open-Meteo explains a rejected request in {"error": true, "reason": ...}
        reason = response.json().get("reason") if "json" in response.headers.get("content-type", "") else None
        raise RuntimeError(f"Open-Meteo {response.url}: HTTP {response.status_code}: {reason or response.text[:200]}")
    return parse_open_meteo(response.json())

