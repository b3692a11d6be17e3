"""The archive in an S3 bucket (`s3://BUCKET/PREFIX`), or any S3-compatible store.

Credentials, region and endpoint come from boto3's usual sources (environment, config files,
instance roles; `AWS_ENDPOINT_URL` for MinIO, moto or LocalStack), never from the hub's config.
A PUT is atomic and durable when it answers, which is what `Archive.write` promises. The client
is made on first use (importing boto3 and building a client cost a cold start that a function
which never touches the archive should not pay) and is shared by the worker threads, which
boto3 clients allow.
"""

from __future__ import annotations

import threading
from typing import IO, Any

from hookhub.archive.codec import SUFFIX
from hookhub.archive.objects import ObjectArchive

DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes


class S3Archive(ObjectArchive):
    def __init__(self, bucket: str, prefix: str = "") -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Archive({self.bucket!r}, {self.prefix!r})"

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                config = Config(retries={"mode": "standard", "max_attempts": 5})
                self._client = boto3.session.Session().client("s3", config=config)
            return self._client

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _list(self, prefix: str, **kwargs: Any) -> Any:
        """Every page of ListObjectsV2 under the partition `prefix`."""
        paginator = self.client().get_paginator("list_objects_v2")
        return paginator.paginate(Bucket=self.bucket, Prefix=self._full(prefix) + "/", **kwargs)

    def _children(self, prefix: str) -> list[str]:
        names = []
        for page in self._list(prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", ()):
                names.append(common["Prefix"].rstrip("/").rpartition("/")[2])
        return names

    def _all_keys(self, prefix: str) -> list[str]:
        return [item["Key"] for page in self._list(prefix) for item in page.get("Contents", ())]

    def _keys(self, prefix: str) -> list[str]:
        strip = len(self._full(""))
        return [key[strip:] for key in self._all_keys(prefix) if key.endswith(SUFFIX)]

    def _put(self, key: str, body: bytes) -> None:
        self.client().put_object(
            Bucket=self.bucket, Key=self._full(key), Body=body, ContentType="application/gzip"
        )

    def _open(self, key: str) -> IO[bytes] | None:
        client = self.client()
        try:
            answer = client.get_object(Bucket=self.bucket, Key=self._full(key))
        except client.exceptions.NoSuchKey:
            return None
        body: IO[bytes] = answer["Body"]
        return body

    def _drop(self, prefix: str) -> int:
        keys = self._all_keys(prefix)
        client = self.client()
        for i in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": key} for key in keys[i : i + DELETE_BATCH]]
            answer = client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise OSError(
                    f"S3 refused to delete {len(answer['Errors'])} archived objects, "
                    f"e.g. {first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )
        return sum(1 for key in keys if key.endswith(SUFFIX))

    async def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
