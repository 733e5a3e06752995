import asyncio

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from stream.retry import retry_until_done, s3_failure_kind


def client_error(code, status):
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


def test_failures_are_sorted_into_transient_permanent_and_not_ours():
    assert s3_failure_kind(client_error("SlowDown", 503)) == "transient"
    assert s3_failure_kind(client_error("InternalError", 500)) == "transient"
    assert s3_failure_kind(EndpointConnectionError(endpoint_url="http://x")) == "transient"
    assert s3_failure_kind(client_error("AccessDenied", 403)) == "permanent"
    assert s3_failure_kind(client_error("NoSuchBucket", 404)) == "permanent"
    assert s3_failure_kind(FileNotFoundError("spool")) is None


def test_an_upload_is_retried_until_it_succeeds_and_each_failure_reported():
    failures, outcomes = [], [client_error("SlowDown", 503), client_error("AccessDenied", 403),
                              EndpointConnectionError(endpoint_url="http://x"), "ok"]

    async def call():
        x = outcomes.pop(0)
        if isinstance(x, Exception):
            raise x
        return x
    result = asyncio.run(retry_until_done("upload", call, kind_of=s3_failure_kind,
                                          on_failure=lambda kind, exc: failures.append(kind),
                                          first_delay=0.001, permanent_delay=0.001))
    assert (result, failures) == ("ok", ["transient", "permanent", "transient"])


def test_a_failure_that_is_not_s3s_is_raised_at_once():
    async def call():
        raise FileNotFoundError("spool file gone")
    with pytest.raises(FileNotFoundError):
        asyncio.run(retry_until_done("upload", call, kind_of=s3_failure_kind, first_delay=0.001))
