"""Train, select and log the hazardous-NEO classifier.

    python -m workloads.neo.train [--data PATH_OR_URL] [--tracking-uri URI] [--register [--alias A]]

`--data` defaults to $NEO_DATA, else `../shared/data/neo/nasa.csv` beside the checkout; the
tracking URI to $MLFLOW_TRACKING_URI (MLflow's own default otherwise). With `--register` the model
becomes a new version of `NEOs`: alias `champion` if there is none yet (the first model serves at
once), else `challenger`, which someone promotes by moving `champion` after comparing the two
(`--alias` forces one).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass
from typing import Any

import mlflow
import pandas as pd
import skops.io
from mlflow.models import infer_signature
from sklearn.base import ClassifierMixin

from workloads.common import lineage
from workloads.common.tracking import CHALLENGER, CHAMPION, connect, first_champion_then_challenger, promote
from workloads.neo import data, model

EXPERIMENT = "Hazardous_NEOs"
MODEL_NAME = "NEOs"
# what `mlops drift` compares served traffic with (mlops/drift.py reads it from the champion's run)
REFERENCE_PATH = "reference/reference.json"
REFERENCE_ROWS = 500  # ~200 KB of JSON; enough for a KS test and ten-bin PSI per feature


@dataclass(frozen=True)
class Outcome:
    run_id: str
    model_uri: str
    version: int | None  # registry version when registered
    alias: str | None
    result: model.Result


def flavor_options(fitted: ClassifierMixin, example: pd.DataFrame) -> dict[str, Any]:
    """How the model is written, logged or saved: what a server needs to load and check it."""
    return {
        "signature": infer_signature(example, fitted.predict(example)),
        "input_example": example,
        # stated, not inferred: inference imports whatever the environment holds (torch here)
        # and costs a subprocess per run; the served model needs exactly these
        "pip_requirements": [*mlflow.sklearn.get_default_pip_requirements(include_skops=True),
                             f"mlflow=={mlflow.__version__}", f"pandas=={pd.__version__}"],
        # skops refuses types it cannot vouch for (e.g. HistGradientBoosting's TreePredictor);
        # these are the types of the model trained just before, so they are ours to trust.
        "skops_trusted_types": skops.io.get_untrusted_types(data=skops.io.dumps(fitted)),
    }


def reference(fitted: ClassifierMixin, X: pd.DataFrame, rows: int = REFERENCE_ROWS) -> dict[str, Any]:
    """A seeded sample of the training table's features and the model's class shares on it: the
    distributions served requests and answers are compared with. No identifiers (data.features drops them)."""
    sample = X.sample(min(rows, len(X)), random_state=model.SEED)
    shares = pd.Series(fitted.predict(sample)).value_counts(normalize=True)
    return {"rows": len(sample), "features": {c: sample[c].astype(float).tolist() for c in sample.columns},
            "prediction_shares": {str(k): float(v) for k, v in shares.items()}}


def run(source: str, tracking_uri: str | None = None, register: bool = False, alias: str | None = None) -> Outcome:
    """Select, fit, log; with `register`, a new `NEOs` version under `alias` (default: see module doc)."""
    raw = data.load(source)
    prepared = data.preprocess(raw)
    result = model.train_and_select(prepared)
    connect(tracking_uri, EXPERIMENT)
    with mlflow.start_run(tags=lineage.provenance()) as active:
        lineage.log_training_data("nasa", raw, source)
        mlflow.log_params(
            {
                "data": source,
                "rows": len(prepared.X),
                "features": prepared.X.shape[1],
                "model": result.chosen,
                "seed": model.SEED,
                "test_size": model.TEST_SIZE,
                "cv_folds": model.FOLDS,
                "latency_budget_ms": model.LATENCY_BUDGET_MS,
                "selection_tolerance": model.TOLERANCE,
                **{f"model.{k}": v for k, v in result.model.get_params(deep=False).items()},
            }
        )
        chosen = result.score
        metrics = {
            "f1": result.f1,
            "roc_auc": result.roc_auc,
            "cv_f1_mean": chosen.cv_f1_mean,
            "cv_f1_std": chosen.cv_f1_std,
            "cv_roc_auc_mean": chosen.cv_roc_auc_mean,
            "latency_ms_single_row": chosen.latency_ms,
        }
        if result.grouped_cv_f1_mean is not None:
            metrics["grouped_cv_f1_mean"] = result.grouped_cv_f1_mean
        mlflow.log_metrics(metrics)
        mlflow.log_dict({"features": list(prepared.X.columns), "dropped": prepared.dropped}, "preprocessing.json")
        mlflow.log_dict(reference(result.model, prepared.X), REFERENCE_PATH)
        info = mlflow.sklearn.log_model(result.model, name="model",
                                        registered_model_name=MODEL_NAME if register else None,
                                        **flavor_options(result.model, result.X_test.head(3)))
        # after log_model, which links every metric logged so far to the model (one request each):
        # the candidates' scores describe the selection, not the registered model
        mlflow.log_metrics({f"candidates/{score.name}/{k}": v
                            for score in result.scores for k, v in asdict(score).items() if k != "name"})
    version = info.registered_model_version
    if version is not None:
        alias = alias or first_champion_then_challenger(MODEL_NAME)
        promote(MODEL_NAME, version, alias)
        lineage.tag_version(MODEL_NAME, version, active.info.run_id)
    return Outcome(active.info.run_id, info.model_uri, version, alias if version is not None else None, result)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=data.default_source(),
                        help=f"CSV path or URL (default: ${data.ENV_VAR}, else {data.DEFAULT_PATH})")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--register", action="store_true", help=f"register a new version of {MODEL_NAME}")
    parser.add_argument("--alias", choices=[CHAMPION, CHALLENGER],
                        help="alias of the new version (default: champion if none yet, else challenger)")
    args = parser.parse_args(argv)
    if args.alias and not args.register:
        parser.error("--alias needs --register")
    if "://" not in args.data and not os.path.exists(args.data):
        parser.error(f"--data {args.data}: no such file (set ${data.ENV_VAR} or pass a path or URL)")
    outcome = run(args.data, args.tracking_uri, args.register, args.alias)
    r = outcome.result
    print(f"run {outcome.run_id}: chosen {r.chosen}")
    for s in r.scores:
        print(
            f"  {s.name:24s} cv_f1={s.cv_f1_mean:.4f}±{s.cv_f1_std:.4f} "
            f"cv_roc_auc={s.cv_roc_auc_mean:.4f} latency={s.latency_ms:.2f} ms"
        )
    grouped = f" grouped_cv_f1={r.grouped_cv_f1_mean:.4f}" if r.grouped_cv_f1_mean is not None else ""
    print(f"held-out f1={r.f1:.4f} roc_auc={r.roc_auc:.4f}{grouped}")
    if outcome.version is not None:
        print(f"registered {MODEL_NAME} version {outcome.version} as @{outcome.alias}")


if __name__ == "__main__":
    main()
