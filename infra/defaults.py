"""Defaults per platform and environment, so a stack file states only what differs.

Order of precedence (later wins): BASE → ENVIRONMENT[env] → PLATFORM[platform] → the stack file.
Sizes on `dev` fit a default minikube (2 CPU / 4 GiB for the whole platform); `prod` adds replicas,
backups and deletion protection.

The cloud sections (`gcp`, `aws`) have per-environment values (dev: smallest, zonal, no HA; prod:
regional/multi-AZ, HA); a stack keeps only the section of its own platform (`CLOUD_SECTION`).
"""

from __future__ import annotations

import copy
from typing import Any

# CloudNativePG 1.30.0's default operand image (pkg/versions/versions.go): the `system` flavour carries
# barman-cloud 3.19.1, which the in-tree Barman Cloud backups need (docs/decisions/0002).
POSTGRES_IMAGE = {"repository": "ghcr.io/cloudnative-pg/postgresql", "tag": "18.4-system-trixie"}
CLOUDNATIVE_PG_CHART = "0.29.0"  # operator 1.30.0
SEAWEEDFS_IMAGE = {"repository": "docker.io/chrislusf/seaweedfs", "tag": "4.47"}
PUSHGATEWAY_IMAGE = {"repository": "quay.io/prometheus/pushgateway", "tag": "v1.11.1"}
# GitHub's runner image; bump with each runner release (GitHub refuses runners older than ~30 days).
RUNNER_IMAGE = {"repository": "ghcr.io/actions/actions-runner", "tag": "2.334.0"}
# Project images (`mlops-stack/<name>`): `make up` builds them into minikube; elsewhere `images.mode:
# build` builds and pushes them (tag <tag>-<content hash>, pods use the digest).
# Built from modules/mlflow/image/Dockerfile (official MLflow image + PostgreSQL/S3/metrics drivers).
MLFLOW_IMAGE = {"repository": "mlops-stack/mlflow-server", "tag": "3.17.2-1"}
# Built from modules/serving/mlserver-image (seldonio/mlserver:1.7.1-mlflow + the workloads' MLflow pins).
MLSERVER_IMAGE = {"repository": "mlops-stack/mlserver", "tag": "1.7.1-1"}
# Built from modules/retraining/image (the retraining receiver and its new-data checks).
RETRAINING_IMAGE = {"repository": "mlops-stack/retraining", "tag": "0.1.0"}
# Retraining triggers of a workload (infra/config/retraining.py): all off, so a stack retrains only
# when asked to (a dev stack stays small: no receiver, no CronJobs).
RETRAIN_OFF = {"schedule": None, "newData": None, "qualityDrop": False, "drift": False, "cooldownMinutes": 360}

