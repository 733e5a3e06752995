"""``stream check``: probe the broker and every bucket the way the worker uses them, and name what is missing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka.admin import AIOKafkaAdminClient
from botocore.exceptions import ClientError

from stream.export.storage import sse_args
from stream.kafka import client_args
from stream.settings import DestinationSettings, Settings
from stream.topics import topic_specs

CHECK_KEY = ".stream-access-check"


def explain_s3_error(exc: ClientError, action: str, resource: str, dest: DestinationSettings) -> str:
    """What an S3 error means for the destination, naming the permission (FORMATS.md §7.3)."""
    code = exc.response.get("Error", {}).get("Code", "")
    msg = exc.response.get("Error", {}).get("Message", "")
    if code in ("NoSuchBucket", "404") and action == "s3:ListBucket":
        return f"bucket {dest.bucket} does not exist (or is not visible to these credentials)"
    if "KMS" in code or "kms" in msg.lower():
        key = dest.encryption.kms_key_id or "(bucket default key)"
        return f"missing kms:GenerateDataKey on key {key} ({code}: {msg})"
    if code in ("AccessDenied", "403", "Forbidden"):
        who = f" (as role {dest.role_arn})" if dest.role_arn else ""
        return f"missing {action} on {resource}{who}"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
        return f"credentials are invalid or expired ({code})"
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "301"):
        return f"bucket {dest.bucket} is in another region than {dest.region or 'the configured s3.region'}"
    return f"{action} on {resource} failed: {code} {msg}".strip()


async def check_broker(settings: Settings, say: Callable[[str], None]) -> int:
    admin = AIOKafkaAdminClient(**client_args(settings.kafka), request_timeout_ms=10_000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
    except Exception as exc:
        say(f"kafka: cannot reach {settings.kafka.bootstrap_servers}: {exc}")
        return 1
    finally:
        await admin.close()
    missing = [s.name for s in topic_specs(settings) if s.name not in existing]
    if missing:
        say(f"kafka: missing topics {', '.join(missing)} (the worker creates them at start if it may create "
            "topics; otherwise create them)")
        return len(missing)
    say(f"kafka: ok ({settings.kafka.bootstrap_servers}, {len(topic_specs(settings))} topics present)")
    return 0


async def check_destination(settings: Settings, dest: DestinationSettings, say: Callable[[str], None]) -> int:
    """HeadBucket, then a test PutObject with the destination's encryption, as the exporter writes."""
    from stream.export.s3client import destination_client
    key = f"{dest.prefix}{dest.project}/{CHECK_KEY}"
    async with destination_client(dest, settings.s3) as s3:
        try:
            await s3.head_bucket(Bucket=dest.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket"):
                say(f"destination {dest.name}: bucket {dest.bucket} does not exist")
                return 1
            if code not in ("403", "AccessDenied"):  # 403 on HeadBucket only means no s3:ListBucket
                why = explain_s3_error(exc, "s3:ListBucket", f"arn:aws:s3:::{dest.bucket}", dest)
                say(f"destination {dest.name}: {why}")
                return 1
        try:
            await s3.put_object(Bucket=dest.bucket, Key=key, Body=b"", **sse_args(dest.encryption))
        except ClientError as exc:
            say(f"destination {dest.name}: "
                f"{explain_s3_error(exc, 's3:PutObject', f'arn:aws:s3:::{dest.bucket}/{dest.prefix}*', dest)}")
            return 1
        try:
            await s3.delete_object(Bucket=dest.bucket, Key=key)
        except ClientError:
            pass  # s3:DeleteObject is not needed to export; the empty check object may stay
    say(f"destination {dest.name}: ok (s3://{dest.bucket}/{dest.prefix}{dest.project}/, "
        f"encryption {dest.encryption.type})")
    return 0


async def run_checks(settings: Settings, timeout: float, say: Callable[[str], None]) -> int:
    async def bounded(coro, what: str) -> int:
        try:
            return await asyncio.wait_for(coro, timeout)
        except TimeoutError:
            say(f"{what}: no answer within {timeout:.0f}s")
            return 1
        except Exception as exc:  # no credentials, endpoint unreachable...
            say(f"{what}: {type(exc).__name__}: {exc}")
            return 1
    problems = await bounded(check_broker(settings, say), "kafka")
    for d in settings.destinations:
        problems += await bounded(check_destination(settings, d, say), f"destination {d.name}")
    return problems
