"""The S3 client of a destination: its endpoint, region and credentials (its own role to assume, if any)."""

from __future__ import annotations

from typing import Any

import aioboto3
from aiobotocore.credentials import (
    AioAssumeRoleCredentialFetcher,
    AioDeferredRefreshableCredentials,
    _get_client_creator,
)
from aiobotocore.session import get_session
from botocore.config import Config

from stream.settings import DestinationSettings, S3Settings


def s3_config(s3: S3Settings) -> Config:
    # one attempt per call: the exporter retries itself (stream.retry), and never gives up
    return Config(connect_timeout=s3.connect_timeout_s, read_timeout=s3.read_timeout_s, retries={"max_attempts": 1})


def destination_session(dest: DestinationSettings, s3: S3Settings) -> aioboto3.Session:
    """A session with the destination's credentials: the worker's own, or those of ``role_arn``, assumed (with
    ``external_id``) on first use and refreshed before they expire."""
    if dest.role_arn is None:
        return aioboto3.Session()
    base, source = get_session(), get_session()   # the role's session, and the worker's own for the source
    region = dest.region or s3.region
    extra: dict[str, Any] = {"RoleSessionName": f"stream-export-{dest.name}"}
    if dest.external_id:
        extra["ExternalId"] = dest.external_id

    class _Source:  # the worker's own credentials, resolved when the role is first assumed
        async def get_frozen_credentials(self):
            creds = await source.get_credentials()
            if creds is None:
                from botocore.exceptions import NoCredentialsError
                raise NoCredentialsError()
            return await creds.get_frozen_credentials()

    fetcher = AioAssumeRoleCredentialFetcher(_get_client_creator(base, region), _Source(), dest.role_arn,
                                             extra_args=extra)
    base._credentials = AioDeferredRefreshableCredentials(fetcher.fetch_credentials, "assume-role")
    return aioboto3.Session(botocore_session=base)


def destination_client(dest: DestinationSettings, s3: S3Settings):
    """``async with destination_client(...) as client``: the destination's S3 client."""
    return destination_session(dest, s3).client("s3", endpoint_url=dest.endpoint_url or s3.endpoint_url,
                                                region_name=dest.region or s3.region, config=s3_config(s3))
