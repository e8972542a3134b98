"""`mlops rollback` and `mlops lineage`: the registry side of a served model, from this machine.

Both talk to the stack's MLflow (URL and admin login from its outputs, as `mlops train` does, or
MLFLOW_TRACKING_* from the environment). A workload name (`neo`) stands for its registered model
(`NEOs`); any other name is taken as a registered model name.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow import MlflowClient

from workloads.common import lineage as tags
from workloads.common import promotion

# workload → registered model (each workload's train.MODEL_NAME; not imported: torch, sklearn)
REGISTERED = {"energy": "energy-forecast", "neo": "NEOs", "mnist": "mnist"}


def registered_name(model: str) -> str:
    return REGISTERED.get(model, model)


def rollback(client: MlflowClient, model: str) -> str:
    name = registered_name(model)
    old, new = promotion.rollback(client, name)
    return f"{name}@champion: v{old} → v{new} (rolled back; the serving layer follows the alias)"


@dataclass(frozen=True)
class Dataset:
    name: str
    context: str
    digest: str
    rows: str
    source: str


def _datasets(client: MlflowClient, run_id: str) -> list[Dataset]:
    run = client.get_run(run_id)
    found = []
    for item in run.inputs.dataset_inputs if run.inputs else []:
        d, context = item.dataset, next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")
        rows = run.data.tags.get(f"lineage.dataset.{d.name}.rows", "?")
        digest = run.data.tags.get(f"lineage.dataset.{d.name}.digest", d.digest)  # the field holds 128 bits
        origin = run.data.tags.get(f"lineage.dataset.{d.name}.source", "?")
        found.append(Dataset(d.name, context, digest, rows, f"{origin}, copy {d.source}"))
    return found


def lineage(client: MlflowClient, model: str, alias: str) -> str:
    """The chain alias → version → run → datasets → commit → image, one line each."""
    name = registered_name(model)
    version = promotion.version_of(client, name, alias)
    if version is None:
        raise LookupError(f"{name}@{alias} does not exist")
    vtags = version.tags or {}
    run = client.get_run(version.run_id) if version.run_id else None
    missing = "not recorded"
    lines = [f"{name}@{alias} → version {version.version} ({version.status}, source {version.source})"]
    if run is None:
        lines.append(f"  run      {missing}")
    else:
        experiment = client.get_experiment(run.info.experiment_id).name
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(run.data.metrics.items()) if "/" not in k)
        lines.append(f"  run      {run.info.run_id} (experiment {experiment}; {metrics})")
        datasets = _datasets(client, run.info.run_id)
        lines += [f"  dataset  {d.name} [{d.context}] sha256:{d.digest}, {d.rows} rows, from {d.source}"
                  for d in datasets] or [f"  dataset  {missing}"]
    run_tags = run.data.tags if run else {}
    lines.append(f"  commit   {vtags.get(tags.GIT_COMMIT_TAG) or run_tags.get(tags.GIT_COMMIT_TAG) or missing}")
    lines.append(f"  image    {vtags.get(tags.IMAGE_TAG) or run_tags.get(tags.IMAGE_TAG) or missing}")
    earlier = [e["version"] for e in promotion.history(client, name)]
    lines.append(f"  earlier champions (rollback order, last first): {', '.join(reversed(earlier)) or 'none'}")
    return "\n".join(lines)
