"""What an SQS failure means, beside the S3 error table: its error codes, once (pure).

SQS answers with codes of its own for throttling, a missing queue and a denied action; everything else (credentials,
KMS, connections) is classified as S3's are (``stream.s3.errors.classify``).
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from stream.s3 import errors as s3errors

THROTTLED = frozenset({"RequestThrottled", "OverLimit", "KmsThrottled", "ThrottlingException"})
NO_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"})
DENIED = frozenset({"AccessDenied", "AccessDeniedException", "403", "Forbidden", "AWS.SimpleQueueService.AccessDenied"})


def code_of(exc: BaseException) -> str:
    """The error code of a ClientError ("" for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def classify(exc: BaseException) -> s3errors.Failure | None:
    """Transient (throttled) or permanent (no_such_queue), else as ``stream.s3.errors.classify`` says."""
    code = code_of(exc)
    if code in THROTTLED:
        return s3errors.Failure("transient", "throttled")
    if code in NO_QUEUE:
        return s3errors.Failure("permanent", "no_such_queue")
    return s3errors.classify(exc)
