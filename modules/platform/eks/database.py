"""RDS for PostgreSQL in private subnets: not publicly accessible, encrypted with the platform key,
TLS forced, reachable only from the cluster's security group.

A protected instance leaves a final snapshot when it is destroyed; its identifier ends in a random
suffix made with the instance (kept in the stack state), so a re-created stack's next destroy does
not collide with the snapshot the previous one left.

RDS creates one database (`db_name`); the others MLflow needs (its auth database) are created by a
small Kubernetes Job running `psql` from inside the cluster, idempotently, with the password read
from a Secret. The host the platform hands out resolves only once that Job has completed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

from modules import kube
from modules.platform.cloud import PORT, ManagedPostgresSpec, ready_value
from modules.platform.contract import Database

POSTGRES_UID = 999  # the `postgres` user of the official image, which carries psql
JOB_RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}

_CREATE_DATABASES = """set -eu
for db in $EXTRA_DATABASES; do
  exists=$(psql -v ON_ERROR_STOP=1 -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")
  if [ "$exists" != 1 ]; then
    psql -v ON_ERROR_STOP=1 -c "CREATE DATABASE \\"$db\\""
  fi
done
"""


@dataclass(frozen=True)
class RdsArgs:
    identifier: str
    spec: ManagedPostgresSpec
    max_storage_gi: int
    subnet_ids: Sequence[pulumi.Input[str]]
    vpc_id: pulumi.Input[str]
    client_security_group: pulumi.Input[str]  # the cluster's: nodes and Pods
    key_arn: pulumi.Input[str]
    namespace: pulumi.Input[str]  # where the database Job runs
    client_image: str  # postgres image with psql
    k8s_provider: k8s.Provider
    protect: bool


class RdsPostgres(pulumi.ComponentResource):
    database: Database

    def __init__(self, name: str, args: RdsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:aws:RdsPostgres", name, None, opts)
        spec = args.spec
        child = pulumi.ResourceOptions(parent=self)
        password = random.RandomPassword(f"{name}-password", length=32, special=False,
                                         opts=pulumi.ResourceOptions(parent=self, protect=args.protect))
        group = aws.ec2.SecurityGroup(f"{name}", vpc_id=args.vpc_id, description=f"{args.identifier}: PostgreSQL",
                                      tags={"Name": args.identifier}, opts=child)
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-from-cluster", security_group_id=group.id, referenced_security_group_id=args.client_security_group,
            ip_protocol="tcp", from_port=PORT, to_port=PORT, description="PostgreSQL from the EKS cluster",
            opts=child)
        subnets = aws.rds.SubnetGroup(f"{name}", name=args.identifier, subnet_ids=list(args.subnet_ids), opts=child)
        final_snapshot = None
        if args.protect:
            suffix = random.RandomId(f"{name}-final-snapshot", byte_length=4, opts=child)
            final_snapshot = pulumi.Output.concat(args.identifier, "-final-", suffix.hex)
        major = spec.version.split(".")[0]
        parameters = aws.rds.ParameterGroup(
            f"{name}", name=f"{args.identifier}-{major}", family=f"postgres{major}",
            parameters=[aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1")], opts=child)
        instance = aws.rds.Instance(
            name,
            identifier=args.identifier,
            engine="postgres",
            engine_version=spec.version,
            auto_minor_version_upgrade=True,
            instance_class=spec.size,
            allocated_storage=spec.storage_gi,
            max_allocated_storage=args.max_storage_gi,
            storage_type="gp3",
            storage_encrypted=True,
            kms_key_id=args.key_arn,
            db_name=spec.database,
            username=spec.username,
            password=password.result,
            port=PORT,
            db_subnet_group_name=subnets.name,
            parameter_group_name=parameters.name,
            vpc_security_group_ids=[group.id],
            publicly_accessible=False,
            multi_az=spec.high_availability,
            backup_retention_period=spec.backup_days,
            copy_tags_to_snapshot=True,
            deletion_protection=args.protect,
            skip_final_snapshot=not args.protect,
            final_snapshot_identifier=final_snapshot,  # required unless skip_final_snapshot
            enabled_cloudwatch_logs_exports=["postgresql", "upgrade"],
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        created = self._create_databases(name, args, instance.address, password.result)
        self.database = Database(
            host=ready_value(instance.address, *created),
            port=PORT,
            name=spec.database,
            username=spec.username,
            password=pulumi.Output.secret(password.result),
            sslmode="require",
            extra_databases=tuple(spec.extra_databases),
        )
        self.register_outputs({"host": self.database.host})

    def _create_databases(self, name: str, args: RdsArgs, host: pulumi.Output[str],
                          password: pulumi.Output[str]) -> list[k8s.batch.v1.Job]:
        """The Job creating `extra_databases` (none if there are none)."""
        if not args.spec.extra_databases:
            return []
        opts = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        secret = k8s.core.v1.Secret(
            f"{name}-admin",
            metadata=kube.metadata("postgres-admin", args.namespace, "database"),
            type="Opaque",
            string_data={"password": pulumi.Output.secret(password)},
            opts=opts,
        )
        job = k8s.batch.v1.Job(
            f"{name}-create-databases",
            metadata=kube.metadata("postgres-create-databases", args.namespace, "database"),
            spec={
                "backoff_limit": 6,
                "template": {
                    "metadata": {"labels": kube.labels("postgres-create-databases", "database")},
                    "spec": {
                        "restart_policy": "OnFailure",
                        "automount_service_account_token": False,
                        "security_context": kube.pod_security(POSTGRES_UID),
                        "containers": [{
                            "name": "psql",
                            "image": args.client_image,
                            "command": ["sh", "-c", _CREATE_DATABASES],
                            "env": [
                                *kube.env({"PGHOST": host, "PGPORT": str(PORT), "PGUSER": args.spec.username,
                                           "PGDATABASE": args.spec.database, "PGSSLMODE": "require",
                                           "EXTRA_DATABASES": " ".join(args.spec.extra_databases)}),
                                kube.secret_env("PGPASSWORD", secret.metadata.name, "password"),
                            ],
                            "resources": JOB_RESOURCES,
                            "security_context": kube.CONTAINER_SECURITY,
                        }],
                    },
                },
            },
            # a Job's template is immutable: a changed image or host replaces the Job, which runs again
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(replace_on_changes=["spec"],
                                                                           delete_before_replace=True)),
        )
        kube.ingress_policy(f"{name}-create-databases", args.namespace, "database", "postgres-create-databases", [],
                            opts)
        return [job]
