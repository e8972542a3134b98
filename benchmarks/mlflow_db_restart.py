"""Benchmark: MLflow writers while PostgreSQL restarts (issue 17), on the platform's server.

Run: `.venv/bin/python benchmarks/mlflow_db_restart.py [--seconds 60] [--writers 8] [--restart-after 20]`.
The scenario of tests/test_mlflow_auth.py (its last test), longer: the platform's MLflow command line and
auth.ini (credential cache), one local PostgreSQL restarted with a fast shutdown mid-run, writers
logging metrics as a non-admin user through a session that retries like MLflow's client. Reports
the writes acknowledged before/after the restart, the 5xx answers the retries absorbed, the errors a
client saw, lost and duplicated writes, and how long writing stalled. Writes
benchmarks/results/mlflow_db_restart.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.mlflow_servers import ADMIN, Databases, MetricWriter, migrate, retrying_session, servers  # noqa: E402
from tests.services import postgres, s3_api  # noqa: E402

BUCKET = "mlflow-artifacts"
WRITER = ("trainer", "trainer-password-123")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--restart-after", type=float, default=20)
    args = parser.parse_args()
    dbs = Databases("mlruns", "mlflow_auth")
    with postgres((dbs.tracking, dbs.auth)) as db, s3_api((BUCKET,)) as s3:
        if (migrated := migrate(db, dbs)).returncode != 0:
            raise SystemExit(f"migration failed: {migrated.stderr[-2000:]}")
        with servers(db, dbs, s3, BUCKET) as [mlflow]:
            requests.post(f"{mlflow.url}/api/2.0/mlflow/users/create", auth=ADMIN, timeout=30,
                          json={"username": WRITER[0], "password": WRITER[1]}).raise_for_status()
            experiment = retrying_session(WRITER).post(f"{mlflow.url}/api/2.0/mlflow/experiments/create",
                                                       json={"name": "restart"}, timeout=30).json()["experiment_id"]
            writers = [MetricWriter(mlflow.url, WRITER, experiment, time.monotonic() + args.seconds)
                       for _ in range(args.writers)]
            for w in writers:
                w.start()
            time.sleep(args.restart_after)
            before = sum(w.acked for w in writers)
            started = time.monotonic()
            db.restart()
            restart_s = time.monotonic() - started
            # the stall: from the restart until the writers, together, are acknowledged again
            while sum(w.acked for w in writers) == before and any(w.is_alive() for w in writers):
                time.sleep(0.05)
            stall_s = time.monotonic() - started
            for w in writers:
                w.join()
            stored = [len(requests.get(f"{mlflow.url}/api/2.0/mlflow/metrics/get-history", auth=ADMIN, timeout=60,
                                       params={"run_id": w.run_id, "metric_key": "loss"}).json().get("metrics", []))
                      for w in writers]
    acked = [w.acked for w in writers]
    result = {
        "acknowledged_before_restart": before, "acknowledged_after_restart": sum(acked) - before,
        "writes_per_s": round(sum(acked) / args.seconds, 1), "server_5xx_retried": sum(w.retried_5xx for w in writers),
        "client_errors": sum(len(w.errors) for w in writers),
        "lost": sum(max(0, a - s) for a, s in zip(acked, stored)),
        "duplicated": sum(max(0, s - a) for a, s in zip(acked, stored)),
        "pg_restart_s": round(restart_s, 2), "stall_s": round(stall_s, 2),
    }
    report = {"date": date.today().isoformat(),
              "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}",
              "load_average_1m": round(os.getloadavg()[0], 1),
              "seconds": args.seconds, "writers": args.writers, "restart_after_s": args.restart_after, **result}
    out = ROOT / "benchmarks" / "results" / "mlflow_db_restart.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
