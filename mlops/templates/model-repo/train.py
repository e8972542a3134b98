"""Train, log and register a version of the model as `challenger`: python train.py.

Logs the data it used (digest, rows, an immutable copy in MLflow), the held-out metric, the git
commit and image (GIT_SHA, IMAGE from the pipeline), and copies that lineage onto the version.
MLflow's location and login come from MLFLOW_TRACKING_URI / _USERNAME / _PASSWORD.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import skops.io
from mlflow import MlflowClient
from mlflow.models import infer_signature

import model
from mlops_helpers import lineage
from mlops_helpers.tracking import CHALLENGER

MODEL_NAME = "__MODEL_NAME__"  # the registered model; serving.models.<name>.source.model in the stack


@dataclass(frozen=True)
class Outcome:
    version: str
    metric: float
    run_id: str


def run() -> Outcome:
    path = model.source()
    frame = model.load(path)
    data = model.split(frame)
    fitted = model.fit(data.X_train, data.y_train)
    metric = model.held_out_metric(fitted, data)
    mlflow.set_experiment(MODEL_NAME)
    with mlflow.start_run(tags=lineage.provenance()) as active:
        lineage.log_training_data("train", frame, path)
        mlflow.log_params({"seed": model.SEED, "test_size": model.TEST_SIZE, "rows": len(frame)})
        mlflow.log_metric(model.METRIC, metric)
        example = data.X_test.head(3)
        info = mlflow.sklearn.log_model(
            fitted, name="model", registered_model_name=MODEL_NAME,
            signature=infer_signature(example, fitted.predict(example)), input_example=example,
            pip_requirements=[*mlflow.sklearn.get_default_pip_requirements(include_skops=True),
                              f"mlflow=={mlflow.__version__}"],
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(fitted)))
    version = str(info.registered_model_version)
    MlflowClient().set_registered_model_alias(MODEL_NAME, CHALLENGER, version)
    lineage.tag_version(MODEL_NAME, version, active.info.run_id)
    return Outcome(version, metric, active.info.run_id)


if __name__ == "__main__":
    outcome = run()
    print(f"{MODEL_NAME} v{outcome.version} @{CHALLENGER}: held-out {model.METRIC}={outcome.metric:.4f}")
