"""GitHub Actions → Google Cloud without keys: a Workload Identity Federation pool whose provider
accepts only tokens of the configured repository, and one Google service account per CI purpose
that only the exact token subjects of that purpose may impersonate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from modules.ci.github import ISSUER, CiIdentities, GithubOidc

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

    def __init__(self, name: str, args: GithubFederationArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:gcp:GithubFederation", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        pool = gcp.iam.WorkloadIdentityPool(
            name, project=args.project, workload_identity_pool_id=f"{args.prefix}-github",
            display_name="GitHub Actions", description=f"Jobs of {args.github.repository}", opts=child)
        provider = gcp.iam.WorkloadIdentityPoolProvider(
            name, project=args.project, workload_identity_pool_id=pool.workload_identity_pool_id,
            workload_identity_pool_provider_id="github",
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
        repository = args.repository
        gcp.artifactregistry.RepositoryIamMember(
            f"{name}-models-push", project=args.project, location=repository.location,
            repository=repository.repository_id, role="roles/artifactregistry.writer",
            member=pulumi.Output.concat("serviceAccount:", emails["models"]), opts=child)
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

