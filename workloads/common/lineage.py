"""Lineage of a model version: the exact data it was trained on, the code, the image.

Every training run calls `log_training_data` once per data set it reads. The data is serialised
canonically (CSV for tables, a compressed `.npz` for arrays), its SHA-256 is the digest (of the
CSV file; of the arrays' names, dtypes, shapes and bytes), and the bytes are stored once per digest as an artifact of a run in the `datasets` experiment — through
MLflow's proxied artifacts, because workloads hold MLflow credentials and no bucket credentials.
The training run logs an MLflow dataset (name, digest, row count) whose source is that immutable
copy (`runs:/<dataset run>/data/<file>`), and tags the original location and the copy.

`provenance()` are the run's tags for the git commit (GIT_SHA, else GIT_COMMIT: what the pipeline
and the image build set), its committer time (GIT_COMMIT_TIME, else `git show` in the checkout the
pipeline runs from: where the delivery lead time starts) and the image (IMAGE, `registry/name@sha256:…`);
`tag_version` copies the lineage tags onto the registered model version, so `mlops lineage` reads
version → run → dataset → commit → image.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.data
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source

DATASETS_EXPERIMENT = "datasets"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
IMAGE_TAG = "lineage.image"
COMMIT_TIME_TAG = "lineage.git.commit_time"  # ISO 8601 with offset (`git show -s --format=%cI`)
DATASET_TAGS = ("digest", "rows", "source", "copy")  # lineage.dataset.<name>.<key>
DIGEST_FIELD = 32  # MLflow's dataset digest holds 36 characters: the first 128 bits; tags keep all 256


class RunArtifactDatasetSource(DatasetSource):
    """A data set stored as an artifact of an MLflow run: `runs:/<run id>/<path>` (immutable)."""

    def __init__(self, uri: str):
        self.uri = uri

    @staticmethod
    def _get_source_type() -> str:
        return "mlflow_run_artifact"

    def load(self, dst_path: str | None = None) -> str:
        return mlflow.artifacts.download_artifacts(artifact_uri=self.uri, dst_path=dst_path)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return isinstance(raw_source, str) and raw_source.startswith("runs:/")

    @classmethod
    def _resolve(cls, raw_source: Any) -> RunArtifactDatasetSource:
        return cls(raw_source)

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> RunArtifactDatasetSource:
        return cls(source_dict["uri"])


register_dataset_source(RunArtifactDatasetSource)


@dataclass(frozen=True)
class DatasetRecord:
    name: str
    digest: str  # sha256 of the CSV bytes (tables) or of names, dtypes, shapes and values (arrays)
    rows: int
    source: str  # where the run read it from
    copy: str  # runs:/<dataset run>/data/<file>: the immutable copy


def _table_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode()


def _arrays_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The arrays as a compressed `.npz` (its zip headers carry a time: the digest is of the arrays)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.ascontiguousarray(arrays[k]) for k in sorted(arrays)})
    return buffer.getvalue()


def _digest_of_arrays(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{value.dtype.str}:{value.shape}\n".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def _dataset_run(client: MlflowClient, name: str, digest: str, rows: int, source: str,
                 filename: str, payload: bytes) -> str:
    """The run holding the copy of `digest`, created (and uploaded) the first time it is seen."""
    experiment = client.get_experiment_by_name(DATASETS_EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(DATASETS_EXPERIMENT)
    found = client.search_runs([experiment_id], f"tags.`dataset.digest` = '{digest}' and "
                                                f"attributes.status = 'FINISHED'", max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=f"{name}-{digest[:12]}",
                            tags={"dataset.digest": digest, "dataset.name": name, "dataset.rows": str(rows),
                                  "dataset.source": source, "dataset.file": filename})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        path.write_bytes(payload)  # uncompressed: a .gz would be served with Content-Encoding and decoded
        client.log_artifact(run.info.run_id, str(path), "data")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def log_training_data(name: str, data: pd.DataFrame | dict[str, np.ndarray], source: str,
                      context: str = "training") -> DatasetRecord:
    """Store `data` once (by digest) and log it as an input of the active run; returns its record."""
    client = MlflowClient()
    if isinstance(data, pd.DataFrame):
        payload, filename, rows = _table_bytes(data), f"{name}.csv", len(data)
        digest = hashlib.sha256(payload).hexdigest()
    else:
        payload, filename = _arrays_bytes(data), f"{name}.npz"
        rows, digest = len(next(iter(data.values()))), _digest_of_arrays(data)
    run_id = _dataset_run(client, name, digest, rows, source, filename, payload)
    copy = f"runs:/{run_id}/data/{filename}"
    copy_source = RunArtifactDatasetSource(copy)
    if isinstance(data, pd.DataFrame):
        dataset = mlflow.data.from_pandas(data, source=copy_source, name=name, digest=digest[:DIGEST_FIELD])
    else:
        dataset = mlflow.data.from_numpy(data, source=copy_source, name=name, digest=digest[:DIGEST_FIELD])
    mlflow.log_input(dataset, context=context)
    record = DatasetRecord(name, digest, rows, source, copy)
    mlflow.set_tags({f"lineage.dataset.{name}.{key}": str(getattr(record, key)) for key in DATASET_TAGS})
    return record


def provenance() -> dict[str, str]:
    """The git commit (and its time) and image of this run, from the environment the pipeline / image sets."""
    tags = {}
    commit = os.environ.get("GIT_SHA") or os.environ.get("GIT_COMMIT")
    if commit:
        tags[GIT_COMMIT_TAG] = commit
    when = os.environ.get("GIT_COMMIT_TIME") or (commit_time(commit) if commit else None)
    if when:
        tags[COMMIT_TIME_TAG] = when
    if os.environ.get("IMAGE"):
        tags[IMAGE_TAG] = os.environ["IMAGE"]
    return tags


def commit_time(commit: str) -> str | None:
    """The committer time of `commit` in the current checkout; None without git or that commit."""
    if commit.startswith("-"):
        return None
    try:
        shown = subprocess.run(["git", "show", "-s", "--format=%cI", commit], capture_output=True, text=True,
                               timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (shown.stdout.strip() or None) if shown.returncode == 0 else None


def tag_version(model_name: str, version: int | str, run_id: str) -> None:
    """Copy the run's lineage tags (datasets, commit, image) onto the registered version."""
    client = MlflowClient()
    tags = client.get_run(run_id).data.tags
    for key, value in tags.items():
        if key.startswith("lineage.") or key == GIT_COMMIT_TAG:
            client.set_model_version_tag(model_name, str(version), key, value)
