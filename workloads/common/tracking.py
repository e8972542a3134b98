"""MLflow plumbing both training entry points share."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

CHAMPION = "champion"


def connect(tracking_uri: str | None, experiment: str) -> None:
    """Point MLflow at `tracking_uri` (else MLFLOW_TRACKING_URI, which MLflow reads itself)."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)


def promote(model_name: str, version: int | str, alias: str = CHAMPION) -> None:
    """Point `alias` at `version`: what serving resolves (`models:/<name>@<alias>`)."""
    MlflowClient().set_registered_model_alias(model_name, alias, str(version))
