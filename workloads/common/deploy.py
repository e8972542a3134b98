"""What the platform hands a workload's deploy component: where to run and which Secrets to read.

The platform (infra/program.py) creates the namespace and the Secrets; a workload's component
(`workloads/<name>/deploy.py`) only declares its Jobs/CronJobs and references the Secrets by name,
so no credential ever appears in a workload manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

# Keys of the Secrets named below; both are created by the platform.
TRACKING_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
DATABASE_KEY = "DATABASE_URL"  # postgresql://user:password@host:5432/dbname


@dataclass(frozen=True)
class WorkloadContext:
    namespace: pulumi.Input[str]
    image: str  # the workload image, content-addressed tag (git SHA), never `latest`
    tracking_uri: pulumi.Input[str]  # in-cluster MLflow URL, e.g. http://mlflow.mlflow.svc:5000
    tracking_secret: pulumi.Input[str]  # Secret with TRACKING_KEYS
    database_secret: pulumi.Input[str] | None = None  # Secret with DATABASE_KEY (workload tables)
    service_account: pulumi.Input[str] | None = None  # its cloud identity may read the model bucket
    timezone: str = "Europe/Madrid"  # CronJob spec.timeZone, set explicitly
    pushgateway_url: pulumi.Input[str] | None = None  # where batch jobs push quality gauges (none: logs only)
