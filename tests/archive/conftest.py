"""Archives under test: a file archive in tmp_path and an S3 archive in a fresh bucket of a moto
server on 127.0.0.1 (a real S3 HTTP endpoint, reached through boto3 as in production); and the
broker harness (memory, SQLite, RabbitMQ) for the archiver."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from hookhub.archive import open_archive
from hookhub.archive.file import FileArchive
from hookhub.archive.objects import ObjectArchive
from hookhub.archive.s3 import S3Archive
from hookhub.broker import Topology
from tests.broker._support import UNREACHABLE_AMQP, UNREACHABLE_MEMORY, Harness


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """boto3 pointed at moto with dummy credentials, whatever the machine's AWS set-up."""
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    return s3_endpoint


@pytest.fixture
def bucket(s3_env: str) -> Iterator[str]:
    name = f"hookhub-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", ()):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)
        client.close()


@pytest.fixture(params=["file", "s3"])
async def archive(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectArchive]:
    if request.param == "file":
        opened = open_archive(f"file://{tmp_path}/archive")
    else:
        opened = open_archive(f"s3://{request.getfixturevalue('bucket')}/some/prefix")
    assert isinstance(opened, ObjectArchive)
    try:
        yield opened
    finally:
        await opened.close()


def stored(archive: ObjectArchive) -> dict[str, bytes]:
    """Every object the archive's storage holds, key -> bytes, read around the archive."""
    if isinstance(archive, FileArchive):
        return {
            str(path.relative_to(archive.root)): path.read_bytes()
            for path in sorted(archive.root.rglob("*"))
            if path.is_file()
        }
    assert isinstance(archive, S3Archive)
    client = boto3.client("s3")
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=archive.bucket):
        for item in page.get("Contents", ()):
            key = item["Key"]
            assert key.startswith(archive.prefix + "/")
            out[key[len(archive.prefix) + 1 :]] = client.get_object(Bucket=archive.bucket, Key=key)[
                "Body"
            ].read()
    return out


def overwrite(archive: ObjectArchive, key: str, body: bytes) -> None:
    """Replace an archived object's bytes around the archive (to corrupt it)."""
    if isinstance(archive, FileArchive):
        (archive.root / key).write_bytes(body)
    else:
        assert isinstance(archive, S3Archive)
        boto3.client("s3").put_object(Bucket=archive.bucket, Key=f"{archive.prefix}/{key}", Body=body)


@pytest.fixture(params=["memory", "sqlite", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
async def harness(request, namespace, tmp_sqlite_url) -> AsyncIterator[Harness]:
    if request.param == "rabbitmq":
        h = Harness(
            "rabbitmq", request.getfixturevalue("rabbitmq_url"), Topology(namespace), UNREACHABLE_AMQP
        )
    elif request.param == "memory":
        h = Harness("memory", "memory://", Topology(namespace), UNREACHABLE_MEMORY)
    else:
        h = Harness("sqlite", tmp_sqlite_url, Topology(namespace), "sqlite:///unused")
    try:
        yield h
    finally:
        await h.cleanup()
