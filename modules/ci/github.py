"""Keyless CI: which GitHub Actions jobs may act as which cloud identity.

GitHub signs an OIDC token per job whose `sub` names the repository and either the ref or, when
the job runs in a GitHub environment, the environment. Each identity below trusts exact subjects,
so a pull request can never use the deploy identities, and protected environments (required
reviewers) gate the ones that change production.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi

ISSUER = "https://token.actions.githubusercontent.com"
AUDIENCE_AWS = "sts.amazonaws.com"

# purpose -> what its workflow does with it
PURPOSES = {
    "preview": "infra-preview: `pulumi preview --diff` on pull requests (read-only)",
    "infra": "infra-deploy: `pulumi up` of this stack (administers the project/account)",
    "models": "model-pipeline: push images to the stack's registry, deploy models in the serving namespace",
}


@dataclass(frozen=True)
class GithubOidc:
    repository: str  # owner/name
    deploy_ref: str  # refs/heads/main
    infra_environment: str  # GitHub environment of the `pulumi up` job
    models_environment: str  # GitHub environment of the champion promotion job
    aws_provider_arn: str | None = None  # reuse the account's GitHub OIDC provider

    def subjects(self) -> dict[str, list[str]]:
        """Token subjects each identity trusts (GitHub's default `sub` claim format)."""
        repo = f"repo:{self.repository}"
        return {
            "preview": [f"{repo}:pull_request"],
            "infra": [f"{repo}:environment:{self.infra_environment}"],
            "models": [f"{repo}:ref:{self.deploy_ref}", f"{repo}:environment:{self.models_environment}"],
        }


@dataclass(frozen=True)
class CiIdentities:
    """What a cloud platform made for the workflows."""

    outputs: Mapping[str, pulumi.Input[str]]  # values for the repository's Actions variables
    # RBAC subject of the `models` identity inside the cluster (a User or a Group)
    model_deployer: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
