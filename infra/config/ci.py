"""`ci`: keyless GitHub identities and in-cluster runners."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from infra.config.base import DNS_LABEL, Image, Model, Resources


class GithubConfig(Model):
    """The repository whose workflows get keyless cloud identities (gke/eks): GitHub's OIDC tokens
    are trusted only for these subjects, see docs of `ciIdentities` in the README."""

    repository: str = Field(description="owner/name of the GitHub repository")
    deploy_ref: str = Field(default="refs/heads/main", description="ref whose pushes build and deploy models")
    infra_environment: str | None = Field(
        default=None, description="GitHub environment of the `pulumi up` job; default 'production' on prod, "
                                  "else the stack's environment")
    models_environment: str | None = Field(
        default=None, description="GitHub environment gating champion promotion; default models-<stack>")
    aws_oidc_provider_arn: str | None = Field(
        default=None, description="eks: the account's GitHub OIDC provider (one per account); unset = "
                                  "looked up by its URL, or created with createAwsOidcProvider")
    create_aws_oidc_provider: bool = Field(
        default=False, description="eks: create the account's GitHub OIDC provider (only where none exists: "
                                   "an account has one per issuer URL)")

    @field_validator("repository")
    @classmethod
    def _repository(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}", v):
            raise ValueError("'owner/name' of a GitHub repository is allowed")
        return v

    @field_validator("deploy_ref")
    @classmethod
    def _ref(cls, v: str) -> str:
        if not re.fullmatch(r"refs/(heads|tags)/[A-Za-z0-9._/-]+", v):
            raise ValueError("a full ref such as 'refs/heads/main' is allowed")
        return v

    @field_validator("aws_oidc_provider_arn")
    @classmethod
    def _provider(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(
                r"arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:oidc-provider/token\.actions\.githubusercontent\.com", v):
            raise ValueError("the ARN of the account's GitHub OIDC provider is allowed: "
                             "arn:aws:iam::<account>:oidc-provider/token.actions.githubusercontent.com")
        return v

    @model_validator(mode="after")
    def _one_provider(self) -> GithubConfig:
        if self.create_aws_oidc_provider and self.aws_oidc_provider_arn is not None:
            raise ValueError("createAwsOidcProvider true creates a provider while awsOidcProviderArn names an "
                             "existing one: allowed one of them")
        return self


BUILDKIT_IMAGE = {"repository": "docker.io/moby/buildkit", "tag": "v0.32.2-rootless"}
BUILDER_RESOURCES = {"cpu": "500m", "memory": "1Gi", "memoryLimit": "4Gi"}


class BuilderConfig(Model):
    """A rootless BuildKit daemon beside the runners: image builds without a Docker daemon on the
    runner (docs/decisions/0013-in-cluster-image-builds.md). Only the runner pods reach it."""

    enabled: bool = Field(default=False, description="run `buildkitd` in namespace arc-builder for the runners' jobs")
    image: Image = Field(default=Image(**BUILDKIT_IMAGE),
                         description="a moby/buildkit `-rootless` image (runs as UID 1000)")
    resources: Resources = Resources.model_validate(BUILDER_RESOURCES)
    insecure_registries: list[str] = Field(
        default=[],
        description="registries buildkitd pushes to over plain HTTP, e.g. minikube's registry addon "
                    "'registry.kube-system.svc.cluster.local:80'")

    @field_validator("image")
    @classmethod
    def _rootless(cls, v: Image) -> Image:
        if not v.tag.endswith("-rootless"):
            raise ValueError(f"tag {v.tag!r}: a '-rootless' BuildKit image is allowed (the builder runs as "
                             "UID 1000, never root)")
        return v

    @field_validator("insecure_registries")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        bad = [host for host in v if not re.fullmatch(r"[a-z0-9.-]+(:[0-9]{1,5})?", host)]
        if bad:
            raise ValueError(f"{bad}: registry hosts with an optional port are allowed, no scheme or path")
        return v


class RunnersConfig(Model):
    """A self-hosted runner scale set inside the cluster (actions-runner-controller), for clusters
    GitHub cannot reach: runners connect out to GitHub, nothing connects in."""

    enabled: bool = Field(default=False, description="install the controller and a runner scale set")
    github_config_url: str | None = Field(
        default=None, description="https://github.com/<owner> or https://github.com/<owner>/<repo>")
    github_token: SecretStr | None = Field(
        default=None, description="secret; a token allowed to register runners there")
    scale_set_name: str = Field(description="`runs-on:` label of the jobs that use these runners")
    min_runners: int = Field(ge=0, le=50, description="idle runners kept warm")
    max_runners: int = Field(ge=1, le=50, description="upper bound of concurrent jobs")
    chart_version: str = Field(description="gha-runner-scale-set(-controller) chart version")
    runner_image: Image
    deploy_scope: Literal["serving", "cluster"] = Field(
        description="what jobs may change: 'serving' (deploy models) or 'cluster' (cluster-admin, for pulumi up)")
    resources: Resources
    controller_resources: Resources
    builder: BuilderConfig = BuilderConfig()

    @field_validator("github_config_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"https://github\.com/[A-Za-z0-9-]+(/[A-Za-z0-9._-]+)?", v):
            raise ValueError("https://github.com/<owner> or https://github.com/<owner>/<repo> is allowed")
        return v

    @field_validator("scale_set_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not DNS_LABEL.match(v):
            raise ValueError("a DNS label (lowercase letters, digits, '-') is allowed")
        return v

    @model_validator(mode="after")
    def _complete(self) -> RunnersConfig:
        if self.min_runners > self.max_runners:
            raise ValueError(f"minRunners {self.min_runners} is above maxRunners {self.max_runners}")
        if self.enabled and (self.github_config_url is None or self.github_token is None):
            raise ValueError("enabled runners need githubConfigUrl and githubToken (a secret)")
        if self.builder.enabled and not self.enabled:
            raise ValueError("builder.enabled builds for the in-cluster runners: set ci.runners.enabled true too")
        return self


class CiConfig(Model):
    github: GithubConfig | None = Field(default=None, description="keyless CI identities (gke/eks only)")
    runners: RunnersConfig
