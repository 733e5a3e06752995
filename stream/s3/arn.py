"""ARNs of buckets, objects and queues, in the partition of their region (aws, aws-cn, aws-us-gov) (pure).

An ARN's partition follows the region: ``cn-*`` regions are in ``aws-cn`` and ``us-gov-*`` regions in
``aws-us-gov`` (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference-arns.html); a policy or a message
naming ``arn:aws:...`` for a bucket there names nothing. Every bucket, object and queue ARN stream writes or words
is made here.
"""

from __future__ import annotations

import re

_ACCOUNT = re.compile(r"\d{12}")


def partition_of_region(region: str | None) -> str:
    """``aws-cn`` for ``cn-*``, ``aws-us-gov`` for ``us-gov-*``, else ``aws`` (also when the region is unknown)."""
    r = (region or "").lower()
    return "aws-cn" if r.startswith("cn-") else "aws-us-gov" if r.startswith("us-gov-") else "aws"


def partition_of(arn: str) -> str:
    """The partition an ARN names (``aws`` when it is not an ARN)."""
    parts = arn.split(":")
    return parts[1] if len(parts) > 1 and parts[0] == "arn" and parts[1] else "aws"


def account_of(arn: str) -> str | None:
    """The account id an ARN names, if it names one."""
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 and _ACCOUNT.fullmatch(parts[4]) else None


def s3_arn(bucket: str, key: str | None = None, *, region: str | None = None, partition: str | None = None) -> str:
    """``arn:<partition>:s3:::<bucket>``, or with ``key`` (an object key or a pattern such as ``prefix/*``)
    ``arn:<partition>:s3:::<bucket>/<key>``; the partition is ``partition``, else the region's."""
    part = partition or partition_of_region(region)
    return f"arn:{part}:s3:::{bucket}" if key is None else f"arn:{part}:s3:::{bucket}/{key}"


def queue_arn(queue_url: str, region: str) -> str:
    """``https://sqs.<region>.amazonaws.com/<account>/<name>`` -> ``arn:<partition>:sqs:<region>:<account>:<name>``,
    to name a queue before it has answered; the URL itself when it has another shape."""
    parts = [p for p in queue_url.split("://", 1)[-1].split("/")[1:] if p]
    if len(parts) == 2 and _ACCOUNT.fullmatch(parts[0]):
        return f"arn:{partition_of_region(region)}:sqs:{region}:{parts[0]}:{parts[1]}"
    return queue_url
