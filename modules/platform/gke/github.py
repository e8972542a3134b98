"""GitHub Actions → Google Cloud without keys: a Workload Identity Federation pool whose provider
accepts only tokens of the configured repository, and one Google service account per CI purpose
that only the exact token subjects of that purpose may impersonate. The model pipeline reads what it
needs from one Secret Manager secret that only `models` may access, never the Pulumi state
(docs/decisions/0010-ci-stack-outputs.md)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from modules.ci.github import ISSUER, CiIdentities, GithubOidc
from modules.platform.gke.names import unique_name

# Project roles per purpose. `pulumi up` of the whole platform creates networks, clusters, IAM
# bindings and service accounts: that is administration of the project, so `infra` is powerful and
# trusts only the protected GitHub environment. `models` gets nothing project-wide beyond reading
# cluster endpoints; its registry and in-cluster rights are granted on those resources.
PROJECT_ROLES = {
    "preview": ["roles/viewer", "roles/iam.securityReviewer"],
    "infra": ["roles/editor", "roles/resourcemanager.projectIamAdmin", "roles/iam.serviceAccountAdmin",
              "roles/iam.workloadIdentityPoolAdmin", "roles/container.admin", "roles/storage.admin",
              "roles/artifactregistry.admin", "roles/serviceusage.serviceUsageAdmin"],
    "models": ["roles/container.clusterViewer"],
}


@dataclass(frozen=True)
class GithubFederationArgs:
    project: str
    prefix: str
    github: GithubOidc
    repository: gcp.artifactregistry.Repository  # `models` pushes here


def principal(pool_name: pulumi.Input[str], subject: str) -> pulumi.Output[str]:
    """The IAM member for exactly one token subject of the pool."""
    return pulumi.Output.concat("principal://iam.googleapis.com/", pool_name, "/subject/", subject)


class GithubFederation(pulumi.ComponentResource):
    identities: CiIdentities
    models_member: pulumi.Output[str]  # IAM member of the `models` account

    def __init__(self, name: str, args: GithubFederationArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:gcp:GithubFederation", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # pool and provider IDs stay reserved ~30 days after a delete: a new destroy+up draws new ones
        pool = gcp.iam.WorkloadIdentityPool(
            name, project=args.project, workload_identity_pool_id=unique_name(f"{name}-pool", f"{args.prefix}-github",
                                                                              child),
            display_name="GitHub Actions", description=f"Jobs of {args.github.repository}", opts=child)
        provider = gcp.iam.WorkloadIdentityPoolProvider(
            name, project=args.project, workload_identity_pool_id=pool.workload_identity_pool_id,
            workload_identity_pool_provider_id=unique_name(f"{name}-provider", "github", child),
            display_name="GitHub Actions OIDC",
            attribute_mapping={"google.subject": "assertion.sub", "attribute.repository": "assertion.repository",
                               "attribute.ref": "assertion.ref"},
            # tokens of any other repository are refused before any binding is looked at
            attribute_condition=f"assertion.repository == '{args.github.repository}'",
            oidc=gcp.iam.WorkloadIdentityPoolProviderOidcArgs(issuer_uri=ISSUER),
            opts=child)
        emails: dict[str, pulumi.Output[str]] = {}
        for purpose, subjects in args.github.subjects().items():
            emails[purpose] = self._account(name, args, pool.name, purpose, subjects, PROJECT_ROLES[purpose])
        self.models_member = pulumi.Output.concat("serviceAccount:", emails["models"])
        repository = args.repository
        gcp.artifactregistry.RepositoryIamMember(
            f"{name}-models-push", project=args.project, location=repository.location,
            repository=repository.repository_id, role="roles/artifactregistry.writer",
            member=self.models_member, opts=child)
        self.identities = CiIdentities(
            outputs={"workloadIdentityProvider": provider.name,
                     **{f"{purpose}ServiceAccount": email for purpose, email in emails.items()}},
            # GKE authenticates a Google service account to Kubernetes as a user named by its e-mail
            model_deployer={"kind": "User", "name": emails["models"], "api_group": "rbac.authorization.k8s.io"},
        )
        self.register_outputs(dict(self.identities.outputs))

    def _account(self, name: str, args: GithubFederationArgs, pool_name: pulumi.Output[str], purpose: str,
                 subjects: Sequence[str], roles: Sequence[str]) -> pulumi.Output[str]:
        child = pulumi.ResourceOptions(parent=self)
        account = gcp.serviceaccount.Account(
            f"{name}-{purpose}", project=args.project, account_id=f"{args.prefix}-ci-{purpose}",
            display_name=f"GitHub Actions ({purpose}) of {args.github.repository}", opts=child)
        for i, subject in enumerate(subjects):
            gcp.serviceaccount.IAMMember(
                f"{name}-{purpose}-subject-{i}", service_account_id=account.name,
                role="roles/iam.workloadIdentityUser", member=principal(pool_name, subject), opts=child)
        for role in roles:
            gcp.projects.IAMMember(f"{name}-{purpose}-{role.rsplit('/', 1)[-1]}", project=args.project, role=role,
                                   member=account.member, opts=child)
        return account.email



TENANT_ROLES = ["roles/container.clusterViewer"]  # a kubeconfig; what it may do inside is the tenant Role


@dataclass(frozen=True)
class TenantFederationArgs:
    project: str
    prefix: str
    tenants: Mapping[str, Sequence[str]]  # tenant -> its repositories (owner/name)
    deploy_ref: str  # refs/heads/main: only jobs on this ref of those repositories


def tenant_account_id(prefix: str, tenant: str) -> str:
    """`<prefix>-t-<tenant>` within Google's 30 characters, else a digest that stays unique."""
    account = f"{prefix}-t-{tenant}"
    return account if len(account) <= 30 else f"{prefix[:12]}-t-{hashlib.sha256(account.encode()).hexdigest()[:12]}"


