"""Least-privilege IAM documents for a bucket target, ready to paste (pure).

For a target that stream writes (an export or cohort destination):

- the **bucket policy** (on the bucket, naming who writes: the target's ``role_arn``, else the workers' own
  identity) with ``s3:PutObject`` and ``s3:AbortMultipartUpload`` on exactly the key prefixes the target writes,
  ``s3:DeleteObject`` there (a backfill or a mirror rebuild replaces an hour's objects), ``s3:ListBucket`` on the
  bucket (the access check's HeadBucket, a rebuild's listing), ``s3:GetObject`` where an archive destination reads
  back (its hours, its mirror log), and, on request, Segment's two encryption-enforcing Deny statements
  (FORMATS.md §7.1);
- the **role policy** (an identity policy: attach it to that role, or to the workers' role) granting the same
  writes, and the KMS actions on the key for SSE-KMS;
- the **KMS key policy** statement for SSE-KMS: ``kms:GenerateDataKey`` and ``kms:Decrypt`` (multipart uploads
  decrypt the data key) for the writer;
- the **trust policy** of ``role_arn``: the workers' identity may assume it, with the external id if one is set.

A cohort destination's writer reads back what it wrote
(``cohort_bucket_policy``, ``cohort_role_policy``): the previous sync's existing file (the diff), the sync records
and a static cohort's list, and lists its records.

For a target that stream reads (an import source): ``s3:ListBucket`` limited to its prefix, ``s3:GetObject`` under
it, ``kms:Decrypt``, and the notification set-up actions (FORMATS.md §7.1, Amplitude's import policy shape).

``statement_for`` gives the single statement that grants a permission a probe found missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stream.s3.arn import s3_arn
from stream.s3.client import Target

VERSION = "2012-10-17"
UNKNOWN_PRINCIPAL = "arn:aws:iam::<account id>:role/<the role the stream workers run as>"
"""Written where the workers' identity is not configured (s3.worker_principal_arn): replace it before pasting."""


def _doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": VERSION, "Statement": list(statements)}


def _objects(target: Target, prefixes: Sequence[str]) -> list[str]:
    return [s3_arn(target.bucket, f"{p}*", region=target.region) for p in prefixes]


def writer_of(target: Target, worker_principal: str | None) -> str:
    """Who writes the target's objects: its role, else the workers' identity."""
    return target.role_arn or worker_principal or UNKNOWN_PRINCIPAL


WRITES = ["s3:PutObject", "s3:AbortMultipartUpload"]
"""A destination's writes: an object larger than ``s3.upload_part_bytes`` is a multipart upload (PutObject grants
its create, parts and completion), aborted when it fails, which needs its own action (else the parts stay, billed,
until the bucket's lifecycle rule expires them)."""


def _export_statements(target: Target, prefixes: Sequence[str], reads: Sequence[str],
                       principal: dict[str, Any] | None) -> list[dict[str, Any]]:
    """An export destination's grants: put (and abort) its objects; delete the ones a backfill or a mirror
    rebuild replaces; list the bucket (the access check's HeadBucket, a rebuild's listing of an hour's objects);
    read back ``reads`` (an archive destination: its hours rebuilt from their objects, its mirror log)."""
    who = {"Principal": principal} if principal else {}
    objects = _objects(target, prefixes)
    out = [{"Sid": "StreamWrites", "Effect": "Allow", **who, "Action": WRITES, "Resource": objects},
           {"Sid": "StreamRebuilds", "Effect": "Allow", **who, "Action": "s3:DeleteObject", "Resource": objects},
           {"Sid": "StreamLists", "Effect": "Allow", **who, "Action": "s3:ListBucket",
            "Resource": s3_arn(target.bucket, region=target.region)}]
    if reads:
        out.append({"Sid": "StreamReadsBack", "Effect": "Allow", **who, "Action": "s3:GetObject",
                    "Resource": _objects(target, reads)})
    return out


def bucket_policy(target: Target, prefixes: Sequence[str], worker_principal: str | None,
                  enforce_encryption: bool = False, reads: Sequence[str] = ()) -> dict[str, Any]:
    statements = _export_statements(target, prefixes, reads, {"AWS": writer_of(target, worker_principal)})
    if enforce_encryption:
        statements += _deny_unencrypted(target)
    return _doc(*statements)


def _deny_unencrypted(target: Target) -> list[dict[str, Any]]:
    sse = "aws:kms" if target.encryption.type == "sse-kms" else "AES256"
    everything = s3_arn(target.bucket, "*", region=target.region)
    return [{"Sid": "DenyOtherEncryption", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
             "Resource": everything, "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": sse}}},
            {"Sid": "DenyUnencrypted", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
             "Resource": everything, "Condition": {"Null": {"s3:x-amz-server-side-encryption": "true"}}}]


