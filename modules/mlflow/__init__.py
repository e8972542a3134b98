"""MLflow tracking server + model registry. Knows nothing about which cloud it runs on.

- metadata in PostgreSQL (`Database`), auth users in a second database of the same server;
- artifacts proxied (`--serve-artifacts`): clients talk only to MLflow, never to the bucket;
- MLflow's basic auth (`--app-name mlops-basic-auth`: its app with a cheaper run lookup), admin
  password from a Pulumi secret;
- Prometheus metrics (`--expose-prometheus`) on `/metrics`;
- schema migrations of both databases (tracking and auth) in a Job that runs before the
  Deployment rolls: a server then finds both at head and runs no DDL, so replicas never race;
- verified credentials cached per worker for AUTH_CACHE_TTL_SECONDS (docs/decisions/0011).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from modules import kube
from modules.platform.contract import Database, ObjectStore

PORT = 5000
UID = 10001  # the non-root user of modules/mlflow/image/Dockerfile
AUTH_DATABASE = "mlflow_auth"
# MLflow 3.17 starts a job runner and seven Huey consumers when its backend is a database
# (measured: 10 processes, 1.86 GiB PSS at idle); the platform runs no server-side jobs (prompt
# optimisation, scorers), so the server stays 2 processes. The tests start it with the same.
SERVER_SETTINGS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
# basic-auth's own cache of successful checks (keyed by user + HMAC of the password; failures are
# never cached): a changed or removed password is refused everywhere within this time
AUTH_CACHE_TTL_SECONDS = 30
# MLflow's basic-auth app with a cheaper run → experiment lookup (image/auth_plugin, decision 0011)
AUTH_APP = "mlops-basic-auth"
# both migrations, in order; the auth one is the step `mlflow server` would otherwise run on start
MIGRATE_COMMAND = ('mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI" && '
                   'exec python -m mlflow.server.auth db upgrade --url "$MLFLOW_AUTH_DATABASE_URI"')


@dataclass(frozen=True)
class MlflowArgs:
    namespace: pulumi.Input[str]
    image: pulumi.Input[str]  # a stack-built image is an Output (its digest is known after the push)
    database: Database
    artifacts: ObjectStore
    admin_username: str
    admin_password: pulumi.Input[str]  # a secret
    replicas: int = 1
    workers: int = 1
    resources: dict[str, Any] = field(default_factory=dict)
    default_permission: str = "READ"
    service_account_annotations: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    client: str = "mlflow"  # name of this client's credentials in `artifacts.credentials`
    external_hosts: tuple[str, ...] = ()  # names it is reached by through the gateway
    placement: Mapping[str, Any] = field(default_factory=dict)  # Placement.pod_spec(): which nodes


def _postgres_uri(db: Database, database: str) -> pulumi.Output[str]:
    return pulumi.Output.format(
        "postgresql+psycopg2://{0}:{1}@{2}:{3}/{4}?sslmode={5}",
        db.username,
        pulumi.Output.from_input(db.password).apply(lambda p: quote(p, safe="")),
        db.host,
        db.port,
        database,
        db.sslmode,
    )


def auth_ini(database_uri: str, default_permission: str, cache_ttl_seconds: int = AUTH_CACHE_TTL_SECONDS) -> str:
    """The basic-auth app's config; the admin user comes from MLFLOW_AUTH_ADMIN_* env vars."""
    return (
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = {database_uri}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        f"auth_cache_ttl_seconds = {cache_ttl_seconds}\n"
    )


def server_command(workers: int, host: str = "0.0.0.0", port: int = PORT,
                   metrics_dir: str = "/tmp/prometheus") -> list[str]:
    """The server's command line; the integration tests start exactly this against real services."""
    return [
        "mlflow", "server",
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
        "--serve-artifacts",
        "--app-name", AUTH_APP,
        "--expose-prometheus", metrics_dir,
    ]


def allowed_hosts(service: str, namespace: str, external: tuple[str, ...] = ()) -> str:
    """Host headers MLflow accepts (its DNS-rebinding guard, fnmatch patterns).

    - the gateway names, with any port (a port-forward or NodePort puts one in the Host header);
    - the Service's in-cluster names and loopback (port-forward, MLflow's own `0.0.0.0:5000`);
    - any host *at the server port*: only clients on the pod network send that (Prometheus and
      kubelet dial the pod IP, which is not always RFC 1918: GKE and EKS can use other ranges, and
      IPv6), while a browser reaches MLflow only through the gateway or a local port-forward.
    """
    names = [*external, service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
             f"{service}.{namespace}.svc.cluster.local", "localhost", "127.0.0.1", "[[]::1]", "0.0.0.0"]
    hosts = [n.replace("[[]", "[") for n in names] + [f"{n}:*" for n in names] + [f"*:{PORT}"]
    return ",".join(hosts)


