"""The neo workload's pipeline hooks (`workloads/neo/ci/<step>`): python -m workloads.neo.hooks <step>.

- register: train on $NEO_DATA (the stack's table; default: the checkout's shared copy) and
  register the version as `challenger`, with its lineage;
- deploy: point `challenger` at it: the shadow predictor follows the alias;
- smoke: known rows of the table (their labels are the expected answers) through the gateway's
  endpoint (`modelUrls[$SERVING_NAME]`, default `neo`), V2; for the challenger also in-process on
  its registered artifact, whose answers the shadow hides;
- promote: `champion` moves only if the challenger's held-out F1 beats the champion's by
  $PROMOTE_MARGIN (default 0: at least as good);
- rollback: `champion` back to the previous champion.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow import MlflowClient

from workloads.common import hooks
from workloads.common.tracking import CHALLENGER
from workloads.neo import data, payload, train

METRIC = "f1"  # held-out F1 of the registered artifact


def register() -> None:
    outcome = train.run(hooks.env(data.ENV_VAR) or data.default_source(), register=True, alias=CHALLENGER)
    print(f"{train.MODEL_NAME} v{outcome.version} @{CHALLENGER}: held-out f1={outcome.result.f1:.4f}")
    hooks.write_output("model-version", str(outcome.version))


def deploy() -> None:
    hooks.deploy_challenger(MlflowClient(), train.MODEL_NAME)


def known_requests(version: str, rows: int) -> tuple[pd.DataFrame, list[int]]:
    """Rows of the table, half hazardous, in the columns the version's signature names."""
    raw = data.load(hooks.env(data.ENV_VAR) or data.default_source())
    labels = data.preprocess(raw).y
    picked = pd.concat([labels[labels == 1].head(rows // 2), labels[labels == 0].head(rows - rows // 2)]).index
    columns = mlflow.models.get_model_info(f"models:/{train.MODEL_NAME}/{version}").signature.inputs.input_names()
    return data.features(raw.loc[picked])[columns].astype("float64"), labels.loc[picked].tolist()


def v2_labels(reply: dict) -> list[int]:
    return [int(v) for v in reply["outputs"][0]["data"]]


def smoke() -> None:
    client, role = MlflowClient(), hooks.role()
    version = hooks.expected_version(client, train.MODEL_NAME, role)
    frame, expected = known_requests(version, int(hooks.number("SMOKE_ROWS", 20)))
    minimum = hooks.number("SMOKE_MIN_ACCURACY", 0.9)
    if role == CHALLENGER:
        model = mlflow.pyfunc.load_model(f"models:/{train.MODEL_NAME}/{version}")
        hooks.check_accuracy(f"{train.MODEL_NAME} v{version} (in-process)",
                             [int(v) for v in model.predict(frame)], expected, minimum)
    hooks.check_served(client, train.MODEL_NAME, role, version, hooks.env("SERVING_NAME", "neo"),
                       lambda _: payload.v2(frame), v2_labels, expected, minimum)


if __name__ == "__main__":
    raise SystemExit(hooks.main(train.MODEL_NAME, register, deploy, smoke,
                                hooks.metric_promote(train.MODEL_NAME, METRIC)))
