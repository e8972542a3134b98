"""What the tests of the managed engines (tests/test_sagemaker.py, tests/test_vertex.py) share:
planned inputs by resource type, stack configs with changes, the serving layer's resources an
in-cluster engine has and a managed one does not, and an MLflow model folder as the service
downloads it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infra.settings import raw_from_pulumi_config
from mlops.plan import Plan, stack_config

STACKS = Path(__file__).resolve().parent / "stacks"


def resources_of(plan: Plan, type_: str) -> dict[str, dict[str, Any]]:
    """Inputs of the plan's resources of one type, by logical name."""
    return {r["urn"].rsplit("::", 1)[1]: r["inputs"] for r in plan.resources if r["type"] == type_}


def in_cluster_serving(urn: str) -> bool:
    """The in-cluster model servers' identity (its cloud role and service account) and their
    storage-initializer Secret: a managed engine's endpoints read models with a role of their own."""
    return urn.rsplit("::", 1)[1].startswith(("identity-model-server", "model-server-account", "model-storage"))


def raw_config(stack: str, **changes: Any) -> dict[str, Any]:
    """A stack's raw config (tests/stacks, or stacks/ for dev) with `a__b=value` set at a.b."""
    values, secrets = stack_config(stack, STACKS if stack != "dev" else None)
    raw, _ = raw_from_pulumi_config(values, set(secrets))
    for path, value in changes.items():
        *parents, key = path.split("__")
        node = raw
        for parent in parents:
            node = node.setdefault(parent, {})
        node[key] = value
    return raw


@contextmanager
def mlflow_model_folder(prefix: str) -> Iterator[tuple[Path, Any, Any]]:
    """(folder, X, model): an MLflow scikit-learn model's artifact files, as a registry version's
    prefix holds them, with its training frame and the fitted model."""
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    y = (X["a"] + X["b"] > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        path = Path(tmp) / "artifacts"
        # requirements stated: inferring them would load the model again in a subprocess
        mlflow.sklearn.save_model(model, str(path), signature=infer_signature(X, model.predict(X)),
                                  pip_requirements=["scikit-learn==1.9.1"])
        yield path, X, model


def assert_config_error(raw: dict[str, Any], stack: str, fragments: list[str]) -> None:
    """The stack's config is refused with a message holding every fragment (key, value, what is allowed)."""
    import pytest

    from infra.settings import ConfigError, parse_stack_config

    with pytest.raises(ConfigError) as error:
        parse_stack_config(raw, stack=stack)
    message = str(error.value)
    for fragment in fragments:
        assert fragment in message, message
