"""Access probes: the real operations a bucket target needs, done once, naming what is missing before anything runs.

A write probe (export destinations, cohort destinations) does what the writer will do, with the target's
credentials or role and its encryption: HeadBucket (the bucket exists and is in the configured region), then a
PutObject under *each* key prefix the target writes -- a policy scoped to ``segment-logs/*`` is probed there, not
under a folder it does not grant -- and, for SSE-KMS, a multipart upload too, which needs kms:Decrypt besides
kms:GenerateDataKey. The probe objects (``<prefix>.stream-access-check``, empty) are deleted when the
credentials may; else they stay, as s3:DeleteObject is not needed to write (readers that take ``*.json.gz``
skip them). Each failure is worded by ``stream.s3.errors`` and stops the target's probe at
the first step that fails, since the later steps would fail for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import ClientError

from stream.s3.arn import s3_arn
from stream.s3.client import Target, target_client
from stream.s3.errors import Problem, explain
from stream.s3.storage import sse_args
from stream.settings import S3Settings

PROBE_NAME = ".stream-access-check"


@dataclass(frozen=True)
class Probe:
    """One step of a probe: what was done where, and the problem, None when it worked."""

    step: str          # "bucket", "put", "multipart put"
    where: str         # s3://bucket/key or s3://bucket
    problem: Problem | None


def probe_key(prefix: str) -> str:
    return prefix + PROBE_NAME


async def probe_writes(target: Target, prefixes: list[str], s3: S3Settings) -> list[Probe]:
    """Probe writing under each of ``prefixes`` of ``target``; the steps done, the first failing one last."""
    done: list[Probe] = []
    async with target_client(target, s3) as client:
        bucket_arn = s3_arn(target.bucket, region=target.region)
        try:
            head = await client.head_bucket(Bucket=target.bucket)
            region = head.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
            if region and region != target.region:
                raise ClientError({"Error": {"Code": "PermanentRedirect", "Message": "region mismatch"},
                                   "ResponseMetadata": {"HTTPStatusCode": 301,
                                                        "HTTPHeaders": {"x-amz-bucket-region": region}}},
                                  "HeadBucket")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            # 403 on HeadBucket only says that s3:ListBucket is not granted, which writing does not need
            if code not in ("403", "AccessDenied", "Forbidden"):
                done.append(Probe("bucket", f"s3://{target.bucket}",
                                  explain(exc, target, "s3:ListBucket", bucket_arn)))
                return done
        except Exception as exc:
            done.append(Probe("bucket", f"s3://{target.bucket}", explain(exc, target, "s3:ListBucket", bucket_arn)))
            return done
        done.append(Probe("bucket", f"s3://{target.bucket}", None))
        sse = sse_args(target.encryption)
        for prefix in prefixes:
            key = probe_key(prefix)
            resource = s3_arn(target.bucket, f"{prefix}*", region=target.region)
            where = f"s3://{target.bucket}/{key}"
            try:
                await client.put_object(Bucket=target.bucket, Key=key, Body=b"", **sse)
            except Exception as exc:
                done.append(Probe("put", where, explain(exc, target, "s3:PutObject", resource)))
                return done
            done.append(Probe("put", where, None))
            if target.encryption.type == "sse-kms":
                try:
                    up = await client.create_multipart_upload(Bucket=target.bucket, Key=key, **sse)
                    try:
                        part = await client.upload_part(Bucket=target.bucket, Key=key, UploadId=up["UploadId"],
                                                        PartNumber=1, Body=b"")
                        await client.complete_multipart_upload(
                            Bucket=target.bucket, Key=key, UploadId=up["UploadId"],
                            MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]})
                    except Exception:
                        try:
                            await client.abort_multipart_upload(Bucket=target.bucket, Key=key,
                                                                UploadId=up["UploadId"])
                        except Exception:
                            pass
                        raise
                except Exception as exc:
                    done.append(Probe("multipart put", where, explain(exc, target, "s3:PutObject", resource)))
                    return done
                done.append(Probe("multipart put", where, None))
            try:   # best effort: s3:DeleteObject is not needed to write, and the empty probe object may stay
                await client.delete_object(Bucket=target.bucket, Key=key)
            except Exception:
                pass
    return done
