"""GitHub Actions → AWS without keys: the account's IAM OIDC provider for GitHub and one role per
CI purpose whose trust policy accepts only the exact token subjects of that purpose (repository +
ref or protected environment). Cluster access goes through EKS access entries, not aws-auth.

An account has one OIDC provider per issuer URL, usually made once by whoever first used GitHub
Actions there: the stack looks it up by URL (`pulumi up` fails clearly if there is none) and creates
it only when told to (`ci.github.createAwsOidcProvider`), or takes its ARN as configured."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from modules.ci.github import AUDIENCE_AWS, ISSUER, CiIdentities, GithubOidc

AWS_POLICY = "arn:aws:iam::aws:policy/"
ACCESS_POLICY = "arn:aws:eks::aws:cluster-access-policy/"
MODEL_DEPLOYERS = "mlops-model-deployers"  # Kubernetes group of the `models` role (RBAC in serving)
# `pulumi up` of the whole platform creates VPCs, IAM roles, KMS keys and clusters: administration
# of the account, so `infra` trusts only the protected GitHub environment.
MANAGED_POLICIES = {"preview": ["ReadOnlyAccess"], "infra": ["AdministratorAccess"], "models": []}
CLUSTER_ACCESS = {"preview": "AmazonEKSAdminViewPolicy", "infra": "AmazonEKSClusterAdminPolicy"}
ECR_PUSH = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:CompleteLayerUpload",
            "ecr:InitiateLayerUpload", "ecr:PutImage", "ecr:UploadLayerPart", "ecr:DescribeImages"]


@dataclass(frozen=True)
class GithubRolesArgs:
    prefix: str
    github: GithubOidc
    cluster: aws.eks.Cluster
    repositories: Sequence[aws.ecr.Repository]  # `models` pushes here
    key_arn: pulumi.Input[str]  # the repositories' KMS key
    create_oidc_provider: bool = False  # else the account's existing provider (configured ARN or lookup)


def trust_policy(provider_arn: str, subjects: Sequence[str]) -> str:
    host = ISSUER.removeprefix("https://")
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {f"{host}:aud": AUDIENCE_AWS, f"{host}:sub": list(subjects)}},
        }],
    })


def _models_policy(values: list[str]) -> str:
    cluster_arn, key_arn, *repository_arns = values
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "RegistryLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {"Sid": "Push", "Effect": "Allow", "Action": ECR_PUSH, "Resource": repository_arns},
            {"Sid": "RegistryKey", "Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
             "Resource": key_arn},
            {"Sid": "Kubeconfig", "Effect": "Allow", "Action": "eks:DescribeCluster", "Resource": cluster_arn},
        ],
    })


class GithubRoles(pulumi.ComponentResource):
    identities: CiIdentities
    models_role: aws.iam.Role
    provider_arn: pulumi.Input[str]  # the account's GitHub OIDC provider (tenant roles trust it too)

    def __init__(self, name: str, args: GithubRolesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:aws:GithubRoles", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        provider_arn: pulumi.Input[str]
        if args.github.aws_provider_arn:
            provider_arn = args.github.aws_provider_arn
        elif args.create_oidc_provider:
            provider_arn = aws.iam.OpenIdConnectProvider(
                name, url=ISSUER, client_id_lists=[AUDIENCE_AWS], opts=child).arn
        else:
            provider_arn = aws.iam.get_open_id_connect_provider_output(
                url=ISSUER, opts=pulumi.InvokeOutputOptions(parent=self)).arn
        self.provider_arn = provider_arn
        roles = {}
        for purpose, subjects in args.github.subjects().items():
            role = aws.iam.Role(
                f"{name}-{purpose}", name=f"{args.prefix}-ci-{purpose}", max_session_duration=3600,
                description=f"GitHub Actions ({purpose}) of {args.github.repository}",
                assume_role_policy=pulumi.Output.from_input(provider_arn).apply(
                    lambda arn, subjects=subjects: trust_policy(arn, subjects)),
                opts=child)
            for policy in MANAGED_POLICIES[purpose]:
                aws.iam.RolePolicyAttachment(f"{name}-{purpose}-{policy}", role=role.name,
                                             policy_arn=AWS_POLICY + policy, opts=child)
            roles[purpose] = role
        self.models_role = roles["models"]
        aws.iam.RolePolicy(
            f"{name}-models", role=roles["models"].name, name="push-and-deploy",
            policy=pulumi.Output.all(args.cluster.arn, args.key_arn, *(r.arn for r in args.repositories))
            .apply(_models_policy),
            opts=child)
        for purpose, policy in CLUSTER_ACCESS.items():
            entry = aws.eks.AccessEntry(f"{name}-{purpose}", cluster_name=args.cluster.name,
                                        principal_arn=roles[purpose].arn, type="STANDARD", opts=child)
            aws.eks.AccessPolicyAssociation(
                f"{name}-{purpose}", cluster_name=args.cluster.name, principal_arn=roles[purpose].arn,
                policy_arn=ACCESS_POLICY + policy,
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]))
        # `models` has no access policy: its group is bound to the model-deployer Role in serving only
        aws.eks.AccessEntry(f"{name}-models", cluster_name=args.cluster.name, principal_arn=roles["models"].arn,
                            type="STANDARD", kubernetes_groups=[MODEL_DEPLOYERS], opts=child)
        self.identities = CiIdentities(
            outputs={f"{purpose}RoleArn": role.arn for purpose, role in roles.items()},
            model_deployer={"kind": "Group", "name": MODEL_DEPLOYERS, "api_group": "rbac.authorization.k8s.io"},
        )
        self.register_outputs(dict(self.identities.outputs))


def tenant_group(tenant: str) -> str:
    """The Kubernetes group of a tenant's role: bound to the tenant Role in its namespace only."""
    return f"mlops-tenant-{tenant}"


