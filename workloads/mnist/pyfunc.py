"""The CNN as an MLflow pyfunc: weights (`state_dict`) as an artifact, the two modules that define
and load the network shipped as code, so loading needs torch but not this project."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import Schema, TensorSpec

from workloads.mnist.model import CLASSES, DigitCNN, probabilities

MODULES = ("__init__.py", "mnist/__init__.py", "mnist/model.py", "mnist/pyfunc.py")
WEIGHTS = "weights"
SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28))]),
    outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, CLASSES))]),
)


class DigitModel(PythonModel):
    """(N, 28, 28) float32 images in [0, 1] → (N, 10) probabilities."""

    def load_context(self, context) -> None:  # noqa: ANN001
        torch.set_num_threads(1)  # one request per worker thread; intra-op threads only contend
        self.net = DigitCNN()
        self.net.load_state_dict(torch.load(context.artifacts[WEIGHTS], weights_only=True))
        self.net.eval()

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:  # noqa: ANN001
        return probabilities(self.net, np.asarray(model_input, dtype=np.float32).reshape(-1, 28, 28))


@contextmanager
def weights_file(net: DigitCNN) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        torch.save(net.state_dict(), path)
        yield str(path)


@contextmanager
def code_package() -> Iterator[str]:
    """A `workloads` package directory holding only `MODULES`, for `log_model(code_paths=...)`."""
    source = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "workloads"
        for relative in MODULES:
            (package / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / relative, package / relative)
        yield str(package)