class Mlflow(pulumi.ComponentResource):
    """Tracking server + registry; `url` is its in-cluster address."""

    url: pulumi.Output[str]
    port_forward: pulumi.Output[str]

    def __init__(self, name: str, args: MlflowArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:mlflow:Mlflow", name, None, opts)
        flask_key = random.RandomPassword(f"{name}-flask-secret-key", length=48, special=False, opts=kube.child(self))
        creds = args.artifacts.credentials.get(args.client)
        secret_data: dict[str, pulumi.Input[str]] = {
            "backend-store-uri": _postgres_uri(args.database, args.database.name),
            "auth-database-uri": _postgres_uri(args.database, AUTH_DATABASE),
            "auth.ini": _postgres_uri(args.database, AUTH_DATABASE).apply(
                lambda uri: auth_ini(uri, args.default_permission)
            ),
            "admin-password": args.admin_password,
            "flask-secret-key": flask_key.result,
        }
        if creds is not None:
            secret_data["aws-access-key-id"] = creds.access_key_id
            secret_data["aws-secret-access-key"] = creds.secret_access_key
        secret = k8s.core.v1.Secret(
            f"{name}-config",
            metadata=kube.metadata("mlflow-server", args.namespace, "tracking"),
            type="Opaque",
            string_data={k: pulumi.Output.secret(v) for k, v in secret_data.items()},
            opts=kube.child(self),
        )
        account = k8s.core.v1.ServiceAccount(
            f"{name}-account",
            metadata=kube.metadata("mlflow", args.namespace, "tracking",
                                   annotations=dict(args.service_account_annotations)),
            automount_service_account_token=False,
            opts=kube.child(self),
        )
        env = self._env(args, secret.metadata.name, with_static_keys=creds is not None)
        after = [args.artifacts.ready] if args.artifacts.ready is not None else []
        migrate = k8s.batch.v1.Job(
            f"{name}-migrate",
            metadata=kube.metadata("mlflow-db-upgrade", args.namespace, "tracking"),
            spec={
                "backoff_limit": 6,
                "template": {
                    "metadata": {"labels": kube.labels("mlflow-db-upgrade", "tracking")},
                    "spec": {
                        "restart_policy": "OnFailure",
                        "service_account_name": account.metadata.name,
                        "automount_service_account_token": False,
                        "security_context": kube.pod_security(UID),
                        **args.placement,
                        "containers": [
                            {
                                "name": "db-upgrade",
                                "image": args.image,
                                "command": ["sh", "-c", MIGRATE_COMMAND],
                                "env": self._migrate_env(secret.metadata.name),
                                "resources": args.resources,
                                "security_context": kube.CONTAINER_SECURITY,
                                "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
                            }
                        ],
                        "volumes": [{"name": "tmp", "empty_dir": {}}],
                    },
                },
            },
            # a new image tag means new migrations: replace the Job so it runs again
            opts=kube.child(self, depends_on=after, replace_on_changes=["spec"], delete_before_replace=True),
        )
        deployment = k8s.apps.v1.Deployment(
            f"{name}-server",
            metadata=kube.metadata("mlflow", args.namespace, "tracking"),
            spec={
                "replicas": args.replicas,
                "selector": {"match_labels": kube.selector("mlflow")},
                "strategy": {"type": "RollingUpdate", "rolling_update": {"max_unavailable": 0, "max_surge": 1}},
                "template": {
                    "metadata": {"labels": kube.labels("mlflow", "tracking")},
                    "spec": self._pod(args, account.metadata.name, secret.metadata.name, env),
                },
            },
            opts=kube.child(self, depends_on=[migrate]),
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=kube.metadata("mlflow", args.namespace, "tracking"),
            spec={
                "type": "ClusterIP",
                "selector": kube.selector("mlflow"),
                "ports": [{"name": "http", "port": PORT, "target_port": "http"}],
            },
            opts=kube.child(self),
        )
        # the server port from anywhere in the cluster (gateway, Prometheus, training Jobs, CI);
        # nothing else, and nothing at all to the migration Job
        kube.ingress_policy(f"{name}-server", args.namespace, "tracking", "mlflow",
                            [{"from_": [{"namespace_selector": {}}], "ports": [{"port": PORT, "protocol": "TCP"}]}],
                            kube.child(self))
        kube.ingress_policy(f"{name}-migrate", args.namespace, "tracking", "mlflow-db-upgrade", [], kube.child(self))
        if args.replicas > 1:
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb",
                metadata=kube.metadata("mlflow", args.namespace, "tracking"),
                spec={"min_available": 1, "selector": {"match_labels": kube.selector("mlflow")}},
                opts=kube.child(self),
            )
        self.url = pulumi.Output.concat("http://", service.metadata.name, ".", args.namespace, f".svc.cluster.local:{PORT}")
        self.port_forward = pulumi.Output.concat(
            "kubectl -n ", args.namespace, " port-forward svc/", service.metadata.name, f" {PORT}:{PORT}"
        )
        self.register_outputs({"url": self.url, "port_forward": self.port_forward,
                               "deployment": deployment.metadata.name})

    @staticmethod
    def _migrate_env(secret: pulumi.Input[str]) -> list[dict[str, Any]]:
        """Only the two database URIs: without MLFLOW_AUTH_CONFIG_PATH the auth package reads its
        bundled defaults on import, so the Job needs no auth.ini (the `--url` names the database)."""
        return [kube.secret_env("MLFLOW_BACKEND_STORE_URI", secret, "backend-store-uri"),
                kube.secret_env("MLFLOW_AUTH_DATABASE_URI", secret, "auth-database-uri"),
                *kube.env({"HOME": "/tmp"})]

    @staticmethod
    def _env(args: MlflowArgs, secret: pulumi.Input[str], with_static_keys: bool) -> list[dict[str, Any]]:
        env = [
            kube.secret_env("MLFLOW_BACKEND_STORE_URI", secret, "backend-store-uri"),
            kube.secret_env("MLFLOW_AUTH_ADMIN_PASSWORD", secret, "admin-password"),
            kube.secret_env("MLFLOW_FLASK_SERVER_SECRET_KEY", secret, "flask-secret-key"),
            *kube.env({
                "MLFLOW_AUTH_ADMIN_USERNAME": args.admin_username,
                "MLFLOW_AUTH_CONFIG_PATH": "/etc/mlflow/auth.ini",
                "MLFLOW_SERVER_ALLOWED_HOSTS": pulumi.Output.from_input(args.namespace).apply(
                    lambda ns: allowed_hosts("mlflow", ns, args.external_hosts)
                ),
                "HOME": "/tmp",
                **SERVER_SETTINGS,
            }),
        ]
        if args.artifacts.endpoint_url is not None:
            env += kube.env({"MLFLOW_S3_ENDPOINT_URL": args.artifacts.endpoint_url,
                             "AWS_DEFAULT_REGION": args.artifacts.region})
        if with_static_keys:
            env += [
                kube.secret_env("AWS_ACCESS_KEY_ID", secret, "aws-access-key-id"),
                kube.secret_env("AWS_SECRET_ACCESS_KEY", secret, "aws-secret-access-key"),
            ]
        return env

    @staticmethod
    def _pod(args: MlflowArgs, account: pulumi.Input[str], secret: pulumi.Input[str],
             env: list[dict[str, Any]]) -> dict[str, Any]:
        pod: dict[str, Any] = {
            "service_account_name": account,
            # MLflow never calls the Kubernetes API; workload identity needs no mounted token either
            # (tests/test_gke_workload_identity.py)
            "automount_service_account_token": False,
            "security_context": kube.pod_security(UID),
            **args.placement,
            "containers": [
                {
                    "name": "mlflow",
                    "image": args.image,
                    "command": server_command(args.workers),
                    "args": ["--artifacts-destination", args.artifacts.url("artifacts")],
                    "ports": [{"name": "http", "container_port": PORT}],
                    "env": env,
                    "resources": args.resources,
                    "security_context": kube.CONTAINER_SECURITY,
                    "readiness_probe": kube.http_probe("/health", "http", period=10),
                    "liveness_probe": {**kube.http_probe("/health", "http", period=20, failures=6),
                                       "initial_delay_seconds": 30},
                    "volume_mounts": [
                        {"name": "auth", "mount_path": "/etc/mlflow", "read_only": True},
                        {"name": "tmp", "mount_path": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {"name": "auth", "secret": {"secret_name": secret, "items": [{"key": "auth.ini", "path": "auth.ini"}]}},
                {"name": "tmp", "empty_dir": {}},
            ],
        }
        if args.replicas > 1:
            pod["topology_spread_constraints"] = [{
                "max_skew": 1,
                "topology_key": "kubernetes.io/hostname",
                "when_unsatisfiable": "ScheduleAnyway",
                "label_selector": {"match_labels": kube.selector("mlflow")},
            }]
        return pod
