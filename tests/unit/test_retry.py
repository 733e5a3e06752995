import asyncio

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from stream.retry import FAILURE_REASONS, Failure, retry_until_done, s3_failure


def client_error(code, status, message=None):
    return ClientError({"Error": {"Code": code, "Message": message or code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize("exc, failure", [
    (client_error("SlowDown", 503), Failure("transient", "throttled")),
    (client_error("InternalError", 500), Failure("transient", "server_error")),
    (client_error("BadGateway", 502), Failure("transient", "server_error")),
    (EndpointConnectionError(endpoint_url="http://x"), Failure("transient", "connection")),
    (ReadTimeoutError(endpoint_url="http://x"), Failure("transient", "connection")),
    (asyncio.TimeoutError(), Failure("transient", "timeout")),
    (client_error("AccessDenied", 403), Failure("permanent", "access_denied")),
    (client_error("AccessDenied", 403, "User is not authorized to perform kms:GenerateDataKey"),
     Failure("permanent", "kms_denied")),
    (client_error("KMS.DisabledException", 400), Failure("permanent", "kms_denied")),
    (client_error("NoSuchBucket", 404), Failure("permanent", "no_such_bucket")),
    (client_error("PermanentRedirect", 301), Failure("permanent", "wrong_region")),
    (client_error("AuthorizationHeaderMalformed", 400), Failure("permanent", "wrong_region")),
    (client_error("InvalidAccessKeyId", 403), Failure("permanent", "credentials")),
    (NoCredentialsError(), Failure("permanent", "credentials")),
    (client_error("MalformedXML", 400), Failure("permanent", "other")),
])
def test_failures_are_sorted_into_a_kind_and_a_reason(exc, failure):
    assert s3_failure(exc) == failure
    assert failure.reason in FAILURE_REASONS


def test_a_failure_that_is_not_s3s_is_not_classified():
    assert s3_failure(FileNotFoundError("spool")) is None
    assert s3_failure(KeyError("x")) is None


def test_an_upload_is_retried_until_it_succeeds_and_each_failure_reported():
    failures, outcomes = [], [client_error("SlowDown", 503), client_error("AccessDenied", 403),
                              EndpointConnectionError(endpoint_url="http://x"), "ok"]

    async def call():
        x = outcomes.pop(0)
        if isinstance(x, Exception):
            raise x
        return x

    async def report(failure, exc):   # a coroutine is awaited
        failures.append(failure.reason)
    result = asyncio.run(retry_until_done("upload", call, classify=s3_failure, on_failure=report,
                                          first_delay=0.001, permanent_delay=0.001))
    assert (result, failures) == ("ok", ["throttled", "access_denied", "connection"])


def test_a_failure_that_is_not_s3s_is_raised_at_once():
    async def call():
        raise FileNotFoundError("spool file gone")
    with pytest.raises(FileNotFoundError):
        asyncio.run(retry_until_done("upload", call, classify=s3_failure, first_delay=0.001))
