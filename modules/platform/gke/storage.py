"""GCS buckets by purpose and the Artifact Registry repository platform and model images are pushed to.

Buckets: uniform bucket-level access (IAM only, no ACLs), public access prevention, versioning, and
old versions deleted after a while. The repository has immutable tags, so a tag names one image.
The program pushes its own images with the OAuth access token of the identity running Pulumi
(user `oauth2accesstoken`, Artifact Registry's token login): no key is created.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from modules.images import RegistryAuth
from modules.platform.contract import ImageRegistry

TOKEN_USER = "oauth2accesstoken"  # Artifact Registry's username for an OAuth access token


@dataclass(frozen=True)
class BucketsArgs:
    names: Mapping[str, str]  # purpose -> globally unique bucket name
    location: str
    noncurrent_version_days: int
    force_destroy: bool
    protect: bool


class Buckets(pulumi.ComponentResource):
    buckets: dict[str, gcp.storage.Bucket]

    def __init__(self, name: str, args: BucketsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:gcp:Buckets", name, None, opts)
        self.buckets = {
            purpose: gcp.storage.Bucket(
                f"{name}-{purpose}",
                name=bucket,
                location=args.location.upper(),
                storage_class="STANDARD",
                uniform_bucket_level_access=True,
                public_access_prevention="enforced",
                versioning=gcp.storage.BucketVersioningArgs(enabled=True),
                lifecycle_rules=[
                    gcp.storage.BucketLifecycleRuleArgs(
                        action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
                        condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                            with_state="ARCHIVED", days_since_noncurrent_time=args.noncurrent_version_days)),
                    gcp.storage.BucketLifecycleRuleArgs(
                        action=gcp.storage.BucketLifecycleRuleActionArgs(type="AbortIncompleteMultipartUpload"),
                        condition=gcp.storage.BucketLifecycleRuleConditionArgs(age=7)),
                ],
                force_destroy=args.force_destroy,
                opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
            )
            for purpose, bucket in args.names.items()
        }
        self.register_outputs({"buckets": {p: b.name for p, b in self.buckets.items()}})


@dataclass(frozen=True)
class RegistryArgs:
    project: str
    region: str
    repository_id: str
    readers: Mapping[str, pulumi.Input[str]]  # name -> IAM member allowed to pull (the nodes)
    protect: bool


class Registry(pulumi.ComponentResource):
    """A Docker repository; `url` is the prefix images are pushed under: `<url>/<image>:<tag>`."""

    url: pulumi.Output[str]
    repository: gcp.artifactregistry.Repository
    image_registry: ImageRegistry  # the url with push credentials, for the program's image builds

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:gcp:Registry", name, None, opts)
        self.repository = repository = gcp.artifactregistry.Repository(
            name,
            repository_id=args.repository_id,
            location=args.region,
            format="DOCKER",
            description="Model and platform images of mlops-stack",
            docker_config=gcp.artifactregistry.RepositoryDockerConfigArgs(immutable_tags=True),
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        for reader, member in args.readers.items():
            gcp.artifactregistry.RepositoryIamMember(
                f"{name}-{reader}", repository=repository.repository_id, location=args.region,
                role="roles/artifactregistry.reader", member=member, opts=pulumi.ResourceOptions(parent=self))
        self.url = pulumi.Output.concat(repository.location, "-docker.pkg.dev/", args.project, "/",
                                        repository.repository_id)
        # the access token of whoever runs `pulumi up` (ADC, or CI's infra account): valid ~1 hour
        token = gcp.organizations.get_client_config_output(opts=pulumi.InvokeOutputOptions(parent=self)).access_token
        self.image_registry = ImageRegistry(self.url, RegistryAuth(TOKEN_USER, pulumi.Output.secret(token)))
        self.register_outputs({"url": self.url})
