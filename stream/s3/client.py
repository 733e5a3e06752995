"""The S3 client of a bucket target: its endpoint, region and credentials (the worker's own, or a role to assume).

A ``Target`` is what every part that touches a bucket knows of it -- an export destination, an import source,
a cohort destination -- so the client, the storage, the error table and the probes serve them all alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aioboto3
from aiobotocore.credentials import (
    AioAssumeRoleCredentialFetcher,
    AioDeferredRefreshableCredentials,
    _get_client_creator,
)
from aiobotocore.session import get_session
from botocore.config import Config

from stream.settings import EncryptionSettings, S3Settings


@dataclass(frozen=True)
class Target:
    """A bucket as one part of stream uses it."""

    name: str                       # what uses it, for messages and the role session name: a destination's name...
    bucket: str
    region: str
    endpoint_url: str | None = None
    role_arn: str | None = None
    external_id: str | None = None
    encryption: EncryptionSettings = EncryptionSettings(type="none")

    def as_role(self) -> str:
        """`` (as role <arn>)`` when the target is reached through a role, else ""."""
        return f" (as role {self.role_arn})" if self.role_arn else ""


def target_of(dest: Any, s3: S3Settings, name: str | None = None) -> Target:
    """The target of anything with bucket, region, endpoint_url, role_arn, external_id (and encryption) settings:
    an export destination, an import source, a cohort destination."""
    return Target(name or dest.name, dest.bucket, getattr(dest, "region", None) or s3.region,
                  getattr(dest, "endpoint_url", None) or s3.endpoint_url, getattr(dest, "role_arn", None),
                  getattr(dest, "external_id", None), getattr(dest, "encryption", None) or EncryptionSettings(
                      type="none"))


def s3_config(s3: S3Settings) -> Config:
    # one attempt per call: the callers retry themselves (stream.retry), and never give up
    return Config(connect_timeout=s3.connect_timeout_s, read_timeout=s3.read_timeout_s, retries={"max_attempts": 1})


def target_session(target: Target) -> aioboto3.Session:
    """A session with the target's credentials: the worker's own, or those of ``role_arn``, assumed (with
    ``external_id``) on first use and refreshed before they expire."""
    if target.role_arn is None:
        return aioboto3.Session()
    base, source = get_session(), get_session()   # the role's session, and the worker's own for the source
    extra: dict[str, Any] = {"RoleSessionName": f"stream-{target.name}"[:64]}
    if target.external_id:
        extra["ExternalId"] = target.external_id

    class _Source:  # the worker's own credentials, resolved when the role is first assumed
        async def get_frozen_credentials(self):
            creds = await source.get_credentials()
            if creds is None:
                from botocore.exceptions import NoCredentialsError
                raise NoCredentialsError()
            return await creds.get_frozen_credentials()

    fetcher = AioAssumeRoleCredentialFetcher(_get_client_creator(base, target.region), _Source(), target.role_arn,
                                             extra_args=extra)
    base._credentials = AioDeferredRefreshableCredentials(fetcher.fetch_credentials, "assume-role")
    return aioboto3.Session(botocore_session=base)


def target_client(target: Target, s3: S3Settings, service: str = "s3"):
    """``async with target_client(...) as client``: the target's S3 (or, with ``service``, KMS/SQS) client."""
    return target_session(target).client(service, endpoint_url=target.endpoint_url, region_name=target.region,
                                         config=s3_config(s3))
