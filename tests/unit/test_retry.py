import asyncio

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from stream.retry import retry_until_done
from stream.s3.errors import classify as s3_failure


def client_error(code, status, message=None):
    return ClientError({"Error": {"Code": code, "Message": message or code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


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
