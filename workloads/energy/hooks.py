"""The energy workload's pipeline hooks (`workloads/energy/ci/<step>`): python -m workloads.energy.hooks <step>.

A batch model: no endpoint. The `energy-prod` CronJob writes `@champion`'s forecasts to
`energy_prod`, the shadow `energy-pre` writes `@challenger`'s to `energy_pre`, both tagged with the
version that made them. Every step reads the workload's PostgreSQL from $DATABASE_URL.

- register: train on `energy_readings` / `energy_weather` and register the version as `challenger`
  ($ENERGY_TREES trees, default 100);
- deploy: point `challenger` at it: from its next run, `energy-pre` forecasts with it;
- smoke: forecast the day after the last reading with `@$MODEL_ROLE` into that alias's table
  (what its CronJob does) and check every forecast user got 24 finite, non-negative hours;
- promote: on the last $PROMOTE_DAYS days (default 7) on which `energy_pre` holds the challenger
  version's forecasts and `energy_prod` the champion version's, both with actual readings, the
  challenger's mean daily MAPE must be lower by $PROMOTE_MARGIN (a fraction, default 0); fewer
  days of shadow forecasts than that → not promoted yet (re-run the job once the CronJob has
  added them);
- rollback: `champion` back to the previous champion.
"""

from __future__ import annotations

import math
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import psycopg
from mlflow import MlflowClient
from psycopg import sql

from workloads.common import hooks, promotion
from workloads.common.tracking import CHALLENGER, CHAMPION
from workloads.energy import model, predict, store, train

TABLES = {CHAMPION: "energy_prod", CHALLENGER: "energy_pre"}
METRIC = "mean daily MAPE"


def database_url() -> str:
    url = hooks.env("DATABASE_URL")
    if not url:
        raise hooks.HookError("$DATABASE_URL is not set: the energy hooks read and write the workload's "
                              "PostgreSQL (postgresql://user:password@host:5432/db)")
    return url


