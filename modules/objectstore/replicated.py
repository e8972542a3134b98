"""SeaweedFS without a single pod (`objectStore.replicas` ≥ 3; docs/decisions/0001).

The layout of the upstream chart (k8s/charts/seaweedfs), with the flags checked against `weed` 4.47:
- 3 masters in a StatefulSet, Raft among `-peers` (a leader while 2 of 3 run);
- `replicas` volume servers; the masters' `-defaultReplication=001` keeps every volume on two of
  them (same rack, other server), so one can go without losing or blocking a read;
- 2 filers, each with its own embedded store on its own volume: filers whose stores differ
  subscribe to each other's metadata log and apply it (weed/filer/meta_aggregator.go), so the
  bucket and object index survives the loss of a filer pod. A shared SQL store was not taken: the
  database's backups land in this store, which must not need that database to come back;
- 2 S3 gateways (a Deployment) that know both filers (`-filer` takes a list).
Pods of a role are kept on different nodes (required for masters and volume servers, whose point
is to fail apart; preferred for the rest), and a PodDisruptionBudget lets a drain take one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from modules import kube

MASTERS = 3
FILERS = 2
GATEWAYS = 2
REPLICATION = "001"  # one extra copy on another server of the same rack
PORTS = {"master": 9333, "master-grpc": 19333, "volume": 8080, "volume-grpc": 18080, "filer": 8888,
         "filer-grpc": 18888, "s3": 8333, "metrics": 9327}
STORE_LABEL = {"mlops-stack/object-store": "seaweedfs"}  # every SeaweedFS server pod, any role
POD_ENV = [{"name": "POD_NAME", "value_from": {"field_ref": {"field_path": "metadata.name"}}},
           {"name": "NAMESPACE", "value_from": {"field_ref": {"field_path": "metadata.namespace"}}}]


@dataclass(frozen=True)
class Role:
    name: str  # StatefulSet/Deployment and headless Service name
    replicas: int
    ports: Sequence[str]
    args: list[pulumi.Input[str]]
    data_gi: int | None  # a volume per pod at /data, or none
    required_spread: bool


def pod_address(role: str, ordinal: int, namespace: pulumi.Input[str], port: int) -> pulumi.Output[str]:
    """A StatefulSet pod's stable DNS name through its headless Service."""
    return pulumi.Output.concat(f"{role}-{ordinal}.{role}.", namespace, f":{port}")


def addresses(role: str, count: int, namespace: pulumi.Input[str], port: int) -> pulumi.Output[str]:
    return pulumi.Output.concat(*[piece for i in range(count) for piece in
                                  ([","] if i else []) + [pod_address(role, i, namespace, port)]])


def roles(namespace: pulumi.Input[str], volume_servers: int, storage_gi: int, volume_limit_mb: int) -> list[Role]:
    masters = addresses("seaweedfs-master", MASTERS, namespace, PORTS["master"])
    filers = addresses("seaweedfs-filer", FILERS, namespace, PORTS["filer"])
    metrics = f"-metricsPort={PORTS['metrics']}"
    return [
        Role("seaweedfs-master", MASTERS, ["master", "master-grpc", "metrics"], [
            "master", "-mdir=/data", "-ip=$(POD_NAME).seaweedfs-master.$(NAMESPACE)", "-ip.bind=0.0.0.0",
            f"-port={PORTS['master']}", f"-port.grpc={PORTS['master-grpc']}",
            pulumi.Output.concat("-peers=", masters), f"-defaultReplication={REPLICATION}",
            f"-volumeSizeLimitMB={volume_limit_mb}", "-volumePreallocate=false",
            "-telemetry=false",  # on by default: usage reports to seaweedfs.com
            metrics], 1, True),
        Role("seaweedfs-volume", volume_servers, ["volume", "volume-grpc", "metrics"], [
            "volume", "-dir=/data", "-max=0", "-ip=$(POD_NAME).seaweedfs-volume.$(NAMESPACE)", "-ip.bind=0.0.0.0",
            f"-port={PORTS['volume']}", f"-port.grpc={PORTS['volume-grpc']}",
            pulumi.Output.concat("-master=", masters), metrics], storage_gi, True),
        Role("seaweedfs-filer", FILERS, ["filer", "filer-grpc", "metrics"], [
            "filer", "-defaultStoreDir=/data", "-ip=$(POD_NAME).seaweedfs-filer.$(NAMESPACE)", "-ip.bind=0.0.0.0",
            f"-port={PORTS['filer']}", f"-port.grpc={PORTS['filer-grpc']}",
            pulumi.Output.concat("-master=", masters), metrics], 1, False),
        Role("seaweedfs-s3", GATEWAYS, ["s3", "metrics"], [
            "s3", "-ip.bind=0.0.0.0", f"-port={PORTS['s3']}", "-config=/etc/seaweedfs/config.json",
            "-port.iceberg=0", "-port.lance=0",  # catalog APIs the platform does not use: no open port
            pulumi.Output.concat("-filer=", filers), metrics], None, False),
    ]


def master_addresses(namespace: pulumi.Input[str]) -> pulumi.Output[str]:
    """What `weed shell -master` takes: every master, so the bucket Job finds the leader."""
    return addresses("seaweedfs-master", MASTERS, namespace, PORTS["master"])


