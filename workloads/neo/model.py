"""Candidate classifiers for hazardous NEOs, their evaluation, and the selection rule.

Protocol (fixed seed `SEED`):
- every candidate is scored by 5-fold stratified cross-validation on the whole table (mean F1 and
  ROC AUC: the figure the project's target is stated in) and by its single-row predict latency;
- the chosen one is fitted on a stratified 80 % split and scored on the other 20 %, which it has
  never seen; that fitted model is the one logged and served, so the held-out F1 / ROC AUC
  describe exactly the registered artifact.

Selection: a candidate must answer one row within `LATENCY_BUDGET_MS` in-process (the source
served a 10,000-tree forest that takes ~1.5 s per row; the serving target is p99 <= 20 ms through
the server, which adds its own few ms). Among those, every candidate within `TOLERANCE` of the
leader's (best CV F1) F1 and ROC AUC counts as equally good — 0.005 F1 is about one misclassified
hazardous object per fold, i.e. noise — and the fastest of them wins.

The label is NASA's PHA rule (minimum orbit intersection <= 0.05 AU and absolute magnitude <= 22),
so near-perfect scores are expected; 21 rows (0.45 %) disagree with that rule as recomputed from
the table (values revised after labelling), which caps F1 near 0.99. The same asteroid appears in
several rows (one per close approach); `grouped_cv_f1` keeps each asteroid inside one fold and is
the honest estimate for objects never seen before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin, clone
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_validate, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from workloads.neo.data import Prepared

SEED = 42
TEST_SIZE = 0.2
FOLDS = 5
LATENCY_BUDGET_MS = 10.0
TOLERANCE = 0.005


def candidates(seed: int = SEED) -> dict[str, ClassifierMixin]:
    """Modest models: forests of 50 trees, considering every feature per split (the signal sits in
    two of the 22 features, which random feature subsets often miss), and a linear baseline."""
    return {
        "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "random_forest": RandomForestClassifier(n_estimators=50, max_features=None, random_state=seed),
        "extra_trees": ExtraTreesClassifier(n_estimators=50, max_features=None, random_state=seed),
        "hist_gradient_boosting": HistGradientBoostingClassifier(max_depth=3, random_state=seed),
    }


@dataclass(frozen=True)
class Score:
    """One candidate on the CV folds of the whole table."""

    name: str
    cv_f1_mean: float
    cv_f1_std: float
    cv_roc_auc_mean: float
    latency_ms: float


@dataclass(frozen=True)
class Result:
    chosen: str
    model: ClassifierMixin  # fitted on the training split: the artifact that is logged and served
    scores: list[Score]
    f1: float  # held-out test split
    roc_auc: float
    grouped_cv_f1_mean: float | None
    X_test: pd.DataFrame

    @property
    def score(self) -> Score:
        return next(s for s in self.scores if s.name == self.chosen)


def single_row_latency_ms(model: ClassifierMixin, row: pd.DataFrame, repeats: int = 30) -> float:
    """Fastest of `repeats` wall times of `predict_proba` on one row: what a scoring request costs
    in-process. The minimum, not the median: other processes' load only ever adds time, so the
    fastest repeat is the model's own cost, and the choice (by a fixed budget) stays the same on a
    busy CI runner as on an idle one (seen: every candidate over 10 ms by median at load 10)."""
    model.predict_proba(row)  # warm-up (lazy imports, thread pools)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_proba(row)
        times.append(time.perf_counter() - start)
    return float(np.min(times)) * 1000.0


def score_candidate(
    name: str, model: ClassifierMixin, X: pd.DataFrame, y: pd.Series, folds: int = FOLDS, seed: int = SEED
) -> Score:
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    out = cross_validate(model, X, y, cv=cv, scoring=["f1", "roc_auc"], return_estimator=True)
    latency = single_row_latency_ms(out["estimator"][0], X.iloc[[0]])
    return Score(
        name=name,
        cv_f1_mean=float(np.mean(out["test_f1"])),
        cv_f1_std=float(np.std(out["test_f1"])),
        cv_roc_auc_mean=float(np.mean(out["test_roc_auc"])),
        latency_ms=latency,
    )


def select(scores: list[Score], budget_ms: float = LATENCY_BUDGET_MS, tolerance: float = TOLERANCE) -> str:
    """The fastest candidate as good as the leader on F1 and ROC AUC (see module doc).

    The leader is the best on F1 (ties: ROC AUC); measuring against one candidate's pair rather than
    each metric's maximum keeps the leader itself eligible when the best F1 and the best AUC belong
    to different models, so a choice always exists.
    """
    fast = [s for s in scores if s.latency_ms <= budget_ms and np.isfinite([s.cv_f1_mean, s.cv_roc_auc_mean]).all()]
    if not fast:
        raise ValueError(f"no candidate predicts one row within {budget_ms} ms with finite scores: {scores}")
    leader = max(fast, key=lambda s: (s.cv_f1_mean, s.cv_roc_auc_mean))
    good = [s for s in fast
            if s.cv_f1_mean >= leader.cv_f1_mean - tolerance and s.cv_roc_auc_mean >= leader.cv_roc_auc_mean - tolerance]
    return min(good, key=lambda s: s.latency_ms).name


def held_out(model: ClassifierMixin, X: pd.DataFrame, y: pd.Series) -> tuple[float, float]:
    """(F1 at the 0.5 threshold, ROC AUC) on data the model has not seen."""
    proba = model.predict_proba(X)[:, 1]
    return float(f1_score(y, proba >= 0.5)), float(roc_auc_score(y, proba))


def grouped_cv_f1(
    model: ClassifierMixin, X: pd.DataFrame, y: pd.Series, groups: pd.Series, folds: int = FOLDS, seed: int = SEED
) -> float:
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_validate(model, X, y, groups=groups, cv=cv, scoring="f1")["test_score"]))


def train_and_select(
    prepared: Prepared,
    make_candidates: Callable[[int], dict[str, ClassifierMixin]] = candidates,
    seed: int = SEED,
    folds: int = FOLDS,
) -> Result:
    """Split, score every candidate by CV, pick one, fit it on the training split, score on test.

    Runs single-threaded: on a few thousand rows OpenMP's synchronisation costs more than it saves
    (HistGradientBoosting fits ~4x faster on one thread on a shared 2-core machine), and a scoring
    server handles one request per thread anyway.
    """
    with threadpool_limits(limits=1):
        return _train_and_select(prepared, make_candidates, seed, folds)


def _train_and_select(
    prepared: Prepared, make_candidates: Callable[[int], dict[str, ClassifierMixin]], seed: int, folds: int
) -> Result:
    X, y = prepared.X, prepared.y
    models = make_candidates(seed)
    scores = [score_candidate(name, model, X, y, folds, seed) for name, model in models.items()]
    chosen = select(scores)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=TEST_SIZE, stratify=y, random_state=seed)
    model = clone(models[chosen]).fit(X_train, y_train)
    f1, auc = held_out(model, X_test, y_test)
    grouped = None
    if prepared.groups is not None:
        grouped = grouped_cv_f1(clone(models[chosen]), X, y, prepared.groups, folds, seed)
    return Result(chosen, model, scores, f1, auc, grouped, X_test)
