"""Declares the whole platform for one `StackConfig`."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from infra.config import StackConfig
from infra.platforms import make_platform
from modules.mlflow import Mlflow, MlflowArgs
from modules.namespaces import Namespaces, NamespacesArgs
from modules.platform.contract import BucketAccess


def declare(config: StackConfig) -> None:
    platform = make_platform(config)
    cluster = platform.cluster()
    k8s_opts = pulumi.ResourceOptions(providers=[cluster.provider])
    ns = config.namespaces
    namespaces = Namespaces(
        "namespaces",
        NamespacesArgs({
            "platform": (ns.platform, "restricted"),
            "mlflow": (ns.mlflow, "restricted"),
            "serving": (ns.serving, "baseline"),
            "monitoring": (ns.monitoring, "baseline"),
        }),
        opts=k8s_opts,
    )
    mlflow_access = BucketAccess(
        client="mlflow", namespace=namespaces.names["mlflow"], service_account="mlflow",
        buckets=["artifacts", "datasets"],
    )
    database, object_store = platform.data_services(cluster, namespaces.names["platform"], [mlflow_access])

    admin_password = _mlflow_admin_password(config)
    mlflow = Mlflow(
        "mlflow",
        MlflowArgs(
            namespace=namespaces.names["mlflow"],
            image=config.mlflow.image.ref,
            database=database,
            artifacts=object_store,
            admin_username=config.mlflow.admin_username,
            admin_password=admin_password,
            replicas=config.mlflow.replicas,
            workers=config.mlflow.workers,
            resources=config.mlflow.resources.to_k8s(),
            default_permission=config.mlflow.default_permission,
            service_account_annotations=platform.identity_annotations(mlflow_access),
        ),
        opts=k8s_opts,
    )

    pulumi.export("platform", config.platform)
    pulumi.export("environment", config.environment)
    pulumi.export("clusterName", cluster.name)
    pulumi.export("namespaces", namespaces.names)
    pulumi.export("buckets", dict(object_store.buckets))
    pulumi.export("mlflowUrl", mlflow.url)
    pulumi.export("mlflowPortForward", mlflow.port_forward)
    pulumi.export("mlflowAdminUsername", config.mlflow.admin_username)
    pulumi.export("mlflowAdminPassword", admin_password)
    if cluster.kubeconfig is not None:
        pulumi.export("kubeconfig", cluster.kubeconfig)
    if platform.registry_url is not None:
        pulumi.export("registryUrl", platform.registry_url)


def _mlflow_admin_password(config: StackConfig) -> pulumi.Output[str]:
    """The configured secret, or a generated one kept in the stack state (also a secret)."""
    if config.mlflow.admin_password is not None:
        return pulumi.Output.secret(config.mlflow.admin_password.get_secret_value())
    generated = random.RandomPassword(
        "mlflow-admin-password", length=24, special=False,
        opts=pulumi.ResourceOptions(protect=config.protected),
    )
    return pulumi.Output.secret(generated.result)
