"""`mlops train <workload> --stack <name> [-- <train args>]`: a workload's training entry point
(`python -m workloads.<workload>.train`) run from this machine against a stack's MLflow.

The tracking URL and the admin login come from the stack outputs (`mlflowUrl`,
`mlflowAdminUsername`, `mlflowAdminPassword`), read as `mlops smoke` reads them, and reach the
training code only through MLflow's environment variables: nothing is written to disk.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from mlops.smoke import mlflow_admin

WORKLOADS = ("energy", "neo", "mnist")


def training_env(outputs: Mapping[str, Any], insecure: bool) -> dict[str, str]:
    url = outputs.get("mlflowUrl")
    if not url:
        raise ValueError("the stack outputs have no mlflowUrl: is the stack up?")
    username, password = mlflow_admin(outputs)
    env = {"MLFLOW_TRACKING_URI": str(url), "MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": password}
    if insecure:
        env["MLFLOW_TRACKING_INSECURE_TLS"] = "true"  # the dev gateway's self-signed certificate
    return env


def run(workload: str, outputs: Mapping[str, Any], train_args: Sequence[str], insecure: bool = False) -> int:
    if workload not in WORKLOADS:
        raise ValueError(f"workload {workload!r}: one of {', '.join(WORKLOADS)}")
    env = {**os.environ, **training_env(outputs, insecure)}
    return subprocess.run([sys.executable, "-m", f"workloads.{workload}.train", *train_args], env=env).returncode
