"""The forecaster as an MLflow pyfunc: what the registry stores and batch jobs or servers load."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from workloads.energy.model import Forecaster

# the modules the pickled model refers to, shipped with it so that loading needs no project install
MODULES = ("__init__.py", "energy/__init__.py", "energy/calendar.py", "energy/model.py", "energy/pyfunc.py")
REQUIREMENTS = [f"{name}=={version(name)}" for name in ("cloudpickle", "numpy", "pandas", "scikit-learn")]


class ForecastModel(PythonModel):
    """kWh for each row of a feature frame (`model.FEATURES` columns, from `Forecaster.features`).

    A batch job that holds raw history instead calls `unwrap_python_model().forecaster.forecast(
    consumption, weather, day)` on the loaded model.
    """

    def __init__(self, forecaster: Forecaster) -> None:
        self.forecaster = forecaster

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:  # noqa: ANN001
        return self.forecaster.predict(model_input)


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
