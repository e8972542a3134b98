"""The model, without MLflow: load the table, hold out a test split, fit, measure.

Replace the body of `fit` (and the data under data/) with your own; keep the held-out metric:
ci/promote compares it with the champion's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

DATA_ENV = "MODEL_DATA"  # the stack's copy of the data (path or URL); default: the bundled CSV
DEFAULT_DATA = Path(__file__).parent / "data" / "train.csv"
LABEL = "species"
METRIC = "accuracy"  # held-out; higher is better
SEED = 7
TEST_SIZE = 0.3


@dataclass(frozen=True)
class Split:
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


def source() -> str:
    return os.environ.get(DATA_ENV) or str(DEFAULT_DATA)


def load(path: str) -> pd.DataFrame:
    return pd.read_csv(path)


def split(frame: pd.DataFrame) -> Split:
    """A fixed, stratified held-out split: every version is measured on the same rows."""
    X, y = frame.drop(columns=[LABEL]).astype("float64"), frame[LABEL]
    return Split(*train_test_split(X, y, test_size=TEST_SIZE, random_state=SEED, stratify=y))


def fit(X: pd.DataFrame, y: pd.Series) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)


def held_out_metric(model: Pipeline, data: Split) -> float:
    return float(accuracy_score(data.y_test, model.predict(data.X_test)))