def _affinity(role: Role) -> dict[str, Any]:
    term = {"label_selector": {"match_labels": kube.selector(role.name)}, "topology_key": "kubernetes.io/hostname"}
    if role.required_spread:
        return {"pod_anti_affinity": {"required_during_scheduling_ignored_during_execution": [term]}}
    return {"pod_anti_affinity": {"preferred_during_scheduling_ignored_during_execution": [
        {"weight": 100, "pod_affinity_term": term}]}}


def _pod(role: Role, image: str, uid: int, resources: dict[str, Any], s3_config: pulumi.Input[str],
         annotations: dict[str, str]) -> dict[str, Any]:
    mounts = [{"name": "tmp", "mount_path": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "empty_dir": {}}]
    if role.data_gi is not None:
        mounts.append({"name": "data", "mount_path": "/data"})
    if role.name == "seaweedfs-s3":
        mounts.append({"name": "s3-config", "mount_path": "/etc/seaweedfs", "read_only": True})
        volumes.append({"name": "s3-config", "secret": {"secret_name": s3_config}})
    first_port = role.ports[0]
    return {
        "metadata": {"labels": {**kube.labels(role.name, "objectstore"), **STORE_LABEL},
                     "annotations": annotations if role.name == "seaweedfs-s3" else {}},
        "spec": {
            "security_context": kube.pod_security(uid),
            "automount_service_account_token": False,
            "affinity": _affinity(role),
            "containers": [{
                "name": "seaweedfs",
                "image": image,
                "args": role.args,
                "env": POD_ENV,
                "ports": [{"name": p, "container_port": PORTS[p]} for p in role.ports],
                "resources": resources,
                "security_context": kube.CONTAINER_SECURITY,
                "readiness_probe": {"tcp_socket": {"port": first_port}, "period_seconds": 10},
                "liveness_probe": {"tcp_socket": {"port": first_port}, "period_seconds": 20,
                                   "failure_threshold": 6, "initial_delay_seconds": 20},
                "volume_mounts": mounts,
            }],
            "volumes": volumes,
        },
    }


def declare(parent: pulumi.Resource, name: str, namespace: pulumi.Input[str], image: str, uid: int,
            resources: dict[str, Any], volume_servers: int, storage_gi: int, volume_limit_mb: int,
            storage_class: str | None, s3_config: pulumi.Input[str], annotations: dict[str, str],
            stateful: pulumi.ResourceOptions) -> tuple[list[pulumi.Resource], k8s.core.v1.Service]:
    """Every role's workload, headless Service and PDB, and the `seaweedfs` S3 Service; returns
    what the bucket Job waits for and that Service."""
    workloads: list[pulumi.Resource] = []
    for role in roles(namespace, volume_servers, storage_gi, volume_limit_mb):
        selector = {"match_labels": kube.selector(role.name)}
        template = _pod(role, image, uid, resources, s3_config, annotations)
        if role.data_gi is None:
            workloads.append(k8s.apps.v1.Deployment(
                f"{name}-{role.name}", metadata=kube.metadata(role.name, namespace, "objectstore"),
                spec={"replicas": role.replicas, "selector": selector, "template": template},
                opts=kube.child(parent)))
        else:
            k8s.core.v1.Service(  # headless: the stable per-pod names of -peers/-master/-filer
                f"{name}-{role.name}-pods", metadata=kube.metadata(role.name, namespace, "objectstore"),
                spec={"cluster_ip": "None", "publish_not_ready_addresses": True, "selector": kube.selector(role.name),
                      "ports": [{"name": p, "port": PORTS[p], "target_port": p} for p in role.ports]},
                opts=kube.child(parent))
            workloads.append(k8s.apps.v1.StatefulSet(
                f"{name}-{role.name}", metadata=kube.metadata(role.name, namespace, "objectstore"),
                spec={"service_name": role.name, "replicas": role.replicas, "selector": selector,
                      "pod_management_policy": "Parallel",  # Raft peers must all start to elect
                      "template": template,
                      "volume_claim_templates": [{"metadata": {"name": "data"}, "spec": {
                          "access_modes": ["ReadWriteOnce"], "storage_class_name": storage_class,
                          "resources": {"requests": {"storage": f"{role.data_gi}Gi"}}}}]},
                opts=stateful))
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-{role.name}-pdb", metadata=kube.metadata(role.name, namespace, "objectstore"),
            spec={"max_unavailable": 1, "selector": selector}, opts=kube.child(parent))
    service = k8s.core.v1.Service(
        f"{name}-service", metadata=kube.metadata("seaweedfs", namespace, "objectstore"),
        spec={"selector": kube.selector("seaweedfs-s3"), "ports": [{"name": "s3", "port": PORTS["s3"], "target_port": "s3"}]},
        opts=kube.child(parent))
    k8s.core.v1.Service(  # what Prometheus scrapes (its ServiceMonitor selects name=seaweedfs): every role
        f"{name}-metrics",
        metadata={**kube.metadata("seaweedfs-metrics", namespace, "objectstore"),
                  "labels": kube.labels("seaweedfs", "objectstore")},
        spec={"cluster_ip": "None", "selector": STORE_LABEL,
              "ports": [{"name": "metrics", "port": PORTS["metrics"], "target_port": "metrics"}]},
        opts=kube.child(parent))
    return workloads, service
