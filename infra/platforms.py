"""Picks the platform implementation for a config: the one place that branches on `platform`."""

from __future__ import annotations

from infra.config import StackConfig
from modules.mlflow import AUTH_DATABASE
from modules.platform.contract import Platform
from modules.platform.incluster import InClusterPlatform, InClusterSettings


def make_platform(config: StackConfig) -> Platform:
    if config.platform in ("minikube", "existing"):
        return InClusterPlatform(config.platform, _in_cluster_settings(config))
    # parse_stack_config rejects the others before anything is declared
    raise ValueError(f"platform {config.platform!r} is not implemented")


def _in_cluster_settings(config: StackConfig) -> InClusterSettings:
    db, store, k = config.database, config.object_store, config.kubernetes
    backup = None
    if db.backup.enabled:
        backup = {
            "schedule": db.backup.schedule,
            "time_zone": db.backup.time_zone,
            "retention_days": db.backup.retention_days,
            "image": db.backup.image.ref,
        }
    return InClusterSettings(
        context=k.context,
        kubeconfig=k.kubeconfig,
        storage_class=k.storage_class,
        protect=config.protected,
        database_name=db.name,
        database_user=db.username,
        database_image=db.image.ref,
        database_storage_gi=db.storage_gi,
        database_resources=db.resources.to_k8s(),
        extra_databases=[AUTH_DATABASE],
        backup=backup,
        store_image=store.image.ref,
        store_storage_gi=store.storage_gi,
        store_resources=store.resources.to_k8s(),
        buckets=store.buckets.model_dump(),
        exporter_image=db.exporter_image.ref,
        monitoring_namespace=config.namespaces.monitoring,
    )
