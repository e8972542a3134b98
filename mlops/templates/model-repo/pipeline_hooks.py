"""The pipeline's hooks (ci/<step>): python -m pipeline_hooks <step>, run from the repository root with the
environment of mlops-stack's model pipeline (README "Models: the pipeline and its contract").

- register: train.py: a new version as `challenger` (writes model-version to $GITHUB_OUTPUT);
- deploy: point `challenger` at it: the stack's candidate predictor follows the alias (shadow);
- smoke: held-out rows with known labels, in-process on the challenger's registered artifact and
  through the gateway on the champion (`modelUrls[$SERVING_NAME]`, V2): every request answered,
  and at least $SMOKE_MIN_ACCURACY on the champion's own stage;
- promote: `champion` moves only if the challenger's held-out metric beats the champion's by
  $PROMOTE_MARGIN (default 0), else the job fails and the champion keeps serving;
- rollback: `champion` back to the previous champion.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow import MlflowClient

import model
import train
from mlops_helpers import hooks
from mlops_helpers.tracking import CHALLENGER


def register() -> None:
    outcome = train.run()
    print(f"{train.MODEL_NAME} v{outcome.version} @{CHALLENGER}: held-out {model.METRIC}={outcome.metric:.4f}")
    hooks.write_output("model-version", outcome.version)


def deploy() -> None:
    hooks.deploy_challenger(MlflowClient(), train.MODEL_NAME)


def known_requests(rows: int) -> tuple[pd.DataFrame, list[int]]:
    data = model.split(model.load(model.source()))
    return data.X_test.head(rows), [int(v) for v in data.y_test.head(rows)]


def v2(frame: pd.DataFrame) -> dict:
    """A V2 request MLServer's MLflow runtime decodes into the signature's DataFrame."""
    return {"parameters": {"content_type": "pd"},
            "inputs": [{"name": c, "shape": [len(frame)], "datatype": "FP64", "data": frame[c].tolist()}
                       for c in frame.columns]}


def v2_labels(reply: dict) -> list[int]:
    return [int(v) for v in reply["outputs"][0]["data"]]


def smoke() -> None:
    client, role = MlflowClient(), hooks.role()
    version = hooks.expected_version(client, train.MODEL_NAME, role)
    frame, expected = known_requests(int(hooks.number("SMOKE_ROWS", 20)))
    minimum = hooks.number("SMOKE_MIN_ACCURACY", 0.9)
    if role == CHALLENGER:
        loaded = mlflow.pyfunc.load_model(f"models:/{train.MODEL_NAME}/{version}")
        hooks.check_accuracy(f"{train.MODEL_NAME} v{version} (in-process)",
                             [int(v) for v in loaded.predict(frame)], expected, minimum)
    hooks.check_served(client, train.MODEL_NAME, role, version, hooks.env("SERVING_NAME", train.MODEL_NAME),
                       lambda _: v2(frame), v2_labels, expected, minimum)


if __name__ == "__main__":
    raise SystemExit(hooks.main(train.MODEL_NAME, register, deploy, smoke,
                                hooks.metric_promote(train.MODEL_NAME, model.METRIC)))
