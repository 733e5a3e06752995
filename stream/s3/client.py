"""The S3 client of a bucket target: its endpoint, region and credentials (the worker's own, or a role to assume).

A ``Target`` is what every part that touches a bucket knows of it -- an export destination, an import source,
a cohort destination -- so the client, the storage, the error table and the probes serve them all alike.
"""

from __future__ import annotations

import asyncio
import weakref
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


_LOADER: list = []   # botocore's data loader, shared by every session of the process: its parsed models
_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, aioboto3.Session]] = \
    weakref.WeakKeyDictionary()


def _botocore_session():
    """A botocore session that reads the endpoint and service models through the process's one loader: each
    session loading them itself costs a tenth of a second of CPU or more."""
    session = get_session()
    if not _LOADER:
        _LOADER.append(session.get_component("data_loader"))
    else:
        session.register_component("data_loader", _LOADER[0])
    return session


def _session_key(target: Target) -> tuple:
    """What a target's credentials depend on: the role, its external id, the role session name and the region
    of the STS client that assumes it (none of them without a role: the worker's own credentials)."""
    if target.role_arn is None:
        return ()
    return (target.role_arn, target.external_id, f"stream-{target.name}"[:64], target.region)


def target_session(target: Target) -> aioboto3.Session:
    """A session with the target's credentials: the worker's own, or those of ``role_arn``, assumed (with
    ``external_id``) on first use and refreshed before they expire.

    Inside an event loop, the targets with the same credentials share one session (its credentials resolved
    or assumed once), and every session shares the process's parsed models (``_botocore_session``)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _new_session(target, None)
    sessions = _SESSIONS.setdefault(loop, {})
    key = _session_key(target)
    if () not in sessions:     # the worker's own credentials, also the source of every role's
        sessions[()] = _new_session(Target("", "", target.region), None)
    if key not in sessions:
        sessions[key] = _new_session(target, sessions[()])
    return sessions[key]


def _new_session(target: Target, own: aioboto3.Session | None) -> aioboto3.Session:
    if target.role_arn is None:
        return aioboto3.Session(botocore_session=_botocore_session())
    base = _botocore_session()   # the role's session
    source = own._session if own is not None else _botocore_session()   # the worker's own, for the source
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
