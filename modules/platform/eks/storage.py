"""S3 buckets by purpose, and the ECR repositories images are pushed to.

Buckets: all public access blocked, ACLs off (bucket owner enforced), SSE-KMS with a bucket key,
versioning with old versions expiring, and a policy refusing any request not made over TLS.
Repositories: scan on push, immutable tags, KMS encryption. ECR creates no repository on push, so
there is one per image name, and each push of the program's builds waits for its own repository;
they log in with an ECR authorization token of the identity running Pulumi (valid 12 hours).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from modules.images import RegistryAuth
from modules.platform.contract import ImageRegistry

ABORT_UPLOADS_DAYS = 7
SseDefault = aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs
NoncurrentExpiration = aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs
AbortUploads = aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs


def tls_only_policy(bucket_arn: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.json_dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, pulumi.Output.concat(bucket_arn, "/*")],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }],
    })


@dataclass(frozen=True)
class BucketsArgs:
    prefixes: Mapping[str, str]  # purpose -> bucket name prefix; the provider appends a unique suffix
    key_arn: pulumi.Input[str]
    noncurrent_version_days: int
    force_destroy: bool
    protect: bool


class Buckets(pulumi.ComponentResource):
    buckets: dict[str, aws.s3.Bucket]

    def __init__(self, name: str, args: BucketsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:aws:Buckets", name, None, opts)
        self.buckets = {purpose: self._bucket(f"{name}-{purpose}", prefix, args)
                        for purpose, prefix in args.prefixes.items()}
        self.register_outputs({"buckets": {p: b.bucket for p, b in self.buckets.items()}})

    def _bucket(self, name: str, prefix: str, args: BucketsArgs) -> aws.s3.Bucket:
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(name, bucket_prefix=prefix, force_destroy=args.force_destroy,
                               opts=pulumi.ResourceOptions(parent=self, protect=args.protect))
        public = aws.s3.BucketPublicAccessBlock(
            name, bucket=bucket.id, block_public_acls=True, block_public_policy=True, ignore_public_acls=True,
            restrict_public_buckets=True, opts=child)
        aws.s3.BucketOwnershipControls(
            name, bucket=bucket.id, rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child)
        aws.s3.BucketServerSideEncryptionConfiguration(
            name, bucket=bucket.id,
            rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=SseDefault(sse_algorithm="aws:kms",
                                                                   kms_master_key_id=args.key_arn),
                bucket_key_enabled=True,
            )],
            opts=child)
        versioning = aws.s3.BucketVersioning(
            name, bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child)
        aws.s3.BucketLifecycleConfiguration(
            name, bucket=bucket.id,
            rules=[aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="expire-noncurrent-versions",
                status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(),  # every object
                noncurrent_version_expiration=NoncurrentExpiration(noncurrent_days=args.noncurrent_version_days),
                abort_incomplete_multipart_upload=AbortUploads(days_after_initiation=ABORT_UPLOADS_DAYS),
            )],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]))
        aws.s3.BucketPolicy(name, bucket=bucket.id, policy=tls_only_policy(bucket.arn),
                            opts=pulumi.ResourceOptions(parent=self, depends_on=[public]))
        return bucket


@dataclass(frozen=True)
class RegistryArgs:
    namespace: str
    images: Sequence[str]
    key_arn: pulumi.Input[str]
    force_delete: bool
    protect: bool


class Registry(pulumi.ComponentResource):
    """One ECR repository per image under `namespace`; `url` is the prefix: `<url>/<image>:<tag>`."""

    url: pulumi.Output[str]
    repositories: list[aws.ecr.Repository]
    image_registry: ImageRegistry  # the url with push credentials and each image's repository

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:aws:Registry", name, None, opts)
        self.repositories = repositories = [
            aws.ecr.Repository(
                f"{name}-{image}",
                name=f"{args.namespace}/{image}",
                image_tag_mutability="IMMUTABLE",
                image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
                encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(
                    encryption_type="KMS", kms_key=args.key_arn)],
                force_delete=args.force_delete,
                opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
            )
            for image in args.images
        ]
        self.url = repositories[0].repository_url.apply(lambda url: url.rsplit("/", 1)[0])
        token = aws.ecr.get_authorization_token_output(opts=pulumi.InvokeOutputOptions(parent=self))
        self.image_registry = ImageRegistry(
            self.url, RegistryAuth(token.user_name, pulumi.Output.secret(token.password)),
            dict(zip(args.images, repositories, strict=True)))
        self.register_outputs({"url": self.url})
