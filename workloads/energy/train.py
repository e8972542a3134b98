"""Train, evaluate and log the next-day consumption forecaster.

    python -m workloads.energy.train [--users N] [--days D] [--seed S]
        [--consumption CSV --weather CSV | --from-database] [--tracking-uri URI] [--register]

Data: CSV exports, the workload's PostgreSQL tables (`--from-database`, $DATABASE_URL: what the
training Job uses), or else the synthetic generator. The last 7 days are held out and
forecast one day ahead each; the model is scored by MAPE against the seasonal-naive forecast
(same hour a week earlier) on the same hours. The logged model is the one that was scored (fitted
on everything before the held-out week). With `--register` it becomes a new version of
`energy-forecast`: alias `champion` if there is none yet, else `challenger` (the shadow `energy-pre`
CronJob runs it next to the champion until someone promotes it by moving `champion`).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow.models import infer_signature

from workloads.common import lineage
from workloads.common.tracking import CHALLENGER, CHAMPION, connect, first_champion_then_challenger, promote
from workloads.energy import data, model, store, synthetic
from workloads.energy.pyfunc import REQUIREMENTS, ForecastModel, code_package

EXPERIMENT = "energy-forecast"
MODEL_NAME = "energy-forecast"
TEST_DAYS = 7


@dataclass(frozen=True)
class Outcome:
    run_id: str
    model_uri: str
    version: int | None
    alias: str | None
    evaluation: model.Evaluation
    forecaster: model.Forecaster


def run(consumption: pd.DataFrame, weather: pd.DataFrame, params: dict[str, object],
        tracking_uri: str | None = None, register: bool = False, n_estimators: int = 100,
        seed: int = 0, alias: str | None = None) -> Outcome:  # fmt: skip
    """Evaluate, log and (with `register`) register; `alias` defaults to
    `first_champion_then_challenger`: a retrained model shadows the champion until promoted."""
    forecaster, evaluation = model.evaluate(
        consumption, weather, test_days=TEST_DAYS, n_estimators=n_estimators, seed=seed
    )
    clusters = evaluation.features.groupby("user_id")["cluster"].first().astype(int)
    connect(tracking_uri, EXPERIMENT)
    with mlflow.start_run(tags=lineage.provenance()) as active:
        source = str(params.get("data", "unknown"))
        lineage.log_training_data("consumption", consumption, source)
        lineage.log_training_data("weather", weather, str(params.get("weather", source)))
        mlflow.log_params(
            {
                **params,
                "seed": seed,
                "test_days": TEST_DAYS,
                "n_clusters": forecaster.kmeans.n_clusters,
                "n_estimators": n_estimators,
                "mape_min_actual_kwh": model.MIN_ACTUAL_KWH,
            }
        )
        mlflow.log_metrics(
            {
                "mape": evaluation.model_mape,
                "naive_mape": evaluation.naive_mape,
                "mape_improvement": evaluation.improvement,
                "scored_hours": evaluation.hours,
            }
        )
        mlflow.log_dict(clusters.to_dict(), "clusters.json")
        head = evaluation.features[model.FEATURES].head(3)
        with code_package() as package:
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=ForecastModel(forecaster),
                signature=infer_signature(head, forecaster.predict(head)),
                input_example=head,
                code_paths=[package],
                pip_requirements=REQUIREMENTS,
                registered_model_name=MODEL_NAME if register else None,
            )
    version = info.registered_model_version
    if version is not None:
        alias = alias or first_champion_then_challenger(MODEL_NAME)
        promote(MODEL_NAME, version, alias)
        lineage.tag_version(MODEL_NAME, version, active.info.run_id)
    return Outcome(active.info.run_id, info.model_uri, version, alias if version is not None else None,
                   evaluation, forecaster)


def _from_database(database_url: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    everything = (pd.Timestamp("1900-01-01"), pd.Timestamp("2200-01-01"))
    with store.connect(database_url) as conn:
        return store.read_readings(conn, *everything), store.read_weather(conn, *everything)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20, help="synthetic users (default 20)")
    parser.add_argument("--days", type=int, default=120, help="synthetic days (default 120)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--consumption", help="hourly consumption CSV (user_id, timestamp, kwh)")
    parser.add_argument("--weather", help="hourly weather CSV (timestamp, temperature_c)")
    parser.add_argument("--from-database", action="store_true", help="read energy_readings/energy_weather")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="default: $DATABASE_URL")
    parser.add_argument("--trees", type=int, default=100, help="random forest size")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--register", action="store_true", help=f"register a new version of {MODEL_NAME}")
    parser.add_argument("--alias", choices=(CHAMPION, CHALLENGER),
                        help=f"alias of the new version (default: {CHAMPION} for the first, then {CHALLENGER})")
    args = parser.parse_args(argv)
    if bool(args.consumption) != bool(args.weather):
        parser.error("--consumption and --weather go together")
    if args.from_database:
        if not args.database_url:
            parser.error("--from-database needs --database-url or $DATABASE_URL")
        consumption, weather = _from_database(args.database_url)
        params = {"data": "database"}
    elif args.consumption:
        consumption, weather = data.load_consumption(args.consumption), data.load_weather(args.weather)
        params: dict[str, object] = {"data": args.consumption, "weather": args.weather}
    else:
        generated = synthetic.generate(n_users=args.users, days=args.days, seed=args.seed)
        consumption, weather = generated.consumption, generated.weather
        params = {"data": "synthetic", "users": args.users, "days": args.days}
    outcome = run(consumption, weather, params, args.tracking_uri, args.register, args.trees, args.seed, args.alias)
    e = outcome.evaluation
    print(
        f"run {outcome.run_id}: MAPE {e.model_mape:.2f}% vs seasonal-naive {e.naive_mape:.2f}% "
        f"({e.improvement:.1%} lower) on {e.hours} held-out hours"
    )
    if outcome.version is not None:
        print(f"registered {MODEL_NAME} version {outcome.version} as @{outcome.alias}")


if __name__ == "__main__":
    main()