def _cohort_statements(target: Target, path_prefix: str, records_dir: str,
                       principal: dict[str, Any] | None) -> list[dict[str, Any]]:
    who = {"Principal": principal} if principal else {}
    objects = _objects(target, [path_prefix, records_dir])
    return [
        {"Sid": "StreamWrites", "Effect": "Allow", **who, "Action": WRITES, "Resource": objects},
        {"Sid": "StreamReadsBack", "Effect": "Allow", **who, "Action": "s3:GetObject", "Resource": objects},
        {"Sid": "StreamListsRecords", "Effect": "Allow", **who, "Action": "s3:ListBucket",
         "Resource": s3_arn(target.bucket, region=target.region),
         "Condition": {"StringLike": {"s3:prefix": [f"{records_dir}*"]}}}]


def cohort_bucket_policy(target: Target, path_prefix: str, records_dir: str, worker_principal: str | None,
                         enforce_encryption: bool = False) -> dict[str, Any]:
    """A cohort destination's bucket policy: the writer puts the CSV files (under ``path_prefix``) and the sync
    records (under ``records_dir``, ``<records_prefix><destination>/``, a static cohort's list too), reads back
    the previous sync's existing file (the diff) and the records, and lists the records (the chain of completed
    syncs); nothing else of the bucket."""
    statements = _cohort_statements(target, path_prefix, records_dir, {"AWS": writer_of(target, worker_principal)})
    if enforce_encryption:
        statements += _deny_unencrypted(target)
    return _doc(*statements)


def cohort_role_policy(target: Target, path_prefix: str, records_dir: str) -> dict[str, Any]:
    """The same grants as ``cohort_bucket_policy`` as an identity policy, and the KMS actions for SSE-KMS
    (``kms:Decrypt`` also reads back what was written)."""
    statements = _cohort_statements(target, path_prefix, records_dir, None)
    if target.encryption.type == "sse-kms":
        statements.append({"Sid": "StreamEncrypts", "Effect": "Allow",
                           "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                           "Resource": target.encryption.kms_key_id or "*"})
    return _doc(*statements)


def role_policy(target: Target, prefixes: Sequence[str], reads: Sequence[str] = ()) -> dict[str, Any]:
    statements = _export_statements(target, prefixes, reads, None)
    if target.encryption.type == "sse-kms":
        statements.append({"Sid": "StreamEncrypts", "Effect": "Allow",
                           "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                           "Resource": target.encryption.kms_key_id or "*"})
    return _doc(*statements)


def kms_key_policy_statement(target: Target, worker_principal: str | None) -> dict[str, Any]:
    """The statement to add to the KMS key's policy (a key policy's resource is the key itself: ``*``)."""
    return {"Sid": "StreamEncrypts", "Effect": "Allow", "Principal": {"AWS": writer_of(target, worker_principal)},
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"], "Resource": "*"}


def trust_policy(target: Target, worker_principal: str | None) -> dict[str, Any] | None:
    """The trust policy of the target's role: the workers may assume it (with the external id); None without a
    role."""
    if not target.role_arn:
        return None
    st: dict[str, Any] = {"Sid": "StreamAssumes", "Effect": "Allow",
                          "Principal": {"AWS": worker_principal or UNKNOWN_PRINCIPAL}, "Action": "sts:AssumeRole"}
    if target.external_id:
        st["Condition"] = {"StringEquals": {"sts:ExternalId": target.external_id}}
    return _doc(st)


def reader_role_policy(target: Target, prefix: str, notifications: bool, kms: bool) -> dict[str, Any]:
    """An import source's read role: list and read under its prefix (FORMATS.md §7.1), optionally decrypt and
    configure the bucket's notifications."""
    bucket = s3_arn(target.bucket, region=target.region)
    statements: list[dict[str, Any]] = [
        {"Sid": "StreamLists", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket,
         "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}}},
        {"Sid": "StreamReads", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{bucket}/{prefix}*"}]
    if kms:
        statements.append({"Sid": "StreamDecrypts", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"})
    if notifications:
        statements.append({"Sid": "StreamNotifications", "Effect": "Allow",
                           "Action": ["s3:PutBucketNotification", "s3:GetBucketNotification"], "Resource": bucket})
    return _doc(*statements)


def statement_for(missing: str, resource: str | None, target: Target,
                  worker_principal: str | None) -> tuple[str, dict[str, Any]]:
    """(where it goes, the statement) that grants the ``missing`` permission on ``resource``."""
    if missing == "sts:AssumeRole":
        return f"the trust policy of role {target.role_arn}", (trust_policy(target, worker_principal) or {})[
            "Statement"][0]
    if missing.startswith("kms:"):
        return f"the key policy of {resource}", kms_key_policy_statement(target, worker_principal)
    return (f"the bucket policy of {target.bucket} (or the identity policy of {writer_of(target, worker_principal)}"
            ", without Principal)",
            {"Effect": "Allow", "Principal": {"AWS": writer_of(target, worker_principal)}, "Action": missing,
             "Resource": resource or s3_arn(target.bucket, "*", region=target.region)})
