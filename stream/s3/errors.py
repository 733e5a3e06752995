"""The one table of what an S3 failure means: retried or not, why (a metric label), the missing permission, the cure.

Every caller that touches a bucket -- the exporter's retries, ``stream check``, ``stream exports verify``, the
import and cohort syncs -- classifies a failure here and words it from here, so the same failure is named the
same way everywhere. The cases are those of FORMATS.md §7.3: a denied S3 action names the action and the resource
(and the role used); KMS denials name the KMS action and the key; a disabled or deleted key, a bucket whose
account has all access disabled, invalid or expired credentials, a role that cannot be assumed, a bucket that does
not exist and a bucket in another region each get their own reason and cure. Throttling, 5xx answers, timeouts
and broken connections pass by themselves and are retried with backoff.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from stream.s3.client import Target

TRANSIENT_REASONS = ("throttled", "server_error", "connection", "timeout")
"""Failures that pass by themselves: retried with backoff."""
PERMANENT_REASONS = ("access_denied", "kms_denied", "kms_key_unusable", "assume_role", "bucket_access_disabled",
                     "no_such_bucket", "wrong_region", "credentials", "other")
"""Failures someone has to fix (a permission, a key, a bucket name, a region, credentials): retried slowly."""
FAILURE_REASONS = TRANSIENT_REASONS + PERMANENT_REASONS

_THROTTLED = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503",
                        "TooManyRequestsException"})
_SERVER = frozenset({"InternalError", "ServiceUnavailable", "RequestTimeout", "500", "KMSInternalException",
                     "DependencyTimeoutException"})
_KMS_UNUSABLE = frozenset({"KMS.DisabledException", "KMS.NotFoundException", "KMS.KMSInvalidStateException",
                           "DisabledException", "NotFoundException", "KMSInvalidStateException",
                           "KMS.InvalidKeyUsageException", "InvalidKeyUsageException"})
_KMS_DENIED = frozenset({"KMS.AccessDeniedException", "AccessDeniedException", "KMSAccessDeniedException"})
_DISABLED = frozenset({"AllAccessDisabled", "AccountProblem"})
_REDIRECT = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException",
                       "301", "TemporaryRedirect"})
_CREDENTIALS = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                          "TokenRefreshRequired", "ExpiredTokenException", "InvalidClientTokenId",
                          "UnrecognizedClientException"})
_DENIED = frozenset({"AccessDenied", "403", "Forbidden"})
_KMS_ACTION = re.compile(r"(kms:[A-Za-z]+)")
_EXPECTING = re.compile(r"expecting '([a-z0-9-]+)'", re.IGNORECASE)   # AuthorizationHeaderMalformed names it

_DECRYPTING = frozenset({"UploadPart", "CompleteMultipartUpload", "GetObject", "HeadObject", "UploadPartCopy"})
"""S3 operations whose SSE-KMS use decrypts the data key (kms:Decrypt); PutObject and CreateMultipartUpload make
one (kms:GenerateDataKey)."""


@dataclass(frozen=True)
class Failure:
    kind: str     # "transient" or "permanent"
    reason: str   # one of FAILURE_REASONS: a metric label


@dataclass(frozen=True)
class Problem:
    """A failure worded for a person: why, the permission to grant (if one is missing), and one sentence."""

    reason: str
    missing: str | None      # e.g. "s3:PutObject", "kms:Decrypt", "sts:AssumeRole"; None when no grant cures it
    resource: str | None     # the ARN the permission is needed on
    message: str


def _error(exc: ClientError) -> tuple[str, str, int, str]:
    err = exc.response.get("Error", {})
    meta = exc.response.get("ResponseMetadata", {})
    return str(err.get("Code", "")), str(err.get("Message", "")), int(meta.get("HTTPStatusCode", 0) or 0), \
        getattr(exc, "operation_name", "") or ""


def _is_kms(code: str, msg: str) -> bool:
    return code.startswith("KMS") or code in _KMS_UNUSABLE or code in _KMS_DENIED or "kms" in msg.lower()


def classify(exc: BaseException) -> Failure | None:
    """What a failure of a call to S3 (or STS or KMS, reached through it) is; None when it is none of theirs (a
    bug: not retried)."""
    if isinstance(exc, ClientError):
        code, msg, status, op = _error(exc)
        if code in _THROTTLED:
            return Failure("transient", "throttled")
        if code in _SERVER or status >= 500:
            return Failure("transient", "server_error")
        if op == "AssumeRole":
            return Failure("permanent", "assume_role")
        if code in _CREDENTIALS:
            return Failure("permanent", "credentials")
        if code in _DISABLED:
            return Failure("permanent", "bucket_access_disabled")
        if _is_kms(code, msg):
            if code in _KMS_UNUSABLE or "disabled" in msg.lower() or "pending deletion" in msg.lower():
                return Failure("permanent", "kms_key_unusable")
            return Failure("permanent", "kms_denied")
        if code in _DENIED:
            return Failure("permanent", "access_denied")
        if code in ("NoSuchBucket", "404"):
            return Failure("permanent", "no_such_bucket")
        if code in _REDIRECT or status == 301:
            return Failure("permanent", "wrong_region")
        return Failure("permanent", "other")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return Failure("transient", "timeout")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return Failure("permanent", "credentials")
    if isinstance(exc, (EndpointConnectionError, BotoConnectionError, ConnectionError, BotoCoreError)):
        return Failure("transient", "connection")
    return None


def explain(exc: BaseException, target: Target, action: str, resource: str) -> Problem:
    """``exc``, raised while doing ``action`` (``s3:PutObject``) on ``resource`` (an ARN) for ``target``, worded
    with the permission that is missing and what to do."""
    failure = classify(exc)
    reason = failure.reason if failure else "other"
    who = target.as_role()
    if not isinstance(exc, ClientError):
        if reason == "credentials":
            return Problem(reason, None, None, "no AWS credentials were found for this worker: give it a role (IRSA, "
                           "an instance profile) or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
        return Problem(reason, None, None, f"{action} on {resource} failed: {type(exc).__name__}: {exc}")
    code, msg, status, op = _error(exc)
    key = target.encryption.kms_key_id or "(the bucket's default key)"
    if reason == "assume_role":
        ext = "with the configured external id" if target.external_id else "without an external id"
        return Problem(reason, "sts:AssumeRole", target.role_arn,
                       f"cannot assume role {target.role_arn} ({code}): its trust policy must allow this worker's "
                       f"identity sts:AssumeRole {ext}, and this worker's own policy must allow sts:AssumeRole on it "
                       "(stream policy prints the trust policy)")
    if reason == "credentials":
        return Problem(reason, None, None, f"the credentials are invalid or expired ({code}): check the worker's AWS "
                       "credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or its role's session)")
    if reason == "bucket_access_disabled":
        return Problem(reason, None, None, f"all access to bucket {target.bucket} is disabled ({code}): the bucket "
                       "owner's account must be fixed with AWS; nothing in stream's settings cures it")
    if reason == "kms_key_unusable":
        return Problem(reason, None, key, f"KMS key {key} cannot be used ({code}: it is disabled, pending deletion or "
                       "deleted): enable it, or set encryption.kms_key_id to a usable key")
    if reason == "kms_denied":
        found = _KMS_ACTION.search(msg)
        kms_action = found.group(1) if found else ("kms:Decrypt" if op in _DECRYPTING else "kms:GenerateDataKey")
        return Problem(reason, kms_action, key, f"missing {kms_action} on key {key}{who}: add it to the key policy "
                       "(stream policy prints the statement); multipart uploads need kms:Decrypt too")
    if reason == "access_denied":
        return Problem(reason, action, resource, f"missing {action} on {resource}{who} (or a bucket policy denies "
                       "it, e.g. one that requires another server-side encryption than encryption.type)")
    if reason == "no_such_bucket":
        return Problem(reason, None, None, f"bucket {target.bucket} does not exist (or these credentials cannot see "
                       "it): check the bucket name")
    if reason == "wrong_region":
        expecting = _EXPECTING.search(msg)
        region = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region") or \
            (expecting.group(1) if expecting else None) or exc.response.get("Error", {}).get("Region")
        where = f"region {region}" if region else "another region"
        return Problem(reason, None, None, f"bucket {target.bucket} is in {where}, not {target.region}: set the "
                       "region of this bucket's settings")
    if reason in TRANSIENT_REASONS:
        return Problem(reason, None, None, f"{action} on {resource} failed for now ({code or status}); retrying")
    return Problem(reason, None, None, f"{action} on {resource} failed: {code} {msg}".strip())
