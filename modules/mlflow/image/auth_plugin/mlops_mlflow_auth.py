"""MLflow's basic-auth app, with two lookups of its per-request permission check made cheap.

Measured (docs/decisions/0011), an authenticated metric write spent more time in MLflow 3.17.2's
permission gate than in the write itself:
- the run's experiment came from the tracking store's full `get_run` (the run with its metrics,
  params and tags, then its datasets, model inputs and outputs: seven queries). A run never moves
  to another experiment, so this app asks for that one column and remembers it per worker. It
  does so only where the experiment is all MLflow reads (`_run_requirement` reads
  `run.info.experiment_id`), and only without workspaces, whose lookups filter by workspace;
- the user's row was read twice per request (admin flag, then id). It is kept for the credential
  cache's own TTL (`auth_cache_ttl_seconds`; off when that is 0), and dropped wherever MLflow drops
  cached credentials (password, admin flag, deletion), so it is exactly as fresh as they are.

Which permissions a request needs, and the user's grants, are still MLflow's code and a query per
request: a grant or revocation counts from the next request, on every replica.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any, Callable

from cachetools import LRUCache, TTLCache
from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
from mlflow.server import app as flask_app
from mlflow.server import auth
from mlflow.store.tracking.dbmodels.models import SqlRun
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

# one id pair per run: 100,000 runs cost a few MiB per worker
_EXPERIMENT_OF_RUN: LRUCache[str, str] = LRUCache(maxsize=100_000)
_LOCK = threading.Lock()
_upstream_fetch_or_none = auth._fetch_or_none


def experiment_of_run(store: SqlAlchemyStore, run_id: str) -> str | None:
    """The experiment a run belongs to; None when there is no such run (never remembered)."""
    with _LOCK:
        known = _EXPERIMENT_OF_RUN.get(run_id)
    if known is not None:
        return known
    with store.ManagedSessionMaker() as session:
        row = session.query(SqlRun.experiment_id).filter(SqlRun.run_uuid == run_id).one_or_none()
    if row is None:
        return None
    with _LOCK:
        _EXPERIMENT_OF_RUN[run_id] = str(row[0])
    return str(row[0])


def _fetch_or_none(fetch: Callable[[str], Any], resource_id: str) -> Any | None:
    """MLflow's `_fetch_or_none`, answering a SQL store's `get_run` with the run's experiment only."""
    if (getattr(fetch, "__func__", None) is SqlAlchemyStore.get_run and not MLFLOW_ENABLE_WORKSPACES.get()):
        experiment_id = experiment_of_run(fetch.__self__, resource_id)
        return None if experiment_id is None else SimpleNamespace(info=SimpleNamespace(experiment_id=experiment_id))
    return _upstream_fetch_or_none(fetch, resource_id)


def _cache_users(ttl_seconds: int, max_size: int) -> None:
    users: TTLCache[str, Any] = TTLCache(maxsize=max_size, ttl=ttl_seconds)
    get_user, invalidate = auth.store.get_user, auth._invalidate_user_auth_cache

    def cached_get_user(username: str):
        with _LOCK:
            user = users.get(username)
        if user is None:
            user = get_user(username)  # an unknown user raises, and is never remembered
            with _LOCK:
                users[username] = user
        return user

    def invalidate_user(username: str) -> None:
        with _LOCK:
            users.pop(username, None)
        invalidate(username)

    auth.store.get_user = cached_get_user
    auth._invalidate_user_auth_cache = invalidate_user


def create_app(app=flask_app):
    """The `mlflow.app` entry point: MLflow's basic-auth `create_app` with the lookups above."""
    auth._fetch_or_none = _fetch_or_none
    if auth.auth_config.auth_cache_ttl_seconds > 0:
        _cache_users(auth.auth_config.auth_cache_ttl_seconds, auth.auth_config.auth_cache_max_size)
    return auth.create_app(app)
