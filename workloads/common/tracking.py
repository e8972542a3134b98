"""MLflow plumbing both training entry points share."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
CHALLENGER = "challenger"


def connect(tracking_uri: str | None, experiment: str) -> None:
    """Point MLflow at `tracking_uri` (else MLFLOW_TRACKING_URI, which MLflow reads itself)."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)


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
