"""A folder of files, on this machine or under an S3 prefix, behind four methods.

Sync and validation are written once against :class:`Store`; :func:`open_store` picks the
implementation from the URI. Keys are ``/``-separated paths relative to the store's root.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse


@dataclass(frozen=True)
class Entry:
    """A file in a store: its key, size, and content MD5 (hex) where the store knows it."""

    key: str
    size: int
    md5: str | None


class Store(Protocol):
    """What sync and validation need from a folder of files."""

    uri: str

    def entries(self, prefix: str = "") -> Iterator[Entry]:
        """Every file under ``prefix``, hidden files (``.name``) excluded."""

    def read(self, key: str, max_bytes: int | None = None) -> bytes:
        """The content of ``key`` (the first ``max_bytes`` only, when given)."""

    def write(self, key: str, data: bytes) -> None:
        """Create or replace ``key``."""

    def md5(self, key: str) -> str:
        """The content MD5 of ``key`` (hex)."""


def md5_of(data: bytes) -> str:
    """Hex MD5 of ``data`` (the ETag of a single-part S3 upload)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass
class LocalStore:
    """A folder on this machine."""

    root: Path

    @property
    def uri(self) -> str:
        """The folder as a path string."""
        return str(self.root)

    def entries(self, prefix: str = "") -> Iterator[Entry]:
        """Walk the folder; ``prefix`` is a key prefix, as on S3 (``_reports/featurize-``).

        The MD5 is left for :meth:`md5` to compute when asked.
        """
        base = self.root / prefix.rpartition("/")[0]
        if not base.is_dir():
            return
        for folder, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = Path(folder, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield Entry(key, path.stat().st_size, None)

    def read(self, key: str, max_bytes: int | None = None) -> bytes:
        """Read the file at ``root/key``."""
        with open(self.root / key, "rb") as handle:
            return handle.read(-1 if max_bytes is None else max_bytes)

    def write(self, key: str, data: bytes) -> None:
        """Write ``root/key``, creating folders."""
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def md5(self, key: str) -> str:
        """MD5 of the file's content."""
        return md5_of(self.read(key))


@dataclass
class S3Store:
    """An S3 prefix, through a boto3 S3 client (``ListObjectsV2``, ``GetObject``, ``PutObject``)."""

    client: Any
    bucket: str
    prefix: str = ""

    @property
    def uri(self) -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix.strip('/')}/{key}".lstrip("/")

    def entries(self, prefix: str = "") -> Iterator[Entry]:
        """Page through ``ListObjectsV2``; the ETag is the MD5 unless it is a multipart one."""
        root = self._key("")
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            for item in page.get("Contents", []):
                key = item["Key"][len(root) :]
                if key.rsplit("/", 1)[-1].startswith(".") or key.endswith("/"):
                    continue
                etag = item["ETag"].strip('"')
                yield Entry(key, item["Size"], None if "-" in etag else etag)

    def read(self, key: str, max_bytes: int | None = None) -> bytes:
        """``GetObject``, with a ``Range`` when ``max_bytes`` is given."""
        extra = {"Range": f"bytes=0-{max_bytes - 1}"} if max_bytes else {}
        response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)
        return response["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        """``PutObject`` (single part, so the ETag stays the MD5), server-side encrypted."""
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, ServerSideEncryption="AES256"
        )

    def md5(self, key: str) -> str:
        """The ETag from ``HeadObject`` when it is an MD5, else the MD5 of the content."""
        etag = self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ETag"].strip('"')
        return etag if "-" not in etag else md5_of(self.read(key))


def open_store(uri: str, s3_client: Any = None) -> Store:
    """A :class:`S3Store` for ``s3://bucket/prefix`` (``s3_client`` required), else local."""
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "s3a"):
        if s3_client is None:
            raise ValueError(f"an S3 client is needed to open {uri}")
        return S3Store(s3_client, parsed.netloc, parsed.path.strip("/"))
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"unsupported store URI {uri!r}: use a folder or s3://bucket/prefix")
    return LocalStore(Path(parsed.path if parsed.scheme else uri))