BASE: dict[str, Any] = {
    "kubernetes": {"version": "1.34", "loadBalancers": False},
    "namespaces": {
        "platform": "mlops-platform",
        "mlflow": "mlflow",
        "serving": "serving",
        "monitoring": "monitoring",
        "workloads": "ml-workloads",
    },
    "database": {
        "image": POSTGRES_IMAGE,
        "operatorVersion": CLOUDNATIVE_PG_CHART,
        "operatorResources": {"cpu": "50m", "memory": "128Mi", "memoryLimit": "256Mi"},
        "instances": 1,
        "synchronous": 0,
        "antiAffinity": "preferred",
        "storageGi": 5,
        "resources": {"cpu": "100m", "memory": "256Mi", "memoryLimit": "512Mi"},
        "backup": {
            "enabled": False,
            "schedule": "0 2 * * *",  # base backups; WALs are archived continuously
            "timeZone": "Etc/UTC",
            "retentionDays": 14,
        },
    },
    "objectStore": {
        "image": SEAWEEDFS_IMAGE,
        "storageGi": 10,
        "replicas": 1,  # one all-in-one pod; staging/prod: the replicated topology
        "resources": {"cpu": "100m", "memory": "256Mi", "memoryLimit": "512Mi"},
        "buckets": {"artifacts": "mlflow-artifacts", "backups": "backups"},
    },
    "mlflow": {
        "image": MLFLOW_IMAGE,
        "replicas": 1,
        "workers": 1,
        "resources": {"cpu": "200m", "memory": "512Mi", "memoryLimit": "1Gi"},
    },
    "gateway": {
        "istioVersion": "1.30.3",
        "domain": "localtest.me",  # public DNS: *.localtest.me resolves to 127.0.0.1
        "serviceType": "LoadBalancer",  # clouds; minikube and existing clusters override it below
        "replicas": 1,
        "istiodResources": {"cpu": "100m", "memory": "256Mi", "memoryLimit": "1Gi"},
        # an explicit CPU limit: the gateway chart keeps its own 2000m otherwise (modules/gateway)
        "gatewayResources": {"cpu": "50m", "memory": "128Mi", "cpuLimit": "1", "memoryLimit": "512Mi"},
        "tls": {"enabled": False, "issuer": "selfsigned", "certManagerVersion": "v1.20.2"},
    },
    "serving": {
        "engine": "seldon",
        "seldon": {
            "version": "1.17.1",
            "mlserverImage": MLSERVER_IMAGE,
            "mlflowRuntime": "mlops_mlserver.MLflowRuntime",
            "managerResources": {"cpu": "100m", "memory": "128Mi", "cpuLimit": "500m", "memoryLimit": "300Mi"},
            "executorResources": {"cpu": "100m", "memory": "128Mi", "cpuLimit": "500m", "memoryLimit": "512Mi"},
        },
    },
    "monitoring": {
        "chartVersion": "83.6.0",
        "retention": "2d",
        "resources": {
            "prometheus": {"cpu": "200m", "memory": "512Mi", "memoryLimit": "1536Mi"},
            "alertmanager": {"cpu": "10m", "memory": "32Mi", "memoryLimit": "128Mi"},
            "grafana": {"cpu": "50m", "memory": "128Mi", "memoryLimit": "384Mi"},
            "sidecar": {"cpu": "10m", "memory": "64Mi", "memoryLimit": "128Mi"},
            "operator": {"cpu": "50m", "memory": "64Mi", "memoryLimit": "256Mi"},
            "kubeStateMetrics": {"cpu": "20m", "memory": "64Mi", "memoryLimit": "256Mi"},
            "nodeExporter": {"cpu": "10m", "memory": "32Mi", "memoryLimit": "128Mi"},
            "small": {"cpu": "10m", "memory": "32Mi", "memoryLimit": "128Mi"},
        },
    },
    "workloads": {
        "timeZone": "Europe/Madrid",  # the energy source's site; CronJobs run at local time
        "pushgatewayImage": PUSHGATEWAY_IMAGE,
        "pushgatewayResources": {"cpu": "10m", "memory": "32Mi", "memoryLimit": "128Mi"},
        "energy": {
            "image": {"repository": "mlops-stack/energy", "tag": "0.1.0"},
            "schedule": "0 11 * * *",
            "monitorSchedule": "0 10 * * *",
            "ingestSchedule": "30 0 * * *",  # demo: yesterday's synthetic readings, before the monitor
            "demoData": True,
            "retrain": RETRAIN_OFF,
        },
        "neo": {"image": {"repository": "mlops-stack/neo", "tag": "0.1.0"}, "retrain": RETRAIN_OFF},
        "mnist": {"image": {"repository": "mlops-stack/mnist", "tag": "0.1.0"}, "epochs": 10, "retrain": RETRAIN_OFF},
        "retraining": {"image": RETRAINING_IMAGE,
                       "resources": {"cpu": "10m", "memory": "96Mi", "memoryLimit": "256Mi"}},
    },
    # the project's images (infra/images.py): `make up` loads them into minikube (local), `pulumi up`
    # builds and pushes them (build, existing clusters), or the stack names pushed ones (prebuilt)
    "images": {"mode": "prebuilt"},  # platforms: unset = the node pools' architectures (infra/images.py)
    "ci": {
        "runners": {
            "enabled": False,
            "scaleSetName": "mlops-stack",
            "minRunners": 0,
            "maxRunners": 2,
            "chartVersion": "0.14.2",
            "runnerImage": RUNNER_IMAGE,
            "deployScope": "serving",
            "resources": {"cpu": "250m", "memory": "512Mi", "memoryLimit": "2Gi"},
            "controllerResources": {"cpu": "20m", "memory": "64Mi", "memoryLimit": "256Mi"},
        },
    },
}

