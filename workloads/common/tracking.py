"""MLflow plumbing both training entry points share."""

from __future__ import annotations

import json
import os

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
CHALLENGER = "challenger"
TRIGGER_TAG = "trigger"  # what started the run: RETRAIN_TRIGGER (set by modules/retraining), else manual


def connect(tracking_uri: str | None, experiment: str) -> None:
    """Point MLflow at `tracking_uri` (else MLFLOW_TRACKING_URI, which MLflow reads itself)."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    tag_runs_with_trigger()


def tag_runs_with_trigger() -> None:
    """Every run this process starts carries `trigger=<kind>`: MLflow adds the JSON tags of
    MLFLOW_RUN_CONTEXT (its SystemEnvironmentContext) to each `mlflow.start_run`."""
    tags = json.loads(os.environ.get("MLFLOW_RUN_CONTEXT") or "{}")
    tags[TRIGGER_TAG] = os.environ.get("RETRAIN_TRIGGER") or "manual"
    os.environ["MLFLOW_RUN_CONTEXT"] = json.dumps(tags)


def promote(model_name: str, version: int | str, alias: str = CHAMPION) -> None:
    """Point `alias` at `version`: what serving resolves (`models:/<name>@<alias>`)."""
    MlflowClient().set_registered_model_alias(model_name, alias, str(version))


def has_alias(model_name: str, alias: str) -> bool:
    """Whether `model_name@alias` exists (False also when the model is not registered yet)."""
    try:
        MlflowClient().get_model_version_by_alias(model_name, alias)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return False
        raise
    return True


def first_champion_then_challenger(model_name: str) -> str:
    """The alias a new version gets: the first one serves at once; later ones shadow it first."""
    return CHALLENGER if has_alias(model_name, CHAMPION) else CHAMPION