def _describe_cluster_policy(cluster_arn: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "Kubeconfig", "Effect": "Allow", "Action": "eks:DescribeCluster", "Resource": cluster_arn}]})


@dataclass(frozen=True)
class TenantRolesArgs:
    prefix: str
    tenants: Mapping[str, Sequence[str]]  # tenant -> its repositories (owner/name)
    deploy_ref: str  # refs/heads/main: only jobs on this ref of those repositories
    cluster: aws.eks.Cluster
    provider_arn: pulumi.Input[str] | None = None  # else the account's provider, looked up by URL


class TenantRoles(pulumi.ComponentResource):
    """Per tenant an IAM role only `repo:<repository>:ref:<deploy_ref>` of its repositories assume,
    allowed nothing in AWS but a kubeconfig, and an EKS access entry with no access policy whose
    Kubernetes group is bound to the tenant Role in the tenant namespace alone."""

    identities: dict[str, CiIdentities]

    def __init__(self, name: str, args: TenantRolesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:aws:TenantRoles", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        provider_arn = args.provider_arn or aws.iam.get_open_id_connect_provider_output(
            url=ISSUER, opts=pulumi.InvokeOutputOptions(parent=self)).arn
        self.identities = {}
        for tenant, repositories in args.tenants.items():
            subjects = [f"repo:{r}:ref:{args.deploy_ref}" for r in repositories]
            role = aws.iam.Role(
                f"{name}-{tenant}", name=f"{args.prefix}-t-{tenant}", max_session_duration=3600,
                description=f"GitHub Actions of tenant {tenant}",
                assume_role_policy=pulumi.Output.from_input(provider_arn).apply(
                    lambda arn, subjects=subjects: trust_policy(arn, subjects)),
                opts=child)
            aws.iam.RolePolicy(f"{name}-{tenant}", role=role.name, name="kubeconfig",
                               policy=args.cluster.arn.apply(_describe_cluster_policy), opts=child)
            aws.eks.AccessEntry(f"{name}-{tenant}", cluster_name=args.cluster.name, principal_arn=role.arn,
                                type="STANDARD", kubernetes_groups=[tenant_group(tenant)], opts=child)
            self.identities[tenant] = CiIdentities(
                outputs={"roleArn": role.arn},
                model_deployer={"kind": "Group", "name": tenant_group(tenant),
                                "api_group": "rbac.authorization.k8s.io"})
        self.register_outputs({})


@dataclass(frozen=True)
class ModelsValuesArgs:
    name_prefix: str
    reader: aws.iam.Role  # the `models` role; it already may decrypt with `key_arn`
    key_arn: pulumi.Input[str]
    values: pulumi.Input[str]  # a secret JSON document


def _read_values_policy(secret_arn: str) -> str:
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "StackValues", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                       "Resource": secret_arn}],
    })


class ModelsValues(pulumi.ComponentResource):
    """What the model pipeline needs (MLflow URL and its own login, kubeconfig, registry) as one Secrets
    Manager secret that only `models` may read; `reference` (its ARN) is what the pipeline reads. It never
    reads the Pulumi state (docs/decisions/0010-ci-stack-outputs.md)."""

    reference: pulumi.Output[str]

    def __init__(self, name: str, args: ModelsValuesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:aws:ModelsValues", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # a generated suffix and no recovery window: a destroy + up never meets a name still reserved
        secret = aws.secretsmanager.Secret(
            name, name_prefix=args.name_prefix, kms_key_id=args.key_arn, recovery_window_in_days=0,
            description="mlops-stack: values the CI model pipeline reads (no Pulumi state access)", opts=child)
        aws.secretsmanager.SecretVersion(name, secret_id=secret.id, secret_string=pulumi.Output.secret(args.values),
                                         opts=child)
        aws.iam.RolePolicy(name, role=args.reader.name, name="read-stack-values",
                           policy=secret.arn.apply(_read_values_policy), opts=child)
        self.reference = secret.arn
        self.register_outputs({"reference": self.reference})