ENVIRONMENT: dict[str, dict[str, Any]] = {
    "dev": {
        "gcp": {
            "regional": False,
            "releaseChannel": "REGULAR",
            "nodePools": {
                "system": {"machineType": "e2-standard-2", "minNodes": 1, "maxNodes": 2},
                "workload": {"machineType": "e2-standard-4", "minNodes": 0, "maxNodes": 2, "spot": True},
            },
            "database": {"tier": "db-f1-micro", "storageGi": 10, "highAvailability": False},
            "noncurrentVersionDays": 7,
        },
        "aws": {
            "zones": ["a", "b"],
            "natGateways": "single",
            "nodePools": {
                "system": {"machineType": "t3.large", "minNodes": 1, "maxNodes": 2},
                "workload": {"machineType": "t3.large", "minNodes": 1, "maxNodes": 2, "spot": True},
            },
            "database": {"instanceClass": "db.t4g.micro", "storageGi": 20, "maxStorageGi": 50,
                         "highAvailability": False},
            "logRetentionDays": 7,
            "noncurrentVersionDays": 7,
        },
    },
    "staging": {
        "database": {"storageGi": 20, "instances": 2, "backup": {"enabled": True}},
        "objectStore": {"storageGi": 50, "replicas": 3},
        "mlflow": {"replicas": 2},
        "gateway": {"tls": {"enabled": True}},
        "monitoring": {"retention": "7d", "storageGi": 20},
        "gcp": {
            "regional": False,
            "releaseChannel": "REGULAR",
            "nodePools": {
                "system": {"machineType": "e2-standard-4", "minNodes": 1, "maxNodes": 3},
                "workload": {"machineType": "e2-standard-4", "minNodes": 0, "maxNodes": 4, "spot": True},
            },
            "database": {"tier": "db-custom-1-3840", "storageGi": 20, "highAvailability": False},
            "noncurrentVersionDays": 30,
        },
        "aws": {
            "zones": ["a", "b"],
            "natGateways": "single",
            "nodePools": {
                "system": {"machineType": "m6i.large", "minNodes": 1, "maxNodes": 3},
                "workload": {"machineType": "m6i.large", "minNodes": 1, "maxNodes": 4, "spot": True},
            },
            "database": {"instanceClass": "db.t4g.small", "storageGi": 20, "maxStorageGi": 100,
                         "highAvailability": False},
            "logRetentionDays": 30,
            "noncurrentVersionDays": 30,
        },
    },
    "prod": {
        "database": {
            "storageGi": 50,
            # a primary and two standbys on three nodes; a commit waits for one of the standbys
            "instances": 3,
            "synchronous": 1,
            "antiAffinity": "required",
            "resources": {"cpu": "500m", "memory": "1Gi", "memoryLimit": "2Gi"},
            "backup": {"enabled": True, "retentionDays": 30},
        },
        "objectStore": {
            "storageGi": 200,
            "replicas": 3,
            "resources": {"cpu": "250m", "memory": "512Mi", "memoryLimit": "1Gi"},
        },
        "mlflow": {
            "replicas": 2,
            "workers": 2,
            "resources": {"cpu": "500m", "memory": "1Gi", "memoryLimit": "2Gi"},
        },
        "gateway": {"replicas": 2, "tls": {"enabled": True}},
        "monitoring": {
            "retention": "15d",
            "storageGi": 50,
            "resources": {"prometheus": {"cpu": "500m", "memory": "2Gi", "memoryLimit": "4Gi"}},
        },
        "gcp": {
            "regional": True,
            "releaseChannel": "STABLE",
            "nodePools": {  # per zone: a regional cluster has three
                "system": {"machineType": "e2-standard-4", "minNodes": 1, "maxNodes": 2, "diskGi": 100},
                "workload": {"machineType": "n2-standard-4", "minNodes": 1, "maxNodes": 5, "diskGi": 100},
            },
            "database": {"tier": "db-custom-2-7680", "storageGi": 50, "highAvailability": True},
            "noncurrentVersionDays": 90,
        },
        "aws": {
            "zones": ["a", "b", "c"],
            "natGateways": "perZone",
            "nodePools": {
                "system": {"machineType": "m6i.xlarge", "minNodes": 2, "maxNodes": 4, "diskGi": 100},
                "workload": {"machineType": "m6i.xlarge", "minNodes": 2, "maxNodes": 10, "diskGi": 100},
            },
            "database": {"instanceClass": "db.m6g.large", "storageGi": 50, "maxStorageGi": 500,
                         "highAvailability": True},
            "logRetentionDays": 90,
            "noncurrentVersionDays": 90,
        },
    },
}

PLATFORM: dict[str, dict[str, Any]] = {
    # no load-balancer provisioner by default (kubernetes.loadBalancers), so the gateway is not a
    # LoadBalancer: minikube reaches it through `kubectl port-forward` (scripts/up.sh), bare metal
    # on fixed node ports (docs/decisions/0005-gateway-exposure.md)
    "minikube": {"images": {"mode": "local"}, "kubernetes": {"context": "minikube", "storageClass": "standard"},
                 "gateway": {"serviceType": "ClusterIP"}},
    "existing": {"images": {"mode": "build"}, "gateway": {"serviceType": "NodePort"}},
    "gke": {"images": {"mode": "build"}, "kubernetes": {"storageClass": "standard-rwo", "loadBalancers": True}},  # GKE's default pd-balanced CSI class
    "eks": {"images": {"mode": "build"}, "kubernetes": {"storageClass": "gp3", "loadBalancers": True}},  # created by the EKS platform as the default class
}

# The config section each cloud platform reads; the other cloud's section is dropped from the defaults.
CLOUD_SECTION = {"gke": "gcp", "eks": "aws"}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge nested dicts; values in `override` win, lists and scalars are replaced whole."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def with_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """The stack file's values layered over the defaults of its platform and environment.

    Unknown platform/environment values fall back to no layer; validation then reports them.
    """
    platform = str(raw.get("platform"))
    layered = copy.deepcopy(BASE)
    layered = deep_merge(layered, ENVIRONMENT.get(str(raw.get("environment")), {}))
    layered = deep_merge(layered, PLATFORM.get(platform, {}))
    for section in set(CLOUD_SECTION.values()) - {CLOUD_SECTION.get(platform)}:
        layered.pop(section, None)
    return deep_merge(layered, raw)