def without_password(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    return urlunsplit((parts.scheme, netloc + (f":{parts.port}" if parts.port else ""), parts.path, "", ""))


def register() -> None:
    url = database_url()
    consumption, weather = train._from_database(url)
    if consumption.empty:
        raise hooks.HookError(f"{store.READINGS} is empty: ingest readings first (python -m workloads.energy.ingest)")
    where = without_password(url)
    outcome = train.run(consumption, weather, {"data": f"{where}#{store.READINGS}", "weather": f"{where}#{store.WEATHER}"},
                        register=True, n_estimators=int(hooks.number("ENERGY_TREES", 100)), alias=CHALLENGER)
    print(f"{train.MODEL_NAME} v{outcome.version} @{CHALLENGER}: held-out MAPE {outcome.evaluation.model_mape:.2f}%")
    hooks.write_output("model-version", str(outcome.version))


def deploy() -> None:
    hooks.deploy_challenger(MlflowClient(), train.MODEL_NAME)


def last_reading_day(conn: psycopg.Connection) -> pd.Timestamp:
    row = conn.execute(sql.SQL("SELECT max(timestamp) FROM {}").format(sql.Identifier(store.READINGS))).fetchone()
    if row is None or row[0] is None:
        raise hooks.HookError(f"{store.READINGS} is empty: nothing to forecast from")
    return pd.Timestamp(row[0]).normalize()


def smoke() -> None:
    role, url = hooks.role(), database_url()
    with store.connect(url) as conn:
        day = pd.Timestamp(hooks.env("SMOKE_DAY")) if hooks.env("SMOKE_DAY") else last_reading_day(conn) + pd.Timedelta(days=1)
    result = predict.run(url, role, TABLES[role], day)
    with store.connect(url) as conn:
        written = store.read_predictions(conn, TABLES[role], day, day + pd.Timedelta(days=1))
    mine = written[written["version"] == result.version]
    per_user = mine.groupby("user_id")["kwh"].agg(["count", "min"])
    if mine.empty or (per_user["count"] != 24).any() or not mine["kwh"].map(math.isfinite).all() or (per_user["min"] < 0).any():
        raise hooks.HookError(f"{train.MODEL_NAME}@{role} v{result.version}: forecasts for {day.date()} in "
                              f"{TABLES[role]} are incomplete or invalid: {per_user.to_dict('index')}")
    print(f"ok   {train.MODEL_NAME}@{role} v{result.version}: 24 hours for {len(per_user)} users on {day.date()} "
          f"in {TABLES[role]}")


def daily_mape(conn: psycopg.Connection, table: str, version: str) -> dict[pd.Timestamp, float]:
    """MAPE (fraction) of `version`'s forecasts in `table` per day that has actual readings."""
    everything = (pd.Timestamp("1900-01-01"), pd.Timestamp("2200-01-01"))
    predicted = store.read_predictions(conn, table, *everything)
    predicted = predicted[predicted["version"] == int(version)]
    if predicted.empty:
        return {}
    actual = store.read_readings(conn, predicted["timestamp"].min(), predicted["timestamp"].max() + pd.Timedelta(hours=1))
    joined = predicted.merge(actual, on=["user_id", "timestamp"], suffixes=("_predicted", "_actual"))
    counted = joined[joined["kwh_actual"].notna() & (joined["kwh_actual"] >= model.MIN_ACTUAL_KWH)]
    return {day: model.mape(group["kwh_actual"], group["kwh_predicted"]) / 100
            for day, group in counted.groupby(counted["timestamp"].dt.normalize())}


def shadow_gate(conn: psycopg.Connection, client: MlflowClient, days: int, margin: float) -> promotion.Decision:
    """The challenger's shadow forecasts against the champion's, over the last `days` common days."""
    challenger = promotion.version_of(client, train.MODEL_NAME, CHALLENGER)
    if challenger is None:
        raise hooks.HookError(f"{train.MODEL_NAME}@{CHALLENGER} does not exist: run ci/register first")
    champion = promotion.version_of(client, train.MODEL_NAME, CHAMPION)
    if champion is None:
        return promotion.Decision(train.MODEL_NAME, METRIC, None, challenger.version, None, None, margin, True,
                                  f"no champion yet: v{challenger.version} becomes the first")
    pre = daily_mape(conn, TABLES[CHALLENGER], challenger.version)
    prod = daily_mape(conn, TABLES[CHAMPION], champion.version)
    common = sorted(set(pre) & set(prod))[-days:]
    if len(common) < days:
        return promotion.Decision(train.MODEL_NAME, METRIC, champion.version, challenger.version, None, None, margin,
                                  False, f"{len(common)} of {days} days scored with both v{challenger.version} in "
                                         f"{TABLES[CHALLENGER]} and v{champion.version} in {TABLES[CHAMPION]}: "
                                         "wait for more shadow days ($PROMOTE_DAYS)")
    decision = promotion.compare(train.MODEL_NAME, f"{METRIC} over {days} days", champion.version, challenger.version,
                                 sum(prod[d] for d in common) / days, sum(pre[d] for d in common) / days, False, margin)
    for day in common:
        print(f"  {day.date()}: champion v{champion.version} {prod[day]:.2%}  challenger v{challenger.version} {pre[day]:.2%}")
    return decision


def promote() -> None:
    client = MlflowClient()
    with store.connect(database_url()) as conn:
        store.ensure_tables(conn, TABLES.values())  # before the first CronJob run they may not exist
        decision = shadow_gate(conn, client, int(hooks.number("PROMOTE_DAYS", 7)), hooks.number("PROMOTE_MARGIN", 0.0))
    hooks.promote_or_fail(client, decision)


if __name__ == "__main__":
    raise SystemExit(hooks.main(train.MODEL_NAME, register, deploy, smoke, promote))
