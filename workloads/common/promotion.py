"""Gated promotion and rollback of a registered model's `champion` alias.

`gate` compares the held-out metric the two versions' training runs logged; `promote` moves
`champion` only after a passing decision and records the version it replaced; `rollback` moves it
back. The serving layer follows the alias (`serving.models.<name>.source: {model, alias: champion}`),
so moving it is the whole deployment.

History is a registered-model tag, `champion.history`: a JSON list of the earlier champions, most
recent last, each with when it was replaced. A tag and not a second alias because a rollback must
go back more than one step (two bad promotions in a row), it lives in the registry beside the
alias it describes (no other store, visible in the UI), and it is read and written with the same
MLflow credentials the pipeline already has. The pipeline's concurrency group serialises writers.

The version tags `promoted_at`, `rolled_back_at` and `smoke_failed_at` (UTC, ISO 8601) are the
events the delivery metrics (mlops/delivery.py) are computed from.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from workloads.common.tracking import CHALLENGER, CHAMPION

HISTORY_TAG = "champion.history"
MAX_HISTORY = 50  # entries kept: a tag value is bounded (MLflow: 5,000 characters)
PROMOTED_TAG = "promoted_at"
ROLLED_BACK_TAG = "rolled_back_at"
SMOKE_FAILED_TAG = "smoke_failed_at"


@dataclass(frozen=True)
class Decision:
    model: str
    metric: str
    champion: str | None  # version; None: nothing serves yet
    challenger: str
    champion_value: float | None
    challenger_value: float | None
    margin: float
    promote: bool
    reason: str

    def render(self) -> str:
        verdict = "PROMOTE" if self.promote else "KEEP CHAMPION"
        return f"{self.model}: {verdict}: {self.reason}"


def version_of(client: MlflowClient, model: str, alias: str) -> ModelVersion | None:
    """`model@alias`, or None when the alias (or the model) does not exist."""
    try:
        return client.get_model_version_by_alias(model, alias)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def run_metric(client: MlflowClient, version: ModelVersion, metric: str) -> float | None:
    value = client.get_run(version.run_id).data.metrics.get(metric) if version.run_id else None
    return None if value is None or math.isnan(value) else float(value)


def compare(model: str, metric: str, champion: str | None, challenger: str, champion_value: float | None,
            challenger_value: float | None, higher_is_better: bool, margin: float) -> Decision:
    """Promote iff the challenger is better than the champion by at least `margin` (0: as good),
    in the metric's own units; with no champion, the first measured challenger is promoted."""
    def decide(ok: bool, reason: str) -> Decision:
        return Decision(model, metric, champion, challenger, champion_value, challenger_value, margin, ok, reason)

    if challenger_value is None:
        return decide(False, f"challenger v{challenger} has no metric {metric!r}: nothing to compare")
    if champion is None:
        return decide(True, f"no champion yet: v{challenger} ({metric}={challenger_value:.4f}) becomes the first")
    if champion == challenger:
        return decide(False, f"v{challenger} is already the champion")
    if champion_value is None:
        return decide(True, f"champion v{champion} has no metric {metric!r}; challenger v{challenger} has "
                            f"{challenger_value:.4f}")
    gain = (challenger_value - champion_value) * (1 if higher_is_better else -1)
    direction = "higher" if higher_is_better else "lower"
    detail = (f"{metric} challenger v{challenger} {challenger_value:.4f} vs champion v{champion} "
              f"{champion_value:.4f} ({direction} is better, margin {margin:g})")
    if gain >= margin:
        return decide(True, f"{detail}: better by {gain:.4f}")
    return decide(False, f"{detail}: {'worse' if gain < 0 else 'not better enough'} ({gain:+.4f})")


def gate(client: MlflowClient, model: str, metric: str, higher_is_better: bool = True,
         margin: float = 0.0) -> Decision:
    """The decision for `model@challenger` against `model@champion` on their runs' `metric`."""
    challenger = version_of(client, model, CHALLENGER)
    if challenger is None:
        raise LookupError(f"{model}@{CHALLENGER} does not exist: register a version first (ci/register)")
    champion = version_of(client, model, CHAMPION)
    return compare(model, metric, champion.version if champion else None, challenger.version,
                   run_metric(client, champion, metric) if champion else None,
                   run_metric(client, challenger, metric), higher_is_better, margin)


def history(client: MlflowClient, model: str) -> list[dict[str, str]]:
    """Earlier champions, most recent last: [{"version": "3", "replaced_at": "…"}, …]."""
    raw = client.get_registered_model(model).tags.get(HISTORY_TAG)
    return json.loads(raw) if raw else []


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def promote(client: MlflowClient, model: str, version: str) -> str | None:
    """Point `champion` at `version`, pushing the replaced champion onto the history; returns it."""
    current = version_of(client, model, CHAMPION)
    if current is not None and current.version == str(version):
        return None
    if current is not None:
        entries = [*history(client, model), {"version": current.version, "replaced_at": _now()}][-MAX_HISTORY:]
        client.set_registered_model_tag(model, HISTORY_TAG, json.dumps(entries))
    client.set_registered_model_alias(model, CHAMPION, str(version))
    client.set_model_version_tag(model, str(version), PROMOTED_TAG, _now())
    return current.version if current is not None else None


def record_smoke_failure(client: MlflowClient, model: str, version: str) -> None:
    """Mark `version` as having failed a smoke test now: after its promotion, a change failure."""
    client.set_model_version_tag(model, str(version), SMOKE_FAILED_TAG, _now())


def rollback(client: MlflowClient, model: str) -> tuple[str, str]:
    """Move `champion` back to the previous champion still registered; returns (from, to)."""
    current = version_of(client, model, CHAMPION)
    if current is None:
        raise LookupError(f"{model}@{CHAMPION} does not exist: nothing to roll back")
    entries = history(client, model)
    while entries:
        target = entries.pop()["version"]
        if target != current.version and _exists(client, model, target):
            client.set_registered_model_tag(model, HISTORY_TAG, json.dumps(entries))
            client.set_registered_model_alias(model, CHAMPION, target)
            client.set_model_version_tag(model, current.version, ROLLED_BACK_TAG, _now())
            return current.version, target
    raise LookupError(f"{model}: no earlier champion in the registered model's tag {HISTORY_TAG!r} "
                      f"(champion is v{current.version}); move the alias by hand (MlflowClient.set_registered_model_alias)")


def _exists(client: MlflowClient, model: str, version: str) -> bool:
    try:
        client.get_model_version(model, version)
    except MlflowException:
        return False
    return True