class TenantFederation(pulumi.ComponentResource):
    """Keyless CI for tenants' repositories: a pool of its own (the platform's provider admits only the
    platform repository) whose provider admits the tenants' repository owners, and per tenant a Google
    service account that only `repo:<repository>:ref:<deploy_ref>` of its own repositories may
    impersonate. GKE authenticates it as a user named by its e-mail, bound to the tenant Role alone."""

    identities: dict[str, CiIdentities]

    def __init__(self, name: str, args: TenantFederationArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:gcp:TenantFederation", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        owners = sorted({r.split("/", 1)[0] for repositories in args.tenants.values() for r in repositories})
        pool = gcp.iam.WorkloadIdentityPool(
            name, project=args.project, workload_identity_pool_id=unique_name(f"{name}-pool", f"{args.prefix}-tenants",
                                                                              child),
            display_name="Tenant repositories", description="GitHub Actions of the tenants' repositories", opts=child)
        provider = gcp.iam.WorkloadIdentityPoolProvider(
            name, project=args.project, workload_identity_pool_id=pool.workload_identity_pool_id,
            workload_identity_pool_provider_id=unique_name(f"{name}-provider", "github", child),
            display_name="GitHub Actions OIDC (tenants)",
            attribute_mapping={"google.subject": "assertion.sub", "attribute.repository": "assertion.repository"},
            attribute_condition=f"assertion.repository_owner in {json.dumps(owners)}",
            oidc=gcp.iam.WorkloadIdentityPoolProviderOidcArgs(issuer_uri=ISSUER),
            opts=child)
        self.identities = {}
        for tenant, repositories in args.tenants.items():
            account = gcp.serviceaccount.Account(
                f"{name}-{tenant}", project=args.project, account_id=tenant_account_id(args.prefix, tenant),
                display_name=f"GitHub Actions of tenant {tenant}", opts=child)
            for i, repository in enumerate(repositories):
                gcp.serviceaccount.IAMMember(
                    f"{name}-{tenant}-subject-{i}", service_account_id=account.name,
                    role="roles/iam.workloadIdentityUser",
                    member=principal(pool.name, f"repo:{repository}:ref:{args.deploy_ref}"), opts=child)
            for role in TENANT_ROLES:
                gcp.projects.IAMMember(f"{name}-{tenant}-{role.rsplit('/', 1)[-1]}", project=args.project, role=role,
                                       member=account.member, opts=child)
            self.identities[tenant] = CiIdentities(
                outputs={"workloadIdentityProvider": provider.name, "serviceAccount": account.email},
                model_deployer={"kind": "User", "name": account.email, "api_group": "rbac.authorization.k8s.io"})
        self.register_outputs({})


@dataclass(frozen=True)
class ModelsValuesArgs:
    project: str
    secret_id: str
    reader: pulumi.Input[str]  # IAM member allowed to read (the `models` account)
    values: pulumi.Input[str]  # a secret JSON document


class ModelsValues(pulumi.ComponentResource):
    """What the model pipeline needs (MLflow URL and its own login, kubeconfig, registry) as one secret
    that only `models` may access; `reference` (projects/<project>/secrets/<id>) is what it reads."""

    reference: pulumi.Output[str]

    def __init__(self, name: str, args: ModelsValuesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:gcp:ModelsValues", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        secret = gcp.secretmanager.Secret(
            name, project=args.project, secret_id=args.secret_id,
            replication=gcp.secretmanager.SecretReplicationArgs(auto=gcp.secretmanager.SecretReplicationAutoArgs()),
            opts=child)
        gcp.secretmanager.SecretVersion(name, secret=secret.id, secret_data=pulumi.Output.secret(args.values),
                                        opts=child)
        # on the secret only: a project-wide accessor role would open every secret of the project
        gcp.secretmanager.SecretIamMember(name, project=args.project, secret_id=secret.secret_id,
                                          role="roles/secretmanager.secretAccessor", member=args.reader, opts=child)
        self.reference = pulumi.Output.concat("projects/", args.project, "/secrets/", secret.secret_id)
        self.register_outputs({"reference": self.reference})
