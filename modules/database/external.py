"""An existing PostgreSQL (`database.external`): the stack makes no database server, only the
credentials Secret its clients read and the Job that creates the extra databases there (when the
owner may; otherwise the DBA makes them and the Job checks they exist). Its backups are the
server's own: the stack archives nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_kubernetes as k8s

from modules import kube
from modules.database.databases import DatabasesJobArgs, databases_job
from modules.platform.cloud import ready_value
from modules.platform.contract import Database


@dataclass(frozen=True)
class ExternalPostgresArgs:
    namespace: pulumi.Input[str]
    host: str
    port: int
    sslmode: Literal["disable", "require", "verify-full"]
    database: str
    username: str
    password: pulumi.Input[str]  # a Pulumi secret (database.external.password)
    client_image: str  # psql for the databases Job
    extra_databases: Sequence[str] = ()


class ExternalPostgres(pulumi.ComponentResource):
    database: Database

    def __init__(self, name: str, args: ExternalPostgresArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:database:ExternalPostgres", name, None, opts)
        credentials = k8s.core.v1.Secret(
            f"{name}-credentials",
            metadata=kube.metadata("postgres-credentials", args.namespace, "database"),
            type="kubernetes.io/basic-auth",
            string_data={"username": args.username, "password": args.password},
            opts=kube.child(self),
        )
        databases = [databases_job(name, DatabasesJobArgs(
            namespace=args.namespace, image=args.client_image, host=args.host, port=args.port,
            database=args.database, databases=args.extra_databases, credentials_secret=credentials.metadata.name,
            sslmode=args.sslmode), kube.child(self))] if args.extra_databases else []
        self.database = Database(
            host=ready_value(args.host, *databases), port=args.port, name=args.database, username=args.username,
            password=pulumi.Output.secret(args.password), sslmode=args.sslmode,
            extra_databases=tuple(args.extra_databases),
        )
        self.register_outputs({"host": args.host})
