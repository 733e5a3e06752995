"""The one S3 error table: every case of FORMATS.md §7.3 gets its kind, its reason and its wording, with the
permission to grant when one is missing."""

import asyncio

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from stream.s3.client import Target
from stream.s3.errors import FAILURE_REASONS, Failure, classify, explain
from stream.settings import EncryptionSettings

KEY = "arn:aws:kms:us-east-1:123456789012:key/0f1e2d3c-aaaa-bbbb-cccc-123456789012"
ROLE = "arn:aws:iam::123456789012:role/stream-export"
TARGET = Target("amp", "acme-export", "us-east-1", role_arn=ROLE, external_id="ext-1",
                encryption=EncryptionSettings(type="sse-kms", kms_key_id=KEY))
PLAIN = Target("amp", "acme-export", "us-east-1")
WHERE = "arn:aws:s3:::acme-export/amp/424242/*"


def client_error(code, status, message=None, op="PutObject", **headers):
    return ClientError({"Error": {"Code": code, "Message": message or code},
                        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers}}, op)


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
    (client_error("KMS.AccessDeniedException", 400), Failure("permanent", "kms_denied")),
    (client_error("KMS.DisabledException", 400), Failure("permanent", "kms_key_unusable")),
    (client_error("KMS.NotFoundException", 400), Failure("permanent", "kms_key_unusable")),
    (client_error("KMS.KMSInvalidStateException", 400), Failure("permanent", "kms_key_unusable")),
    (client_error("AllAccessDisabled", 403), Failure("permanent", "bucket_access_disabled")),
    (client_error("AccountProblem", 403), Failure("permanent", "bucket_access_disabled")),
    (client_error("AccessDenied", 403, "not authorized to perform: sts:AssumeRole", op="AssumeRole"),
     Failure("permanent", "assume_role")),
    (client_error("NoSuchBucket", 404), Failure("permanent", "no_such_bucket")),
    (client_error("PermanentRedirect", 301), Failure("permanent", "wrong_region")),
    (client_error("AuthorizationHeaderMalformed", 400), Failure("permanent", "wrong_region")),
    (client_error("IllegalLocationConstraintException", 400), Failure("permanent", "wrong_region")),
    (client_error("InvalidAccessKeyId", 403), Failure("permanent", "credentials")),
    (client_error("SignatureDoesNotMatch", 403), Failure("permanent", "credentials")),
    (client_error("ExpiredToken", 400), Failure("permanent", "credentials")),
    (NoCredentialsError(), Failure("permanent", "credentials")),
    (client_error("MalformedXML", 400), Failure("permanent", "other")),
])
def test_failures_are_sorted_into_a_kind_and_a_reason(exc, failure):
    assert classify(exc) == failure
    assert failure.reason in FAILURE_REASONS


def test_a_failure_that_is_not_s3s_is_not_classified():
    assert classify(FileNotFoundError("spool")) is None
    assert classify(KeyError("x")) is None


@pytest.mark.parametrize("exc, target, expected", [
    (client_error("AccessDenied", 403), TARGET,
     ("access_denied", "s3:PutObject", WHERE, f"missing s3:PutObject on {WHERE} (as role {ROLE}) (or a bucket policy "
      "denies it, e.g. one that requires another server-side encryption than encryption.type)")),
    (client_error("AccessDenied", 403, f"User: arn:aws:sts::1:assumed-role/x is not authorized to perform: "
                  f"kms:GenerateDataKey on resource: {KEY}"), TARGET,
     ("kms_denied", "kms:GenerateDataKey", KEY, f"missing kms:GenerateDataKey on key {KEY} (as role {ROLE}): add it "
      "to the key policy (stream policy prints the statement); multipart uploads need kms:Decrypt too")),
    (client_error("KMS.AccessDeniedException", 400, "denied", op="CompleteMultipartUpload"), TARGET,
     ("kms_denied", "kms:Decrypt", KEY, f"missing kms:Decrypt on key {KEY} (as role {ROLE}): add it to the key "
      "policy (stream policy prints the statement); multipart uploads need kms:Decrypt too")),
    (client_error("KMS.DisabledException", 400, "key is disabled"), TARGET,
     ("kms_key_unusable", None, KEY, f"KMS key {KEY} cannot be used (KMS.DisabledException: it is disabled, pending "
      "deletion or deleted): enable it, or set encryption.kms_key_id to a usable key")),
    (client_error("AllAccessDisabled", 403), PLAIN,
     ("bucket_access_disabled", None, None, "all access to bucket acme-export is disabled (AllAccessDisabled): the "
      "bucket owner's account must be fixed with AWS; nothing in stream's settings cures it")),
    (client_error("ExpiredToken", 400), PLAIN,
     ("credentials", None, None, "the credentials are invalid or expired (ExpiredToken): check the worker's AWS "
      "credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or its role's session)")),
    (client_error("AccessDenied", 403, "not authorized to perform: sts:AssumeRole", op="AssumeRole"), TARGET,
     ("assume_role", "sts:AssumeRole", ROLE, f"cannot assume role {ROLE} (AccessDenied): its trust policy must allow "
      "this worker's identity sts:AssumeRole with the configured external id, and this worker's own policy must "
      "allow sts:AssumeRole on it (stream policy prints the trust policy)")),
    (client_error("NoSuchBucket", 404), PLAIN,
     ("no_such_bucket", None, None, "bucket acme-export does not exist (or these credentials cannot see it): check "
      "the bucket name")),
    (client_error("PermanentRedirect", 301, **{"x-amz-bucket-region": "eu-west-1"}), PLAIN,
     ("wrong_region", None, None, "bucket acme-export is in region eu-west-1, not us-east-1: set the region of this "
      "bucket's settings")),
    (client_error("AuthorizationHeaderMalformed", 400, "the region 'us-east-1' is wrong; expecting 'eu-west-2'"),
     PLAIN, ("wrong_region", None, None, "bucket acme-export is in region eu-west-2, not us-east-1: set the region "
             "of this bucket's settings")),
    (NoCredentialsError(), PLAIN,
     ("credentials", None, None, "no AWS credentials were found for this worker: give it a role (IRSA, an instance "
      "profile) or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")),
])
def test_each_failure_names_the_missing_permission_or_the_cure(exc, target, expected):
    p = explain(exc, target, "s3:PutObject", WHERE)
    assert (p.reason, p.missing, p.resource, p.message) == expected
