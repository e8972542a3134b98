"""Daily batch forecast: tomorrow's 24 hourly kWh per user from a registry alias into its own table.

    python -m workloads.energy.predict --alias champion --table energy_prod [--day YYYY-MM-DD]
        [--latitude LAT --longitude LON] [--database-url URL] [--tracking-uri URI]

The `energy-prod` CronJob runs it with `--alias champion --table energy_prod`, the shadow
`energy-pre` with `--alias challenger --table energy_pre`: same code and inputs, separate outputs,
so the candidate is judged on live data before it is promoted. History comes from the last
`HISTORY_DAYS` days of `energy_readings`; the temperature of the forecast day from Open-Meteo's
forecast when coordinates are given, else from `energy_weather` (on a demo stack the energy-ingest
CronJob fills it with the synthetic site's weather). When Open-Meteo fails (after the client's
retries) the job says so on stderr and falls back to `energy_weather`; when that has no complete
day either it fails, naming both, so the CronJob's Job fails visibly instead of forecasting from a
guess. Users without a reading in the last week get no forecast (logged), rather than a guess.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import mlflow
import pandas as pd
import requests
from mlflow import MlflowClient

from workloads.energy import data, store
from workloads.energy.train import MODEL_NAME

HISTORY_DAYS = 28  # twice the deepest lag: clusters see a few weeks of profiles


@dataclass(frozen=True)
class Result:
    day: pd.Timestamp
    version: int
    written: int
    skipped_users: list[str]


def tomorrow(tz: str) -> pd.Timestamp:
    return pd.Timestamp.now(tz=ZoneInfo(tz)).tz_localize(None).normalize() + pd.Timedelta(days=1)


def _complete(weather: pd.DataFrame) -> bool:
    return weather["temperature_c"].notna().sum() >= 24


def day_weather(conn, day: pd.Timestamp, coordinates: tuple[float, float] | None, tz: str,
                open_meteo_url: str | None = None) -> pd.DataFrame:  # fmt: skip
    """The forecast day's hourly temperature: Open-Meteo's forecast for `coordinates`, else (or when
    that fails) the `energy_weather` table; fails naming both sources when neither has the day."""
    failure = ""
    if coordinates is not None:
        try:
            weather = data.fetch_open_meteo(*coordinates, day.date(), day.date(), forecast=True, tz=tz,
                                            url=open_meteo_url)
            if _complete(weather):
                return weather
            failure = f"Open-Meteo has {weather['temperature_c'].notna().sum()} of 24 hours"
        except (requests.RequestException, RuntimeError, ValueError) as error:
            failure = f"Open-Meteo failed ({type(error).__name__}: {error})"
        print(f"{failure} for {day.date()}: using table {store.WEATHER}", file=sys.stderr)
    weather = store.read_weather(conn, day, day + pd.Timedelta(days=1))
    if not _complete(weather):
        remedy = f"{failure}; fill table {store.WEATHER}" if failure else \
            f"fill table {store.WEATHER} or pass --latitude/--longitude for Open-Meteo's forecast"
        raise RuntimeError(f"no complete hourly temperature for {day.date()}: {remedy}")
    return weather


def run(database_url: str, alias: str, table: str, day: pd.Timestamp,
        coordinates: tuple[float, float] | None = None, tz: str = data.LOCAL_TZ,
        model_name: str = MODEL_NAME) -> Result:  # fmt: skip
    version = int(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    forecaster = loaded.unwrap_python_model().forecaster
    with store.connect(database_url) as conn:
        store.ensure_tables(conn, [table])
        history = store.read_readings(conn, day - pd.Timedelta(days=HISTORY_DAYS), day)
        if history.empty:
            raise RuntimeError(f"no readings in {store.READINGS} in the {HISTORY_DAYS} days before {day.date()}")
        weather = day_weather(conn, day, coordinates, tz)
        forecast = forecaster.forecast(history, weather, day)
        missing = forecast["kwh"].isna()
        skipped = sorted(forecast.loc[missing, "user_id"].unique())
        written = store.write_predictions(conn, table, forecast[~missing], model_name, version, alias)
    return Result(day, version, written, skipped)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alias", required=True, help="registry alias to load, e.g. champion or challenger")
    parser.add_argument("--table", required=True, help="predictions table, e.g. energy_prod or energy_pre")
    parser.add_argument("--day", help="day to forecast (default: tomorrow in --timezone)")
    parser.add_argument("--timezone", default=os.environ.get("TZ") or data.LOCAL_TZ, help="local time zone of the data")
    parser.add_argument("--latitude", type=float, help="site latitude for Open-Meteo's forecast")
    parser.add_argument("--longitude", type=float, help="site longitude for Open-Meteo's forecast")
    parser.add_argument("--model", default=MODEL_NAME, help=f"registered model (default {MODEL_NAME})")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="default: $DATABASE_URL")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url or $DATABASE_URL is required")
    if (args.latitude is None) != (args.longitude is None):
        parser.error("--latitude and --longitude go together")
    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    day = pd.Timestamp(args.day) if args.day else tomorrow(args.timezone)
    coordinates = (args.latitude, args.longitude) if args.latitude is not None else None
    result = run(args.database_url, args.alias, args.table, day, coordinates, args.timezone, args.model)
    print(f"{args.model}@{args.alias} (version {result.version}): {result.written} hourly forecasts for "
          f"{day.date()} written to {args.table}")
    if result.skipped_users:
        print(f"no forecast (no reading in the last week) for {len(result.skipped_users)} user(s): "
              f"{', '.join(result.skipped_users[:20])}")


if __name__ == "__main__":
    main()
