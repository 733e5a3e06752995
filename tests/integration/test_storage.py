"""S3Storage against the real S3 endpoint: single and multipart uploads, each with its encryption."""

import asyncio

import aioboto3
import boto3
import pytest

from stream.s3.storage import PutRequest, S3Storage
from stream.settings import EncryptionSettings

pytestmark = pytest.mark.integration
PART = 5 * 1024 * 1024


@pytest.fixture
def bucket(stack):
    name = f"enc-{id(object()) % 10**8}"
    boto3.client("s3", endpoint_url=stack["s3"]).create_bucket(Bucket=name)
    return name


def put(stack, bucket, path, encryption):
    async def go():
        async with aioboto3.Session().client("s3", endpoint_url=stack["s3"]) as s3:
            await S3Storage(s3, encryption, PART).put_file(PutRequest(
                bucket, path.name, path, path.stat().st_size, "application/gzip", None, {"stream-events": "3"}))
    asyncio.run(go())
    return boto3.client("s3", endpoint_url=stack["s3"]).head_object(Bucket=bucket, Key=path.name)


@pytest.mark.parametrize("size", [1000, 2 * PART + 17], ids=["single", "multipart"])
def test_sse_s3_applies_to_every_object(stack, bucket, tmp_path, size):
    path = tmp_path / f"a-{size}.json.gz"
    path.write_bytes(b"x" * size)
    head = put(stack, bucket, path, EncryptionSettings(type="sse-s3"))
    assert (head["ContentLength"], head["ServerSideEncryption"], head["Metadata"]) == (
        size, "AES256", {"stream-events": "3"})


@pytest.mark.parametrize("size", [1000, 2 * PART + 17], ids=["single", "multipart"])
def test_sse_kms_applies_the_destinations_key_to_every_object(stack, bucket, tmp_path, size):
    key_id = boto3.client("kms", endpoint_url=stack["s3"]).create_key()["KeyMetadata"]["Arn"]
    path = tmp_path / f"b-{size}.json.gz"
    path.write_bytes(b"y" * size)
    head = put(stack, bucket, path, EncryptionSettings(type="sse-kms", kms_key_id=key_id))
    assert (head["ContentLength"], head["ServerSideEncryption"], head["SSEKMSKeyId"]) == (size, "aws:kms", key_id)
    body = boto3.client("s3", endpoint_url=stack["s3"]).get_object(Bucket=bucket, Key=path.name)["Body"].read()
    assert body == b"y" * size


def test_storage_lists_reads_and_deletes_what_an_hour_rebuild_replaces(stack, bucket):
    s3 = boto3.client("s3", endpoint_url=stack["s3"])
    for i in range(1005):     # more than a page of a listing
        s3.put_object(Bucket=bucket, Key=f"amp/1/1_2024-03-09_7#{i * 1000}.json.gz", Body=b"x" * (i % 3))
    s3.put_object(Bucket=bucket, Key="amp/1/1_2024-03-09_8#0.json.gz", Body=b"y")
    big = bytes(range(256)) * 10_000     # 2.5 MB, read in 1 MiB chunks

    async def go():
        async with aioboto3.Session().client("s3", endpoint_url=stack["s3"]) as client:
            st = S3Storage(client, EncryptionSettings(type="none"), PART)
            listed = [o async for o in st.list(bucket, "amp/1/1_2024-03-09_7#")]
            await st.put_bytes(bucket, "big", big, "application/octet-stream")
            chunks = [c async for c in st.read(bucket, "big")]
            await st.delete(bucket, "amp/1/1_2024-03-09_8#0.json.gz")
            await st.delete(bucket, "amp/1/no-such-key")
            return listed, chunks
    listed, chunks = asyncio.run(go())
    assert [o.key for o in listed] == sorted(f"amp/1/1_2024-03-09_7#{i * 1000}.json.gz" for i in range(1005))
    assert {o.key: o.size for o in listed} == {f"amp/1/1_2024-03-09_7#{i * 1000}.json.gz": i % 3 for i in range(1005)}
    assert b"".join(chunks) == big and len(chunks) >= 3
    assert s3.list_objects_v2(Bucket=bucket, Prefix="amp/1/1_2024-03-09_8").get("KeyCount") == 0


def test_a_conditional_put_writes_a_new_key_and_leaves_an_existing_object_as_it_is(stack, bucket):
    async def go():
        async with aioboto3.Session().client("s3", endpoint_url=stack["s3"]) as s3:
            storage = S3Storage(s3, EncryptionSettings(type="sse-s3"), PART)
            return [await storage.put_new(bucket, "p/day.json.gz", b"first", "application/gzip"),
                    await storage.put_new(bucket, "p/day.json.gz", b"second", "application/gzip")]
    assert asyncio.run(go()) == [True, False]
    obj = boto3.client("s3", endpoint_url=stack["s3"]).get_object(Bucket=bucket, Key="p/day.json.gz")
    assert (obj["Body"].read(), obj["ServerSideEncryption"]) == (b"first", "AES256")
