"""How objects are stored: S3 (aioboto3) or memory, behind one small protocol: put (a file, or a few bytes),
list under a prefix, read a stream, and delete -- what writing objects and replacing an hour's objects need."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stream.crashpoints import crash_point
from stream.settings import EncryptionSettings


@dataclass(frozen=True, slots=True)
class PutRequest:
    bucket: str
    key: str
    path: Path
    size: int
    content_type: str
    content_encoding: str | None
    metadata: dict[str, str]


class Storage(Protocol):
    async def put_file(self, req: PutRequest) -> None:
        """Store the file at ``req.path`` under ``s3://bucket/key``, replacing any object there."""

    async def put_bytes(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        """Store ``body`` under ``s3://bucket/key`` (a small object: a marker), replacing any object there."""

    async def put_new(self, bucket: str, key: str, body: bytes, content_type: str) -> bool:
        """Store ``body`` under ``s3://bucket/key`` only if no object is there (a conditional PutObject,
        ``If-None-Match: *``): False, and nothing written, when one is. Two writers racing for one key: the first
        put wins whatever the order of their listings."""

    def list(self, bucket: str, prefix: str, start_after: str = "") -> AsyncIterator[ListedObject]:
        """Every object under ``prefix``, in key order, page by page; with ``start_after``, only the keys after it
        (S3 skips the others: a listing of the few newest records costs one request however many precede them)."""

    def read(self, bucket: str, key: str) -> AsyncIterator[bytes]:
        """The object's bytes, chunk by chunk (never the whole object in memory)."""

    async def delete(self, bucket: str, key: str) -> None:
        """Remove ``s3://bucket/key`` (nothing happens when there is none)."""


@dataclass(frozen=True, slots=True)
class ListedObject:
    key: str
    size: int
    last_modified_ms: int
    etag: str


def sse_args(enc: EncryptionSettings) -> dict[str, str]:
    """The server-side-encryption arguments of PutObject/CreateMultipartUpload."""
    if enc.type == "sse-s3":
        return {"ServerSideEncryption": "AES256"}
    if enc.type == "sse-kms":
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": enc.kms_key_id or ""}
    return {}


class S3Storage:
    """PutObject for small files, a multipart upload (``part_bytes`` parts) for large ones.

    Every request is bounded by ``request_timeout_s``: aiobotocore's read timeout does
    not fire on a connection that accepted the request and never answers (measured
    with tests/integration/faultproxy.py), and a stalled upload must fail to be retried.
    """

    def __init__(self, client: Any, encryption: EncryptionSettings, part_bytes: int,
                 request_timeout_s: float = 60):
        self._s3 = client
        self._sse = sse_args(encryption)
        self._part = part_bytes
        self._timeout = request_timeout_s

    async def _call(self, method: str, **kwargs: Any) -> Any:
        return await asyncio.wait_for(getattr(self._s3, method)(**kwargs), self._timeout)

    async def put_file(self, req: PutRequest) -> None:
        extra = {"ContentType": req.content_type, "Metadata": req.metadata, **self._sse}
        if req.content_encoding:
            extra["ContentEncoding"] = req.content_encoding
        if req.size <= self._part:
            await self._call("put_object", Bucket=req.bucket, Key=req.key, Body=req.path.read_bytes(), **extra)
            return
        up = await self._call("create_multipart_upload", Bucket=req.bucket, Key=req.key, **extra)
        upload_id = up["UploadId"]
        crash_point("export.multipart_created")
        try:
            parts = []
            with open(req.path, "rb") as f:
                n = 1
                while chunk := f.read(self._part):
                    r = await self._call("upload_part", Bucket=req.bucket, Key=req.key, UploadId=upload_id,
                                         PartNumber=n, Body=chunk)
                    parts.append({"ETag": r["ETag"], "PartNumber": n})
                    crash_point("export.part_uploaded")
                    n += 1
            await self._call("complete_multipart_upload", Bucket=req.bucket, Key=req.key, UploadId=upload_id,
                             MultipartUpload={"Parts": parts})
        except BaseException:
            try:  # best effort: S3 also expires incomplete uploads by the bucket's lifecycle rule
                await self._call("abort_multipart_upload", Bucket=req.bucket, Key=req.key, UploadId=upload_id)
            except Exception:
                pass
            raise

    async def put_bytes(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        await self._call("put_object", Bucket=bucket, Key=key, Body=body, ContentType=content_type, **self._sse)

    async def put_new(self, bucket: str, key: str, body: bytes, content_type: str) -> bool:
        from botocore.exceptions import ClientError
        try:
            await self._call("put_object", Bucket=bucket, Key=key, Body=body, ContentType=content_type,
                             IfNoneMatch="*", **self._sse)
        except ClientError as exc:
            # 412: an object is there; 409: a put of the same key in flight (S3 answers one of them so)
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    async def list(self, bucket: str, prefix: str, start_after: str = "") -> AsyncIterator[ListedObject]:
        token: dict[str, str] = {"StartAfter": start_after} if start_after else {}
        while True:
            page = await self._call("list_objects_v2", Bucket=bucket, Prefix=prefix, **token)
            for o in page.get("Contents", []):
                yield ListedObject(o["Key"], o["Size"], int(o["LastModified"].timestamp() * 1000),
                                   o.get("ETag", "").strip('"'))
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    async def read(self, bucket: str, key: str, chunk_bytes: int = 1 << 20) -> AsyncIterator[bytes]:
        obj = await self._call("get_object", Bucket=bucket, Key=key)
        body = obj["Body"]
        try:
            while True:
                chunk = await asyncio.wait_for(body.read(chunk_bytes), self._timeout)
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def delete(self, bucket: str, key: str) -> None:
        await self._call("delete_object", Bucket=bucket, Key=key)


class MemoryStorage:
    """Objects in a dict, for component tests."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.puts: list[str] = []
        self.deletes: list[str] = []
        self.lists: list[tuple[str, str]] = []      # (prefix, start_after) of each listing, for tests that count
        self.reads: list[str] = []

    async def put_file(self, req: PutRequest) -> None:
        self.objects[(req.bucket, req.key)] = req.path.read_bytes()
        self.puts.append(req.key)

    async def put_bytes(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        self.objects[(bucket, key)] = body
        self.puts.append(key)

    async def put_new(self, bucket: str, key: str, body: bytes, content_type: str) -> bool:
        if (bucket, key) in self.objects:
            return False
        await self.put_bytes(bucket, key, body, content_type)
        return True

    async def list(self, bucket: str, prefix: str, start_after: str = "") -> AsyncIterator[ListedObject]:
        self.lists.append((prefix, start_after))
        for (b, k), body in sorted(self.objects.items()):
            if b == bucket and k.startswith(prefix) and k > start_after:
                yield ListedObject(k, len(body), 0, "")

    async def read(self, bucket: str, key: str) -> AsyncIterator[bytes]:
        self.reads.append(key)
        yield self.objects[(bucket, key)]

    async def delete(self, bucket: str, key: str) -> None:
        self.objects.pop((bucket, key), None)
        self.deletes.append(key)
