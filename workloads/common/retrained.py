"""The promote step of a retraining (modules/retraining):

    python -m workloads.common.retrained <workload>            the last step of a retraining Job
    python -m workloads.common.retrained <workload> --pending  the energy-retrain-promote CronJob

The Job's training containers ran first and registered a version; this step runs the workload's own
promote hook on it — the code and $PROMOTE_MARGIN of the pipeline's `ci/promote` (neo and mnist:
the held-out metric, energy: the shadow MAPE comparison) — and records on the version and on its
training run what started the retraining and what the gate decided:

    trigger              schedule | newData | qualityDrop | drift  ($RETRAIN_TRIGGER; the run has it already)
    retrain.gate         promoted | kept
    retrain.gate.reason  what the gate said

In a Job only the version this Job trained is gated: the one whose run carries
`retrain.job=$RETRAIN_JOB` (the receiver sets MLFLOW_RUN_CONTEXT); if another run moved `challenger`
meanwhile, nothing is gated. With --pending, the current `challenger` is gated if a retraining made
it (its run's `trigger` is not `manual`; a person's challenger is left to the pipeline's
`ci/promote`): energy's gate needs days of shadow forecasts, which a retrained challenger has only
days after its Job, so a daily CronJob asks again until it is promoted or replaced. A kept champion
is an outcome, not a failure (exit 0); MLflow unreachable is (exit 1).

With $PUSHGATEWAY_URL the outcome is also a gauge for the retraining dashboard (the last gate per
model): `retraining_gate_timestamp_seconds{model, trigger, outcome, version}`, when it decided.
(mnist's image has prometheus-client 0.8 through seldon-core's pin; its push API is the same.)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import time
from collections.abc import Callable

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from workloads.common import hooks, promotion
from workloads.common.tracking import CHALLENGER, CHAMPION, TRIGGER_TAG

JOB_TAG = "retrain.job"  # = modules/retraining/image/mlops_retrain.py RUN_TAG_JOB
GATE_TAG = "retrain.gate"
REASON_TAG = "retrain.gate.reason"
MAX_REASON = 1000
GATE_METRIC = "retraining_gate_timestamp_seconds"
PUSH_JOB = "retraining-gate"


def promote_hook(workload: str) -> tuple[str, Callable[[], None]]:
    """(registered model, the promote step of `workloads/<workload>/hooks.py`)."""
    module = importlib.import_module(f"workloads.{workload}.hooks")
    model = module.train.MODEL_NAME
    if workload == "energy":  # a batch model: judged on its shadow forecasts
        return model, module.promote
    return model, hooks.metric_promote(model, module.METRIC)


def trained_by(client: MlflowClient, model: str, job: str) -> tuple[str, ModelVersion] | None:
    """(alias, version) of the version `job` trained: `champion` first (the first version, or promoted
    already: a promoted version keeps `challenger` too), else `challenger`."""
    for alias in (CHAMPION, CHALLENGER):
        version = promotion.version_of(client, model, alias)
        if version is not None and version.run_id and client.get_run(version.run_id).data.tags.get(JOB_TAG) == job:
            return alias, version
    return None


def retrained_challenger(client: MlflowClient, model: str) -> tuple[str, ModelVersion, str] | None:
    """(alias, version, trigger) of `challenger` when a retraining made it and it is not the champion."""
    version = promotion.version_of(client, model, CHALLENGER)
    champion = promotion.version_of(client, model, CHAMPION)
    if version is None or not version.run_id or (champion is not None and champion.version == version.version):
        return None
    trigger = client.get_run(version.run_id).data.tags.get(TRIGGER_TAG)
    return None if trigger in (None, "manual") else (CHALLENGER, version, trigger)


def gate(workload: str, job: str | None, trigger: str | None) -> str | None:
    """Gate and maybe promote the version `job` trained (None: the retrained challenger); returns
    the outcome (None: nothing to gate)."""
    client = MlflowClient()
    model, promote = promote_hook(workload)
    if job is None:
        pending = retrained_challenger(client, model)
        if pending is None:
            print(f"{model}: no {CHALLENGER} made by a retraining (run tag {TRIGGER_TAG}): nothing to gate")
            return None
        alias, version, trigger = pending
    else:
        found = trained_by(client, model, job)
        if found is None:
            print(f"{model}: no alias points at a version trained by {job} (run tag {JOB_TAG}): nothing to gate")
            return None
        alias, version = found
    if alias == CHAMPION and GATE_TAG in version.tags:  # this step ran before (a retried pod)
        print(f"{model} v{version.version} is the champion, gated before: {version.tags[GATE_TAG]}")
        return version.tags[GATE_TAG]
    if alias == CHAMPION:
        outcome, reason = "promoted", f"v{version.version} is the first version: champion since it was registered"
    else:
        os.environ["MODEL_VERSION"] = version.version  # promote_or_fail refuses if `challenger` moved since
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said):
                promote()
            outcome, reason = "promoted", said.getvalue().strip()
        except hooks.HookError as error:
            outcome, reason = "kept", str(error)
        finally:
            print(said.getvalue(), end="")
    tags = {TRIGGER_TAG: trigger, GATE_TAG: outcome, REASON_TAG: reason[:MAX_REASON]}
    for key, value in tags.items():
        client.set_model_version_tag(model, version.version, key, value)
        if key != TRIGGER_TAG:  # the training run has it from RETRAIN_TRIGGER
            client.set_tag(version.run_id, key, value)
    print(f"{model} v{version.version} (trigger {trigger}): {outcome}: {reason}")
    if os.environ.get("PUSHGATEWAY_URL"):
        push_outcome(os.environ["PUSHGATEWAY_URL"], model, trigger, outcome, version.version, time.time())
    return outcome


def push_outcome(url: str, model: str, trigger: str, outcome: str, version: str, at: float) -> None:
    """The gate's decision as the model's group on the Pushgateway (a push replaces the group: the
    last decision per model). A failed push is reported, not fatal: MLflow's tags hold the outcome."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    Gauge(GATE_METRIC, "When the promotion gate after a retraining last decided, by trigger and outcome",
          ["trigger", "outcome", "version"], registry=registry).labels(trigger, outcome, version).set(at)
    try:
        push_to_gateway(url, job=PUSH_JOB, registry=registry, grouping_key={"model": model}, timeout=30)
    except OSError as error:
        print(f"{model}: could not push the gate's outcome to {url}: {error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.common.retrained", description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=("energy", "neo", "mnist"))
    parser.add_argument("--pending", action="store_true", help="gate the challenger a retraining made, if any")
    args = parser.parse_args(argv)
    job, trigger = os.environ.get("RETRAIN_JOB"), os.environ.get("RETRAIN_TRIGGER")
    if not args.pending and not (job and trigger):
        parser.error("$RETRAIN_JOB and $RETRAIN_TRIGGER are required (the receiver sets them), or --pending")
    gate(args.workload, None if args.pending else job, trigger)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
