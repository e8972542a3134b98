"""Benchmark: MLflow write throughput without auth, with MLflow's basic auth, and with the platform's.

Run: `.venv/bin/python benchmarks/mlflow_throughput.py [--seconds 60] [--writers 8]`. Needs the
PostgreSQL server binaries and `make test-deps`. One local PostgreSQL; per variant a fresh pair of
databases, the migration Job's command, then one `mlflow server` with the platform's command line
(`--workers` as the dev stack, 1):

- `no-auth`: without `--app-name` (the baseline);
- `basic-auth`: MLflow's app, `auth_cache_ttl_seconds = 0` (its default: a PBKDF2 check per request);
- `basic-auth + cache`: MLflow's app with the platform's auth.ini (`modules.mlflow.auth_ini`, cache
  TTL 30 s);
- `mlops-basic-auth`: what the platform runs, that auth.ini and `--app-name mlops-basic-auth`
  (modules/mlflow/image/auth_plugin: one query for a run's experiment instead of `get_run`).

`--writers` threads, each its own run, POST `runs/log-metric` as a non-admin user who owns the
experiment (the permission checks a training Job pays) for `--seconds` in all, split into `--rounds`
bursts that visit the variants in turn (so others' load falls on all alike); a write counts when the
server answers 200. Afterwards every run's metric history is read back: `lost` = acknowledged
writes missing from it. Writes benchmarks/results/mlflow_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modules.mlflow import AUTH_APP, AUTH_CACHE_TTL_SECONDS  # noqa: E402
from tests.mlflow_servers import ADMIN, Databases, migrate, servers  # noqa: E402
from tests.services import postgres, s3_api  # noqa: E402

BUCKET = "mlflow-artifacts"
WRITER = ("trainer", "trainer-password-123")
# variant: (auth, credential cache TTL, --app-name)
VARIANTS = {"no-auth": (False, 0, AUTH_APP), "basic-auth": (True, 0, "basic-auth"),
            "basic-auth + cache": (True, AUTH_CACHE_TTL_SECONDS, "basic-auth"),
            "mlops-basic-auth": (True, AUTH_CACHE_TTL_SECONDS, AUTH_APP)}


@dataclass
class Result:
    variant: str
    writes: int
    writes_per_s: float
    errors: int
    lost: int
    p50_ms: float
    p99_ms: float


def _setup(url: str, auth: bool) -> tuple[requests.auth.HTTPBasicAuth | None, str]:
    """The writer user (non-admin) and an experiment it creates, so it holds MANAGE on it."""
    writer = requests.auth.HTTPBasicAuth(*WRITER) if auth else None
    if auth:
        requests.post(f"{url}/api/2.0/mlflow/users/create", auth=ADMIN, timeout=30,
                      json={"username": WRITER[0], "password": WRITER[1]}).raise_for_status()
    response = requests.post(f"{url}/api/2.0/mlflow/experiments/create", auth=writer, timeout=30,
                             json={"name": "throughput"})
    response.raise_for_status()
    return writer, response.json()["experiment_id"]


def _writer(url: str, auth, experiment: str, until: float, out: list) -> None:
    session = requests.Session()
    session.auth = auth
    run = session.post(f"{url}/api/2.0/mlflow/runs/create", timeout=30,
                       json={"experiment_id": experiment}).json()["run"]["info"]["run_id"]
    acked, errors, latencies = 0, 0, []
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            response = session.post(f"{url}/api/2.0/mlflow/runs/log-metric", timeout=30, json={
                "run_id": run, "key": "loss", "value": 1.0 / (acked + 1), "timestamp": int(time.time() * 1000),
                "step": acked})
            ok = response.status_code == 200
        except requests.RequestException:
            ok = False
        latencies.append(time.monotonic() - started)
        acked, errors = acked + ok, errors + (not ok)
    out.append((run, acked, errors, latencies))


def _stored(url: str, auth, run: str) -> int:
    response = requests.get(f"{url}/api/2.0/mlflow/metrics/get-history", auth=auth, timeout=60,
                            params={"run_id": run, "metric_key": "loss", "max_results": 1000000})
    response.raise_for_status()
    return len(response.json().get("metrics", []))


def _burst(url: str, auth, experiment: str, seconds: float, writers: int, out: list) -> None:
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=_writer, args=(url, auth, experiment, until, out)) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def measure(variants: list[str], db, s3: str, seconds: float, writers: int, workers: int, rounds: int) -> list[Result]:
    """All variants' servers up at once, then `rounds` rounds of one burst each, in turn: load from
    anything else on the machine then falls on every variant alike."""
    with ExitStack() as stack:
        started = {}
        for variant in variants:
            auth, ttl, app = VARIANTS[variant]
            suffix = variant.replace(" + ", "_").replace("-", "_")
            dbs = Databases(f"mlruns_{suffix}", f"auth_{suffix}")
            migrated = migrate(db, dbs)
            if migrated.returncode != 0:
                raise SystemExit(f"migration failed: {migrated.stderr[-2000:]}")
            [server] = stack.enter_context(servers(db, dbs, s3, BUCKET, auth=auth, cache_ttl=ttl, workers=workers, app=app))
            started[variant] = (server.url, *_setup(server.url, auth), [])
        for _ in range(rounds):
            for url, writer, experiment, out in started.values():
                _burst(url, writer, experiment, seconds / rounds, writers, out)
        results = []
        for variant, (url, writer, _, out) in started.items():
            lost = sum(acked - min(acked, _stored(url, writer, run)) for run, acked, _, _ in out)
            latencies = sorted(t for *_, lat in out for t in lat)
            writes = sum(acked for _, acked, _, _ in out)
            results.append(Result(variant, writes, round(writes / seconds, 1), sum(e for _, _, e, _ in out), lost,
                                  round(latencies[len(latencies) // 2] * 1000, 1),
                                  round(latencies[int(len(latencies) * 0.99)] * 1000, 1)))
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6, help="bursts per variant, taken in turn")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    names = [f"{kind}_{v.replace(' + ', '_').replace('-', '_')}" for v in args.variants for kind in ("mlruns", "auth")]
    with postgres(tuple(names)) as db, s3_api((BUCKET,)) as s3:
        results = measure(args.variants, db, s3, args.seconds, args.writers, args.workers, args.rounds)
    print("| variant | writes/s | writes | errors | lost | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.variant} | {r.writes_per_s} | {r.writes} | {r.errors} | {r.lost} | {r.p50_ms} | {r.p99_ms} |")
    report = {"date": date.today().isoformat(),
              "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores, "
                         f"Python {platform.python_version()}",
              "load_average_1m": round(__import__('os').getloadavg()[0], 1),  # others' load skews the figures
              "seconds": args.seconds, "rounds": args.rounds, "writers": args.writers, "workers": args.workers,
              "cache_ttl_seconds": AUTH_CACHE_TTL_SECONDS, "results": [asdict(r) for r in results]}
    out = ROOT / "benchmarks" / "results" / "mlflow_throughput.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
