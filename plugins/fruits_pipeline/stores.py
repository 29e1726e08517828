"""A folder of files, on this machine or under an S3 prefix, behind a few methods.

Sync and validation are written once against :class:`Store`; :func:`open_store` picks the
implementation from the URI. Keys are ``/``-separated paths relative to the store's root, and
every key passes :func:`check_key` before it names a file or an object: keys come from a
landing area the mobile app fills, so they are not ours to trust. Copies between two stores:
:mod:`fruits_pipeline.transfers`.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlparse

PARTIAL_SUFFIX = ".fruits-partial"
"""End of the hidden name a local copy is written under before it is renamed into place."""
UPLOAD_ARGS = {"ServerSideEncryption": "AES256"}
"""Every object we write is SSE-S3 encrypted, so its ETag stays content-derived."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class UnsafeKeyError(ValueError):
    """A key that could name something outside its store's root; ``reason`` says why."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"unsafe key {key!r}: {reason}")
        self.key, self.reason = key, reason


def check_key(key: str) -> str:
    """Return ``key`` if it is a plain relative key, else raise :class:`UnsafeKeyError`.

    Refused: an empty key, an absolute one (``/...``), a backslash (a separator elsewhere),
    an empty, ``.`` or ``..`` segment (``a//b``, ``a/``, ``../x``), and control characters
    (C0, DEL, C1: newlines forge log lines, NUL truncates paths). S3 itself resolves none
    of these, but a local folder, Hadoop's S3A and the AWS CLI do.

    >>> check_key("Apple/a.jpg")
    'Apple/a.jpg'
    >>> check_key("Apple/../../x")
    Traceback (most recent call last):
    ...
    fruits_pipeline.stores.UnsafeKeyError: unsafe key 'Apple/../../x': a '..' segment
    """
    if not key:
        reason = "empty"
    elif key.startswith("/"):
        reason = "absolute"
    elif "\\" in key:
        reason = "a backslash"
    elif _CONTROL.search(key):
        reason = "a control character"
    elif key.endswith("/"):
        reason = "ends with '/' (a folder marker, not a file)"
    else:
        segments = set(key.split("/"))
        bad = next((s for s in ("", ".", "..") if s in segments), None)
        if bad is None:
            return key
        reason = f"a {bad!r} segment" if bad else "an empty segment"
    raise UnsafeKeyError(key, reason)


@dataclass(frozen=True)
class Entry:
    """A file as its store's listing gives it, no content read.

    :param key: path relative to the store's root (not yet checked: see :func:`check_key`).
    :param size: bytes.
    :param mtime_ns: modification time (S3: ``LastModified``, whole seconds), nanoseconds.
    :param etag: the S3 ETag without quotes; None for a local file.
    :param regular: False for a symlink, FIFO, socket or device: never read.
    """

    key: str
    size: int
    mtime_ns: int
    etag: str | None = None
    regular: bool = True


class Store(Protocol):
    """What sync and validation need from a folder of files."""

    uri: str

    def listing(self, prefix: str = "") -> Iterator[Entry]:
        """Every file under ``prefix``, hidden ones included, keys unchecked."""

    def entries(self, prefix: str = "") -> Iterator[Entry]:
        """:meth:`listing` without hidden files (a ``.name`` segment) and non-regular ones."""

    def read(self, key: str, max_bytes: int | None = None) -> bytes:
        """The content of ``key`` (the first ``max_bytes`` only, when given)."""

    def write(self, key: str, data: bytes) -> None:
        """Create or replace ``key``."""

    def discard_partials(self) -> int:
        """Remove what a killed copy into this store left; how many were removed."""

    def delete(self, key: str) -> None:
        """Delete ``key``; nothing happens when it is absent."""


def visible(entries: Iterator[Entry]) -> Iterator[Entry]:
    """The regular files of ``entries`` with no hidden (``.name``) segment in their key."""
    for entry in entries:
        if entry.regular and not any(s.startswith(".") for s in entry.key.split("/")):
            yield entry


def _raise(error: OSError) -> None:
    """``os.walk``'s error handler: an unreadable folder fails the listing, naming itself."""
    raise error


@dataclass
class LocalStore:
    """A folder on this machine."""

    root: Path

    @property
    def uri(self) -> str:
        """The folder as a path string."""
        return str(self.root)

    def path(self, key: str) -> Path:
        """``root/key`` resolved, after :func:`check_key`; refused unless it lies in the root.

        Resolving follows the symlinks already in the folder, so a link pointing out of it
        is refused as well (compared as paths, not strings: ``/lake2`` is not in ``/lake``).
        """
        root = self.root.resolve()
        target = (root / check_key(key)).resolve()
        if not target.is_relative_to(root):
            raise UnsafeKeyError(key, f"resolves to {target}, outside {root}")
        return target

    def listing(self, prefix: str = "") -> Iterator[Entry]:
        """Walk the folder (symlinks not followed); ``prefix`` is a key prefix, as on S3."""
        base = self.root / prefix.rpartition("/")[0]
        if not base.is_dir():
            return
        for folder, dirs, files in os.walk(base, onerror=_raise):
            dirs.sort()
            links = [d for d in dirs if Path(folder, d).is_symlink()]  # listed, not followed
            for name in sorted(files + links):
                path = Path(folder, name)
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    info = path.lstat()
                except FileNotFoundError:  # deleted since walked: not an input
                    continue
                regular = stat.S_ISREG(info.st_mode)
                yield Entry(key, info.st_size, info.st_mtime_ns, regular=regular)

    def entries(self, prefix: str = "") -> Iterator[Entry]:
        """The visible regular files under ``prefix``."""
        return visible(self.listing(prefix))

    def read(self, key: str, max_bytes: int | None = None) -> bytes:
        """Read the file at ``root/key``."""
        with open(self.path(key), "rb") as handle:
            return handle.read(-1 if max_bytes is None else max_bytes)

    def write(self, key: str, data: bytes) -> None:
        """Write ``root/key`` through :meth:`staged`: readers never see half of it."""
        with self.staged(key) as handle:
            handle.write(data)

    @contextmanager
    def staged(self, key: str, mtime_ns: int | None = None) -> Iterator[BinaryIO]:
        """A file to fill that becomes ``root/key`` only when the block ends without error.

        It is written as ``.<name>.<random>.fruits-partial`` in the destination folder, then
        renamed over ``root/key`` (``os.replace``: atomic on one filesystem) with ``mtime_ns``
        as its modification time; on error it is deleted. A process killed mid-copy leaves
        only that hidden file, which listings and Spark skip and :meth:`discard_partials`
        removes: never a half-written image under its real name.
        """
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX, dir=target.parent
        )
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
            if mtime_ns is not None:
                os.utime(temp, ns=(mtime_ns, mtime_ns))
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def discard_partials(self) -> int:
        """Delete the ``*.fruits-partial`` files a killed copy left (see :meth:`staged`)."""
        partials = [
            self.root / e.key
            for e in self.listing()
            if e.key.endswith(PARTIAL_SUFFIX) and e.key.rpartition("/")[2].startswith(".")
        ]
        for path in partials:
            path.unlink(missing_ok=True)
        return len(partials)

    def delete(self, key: str) -> None:
        """Delete ``root/key``, then the folders that leaves empty (never the root)."""
        target = self.path(key)
        target.unlink(missing_ok=True)
        root = self.root.resolve()
        for folder in target.parents:
            if folder == root or not folder.is_dir() or any(folder.iterdir()):
                break
            folder.rmdir()


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

    @property
    def root(self) -> str:
        """The key prefix of the store's objects: ``prefix/``, or empty for a whole bucket."""
        prefix = self.prefix.strip("/")
        return f"{prefix}/" if prefix else ""

    def object_key(self, key: str) -> str:
        """The S3 key of ``key``, after :func:`check_key`."""
        return self.root + check_key(key)

    def listing(self, prefix: str = "") -> Iterator[Entry]:
        """Page through ``ListObjectsV2`` (1,000 keys a request)."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.root + prefix):
            for item in page.get("Contents", []):
                yield Entry(
                    item["Key"][len(self.root) :],
                    item["Size"],
                    int(item["LastModified"].timestamp()) * 1_000_000_000,
                    item["ETag"].strip('"'),
                )

    def entries(self, prefix: str = "") -> Iterator[Entry]:
        """The visible objects under ``prefix`` (folder markers ``a/`` are not files)."""
        return (e for e in visible(self.listing(prefix)) if not e.key.endswith("/"))

    def read(self, key: str, max_bytes: int | None = None) -> bytes:
        """``GetObject``, with a ``Range`` when ``max_bytes`` is given."""
        extra = {"Range": f"bytes=0-{max_bytes - 1}"} if max_bytes else {}
        response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key), **extra)
        return response["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        """``PutObject`` (single part, so the ETag stays the MD5), server-side encrypted."""
        self.client.put_object(
            Bucket=self.bucket, Key=self.object_key(key), Body=data, **UPLOAD_ARGS
        )

    def discard_partials(self) -> int:
        """Nothing to do: S3 shows an object only once its upload completed.

        An unfinished multipart upload stays invisible; the bucket's lifecycle rule
        (``make aws-bootstrap``) aborts it after 7 days.
        """
        return 0

    def delete(self, key: str) -> None:
        """``DeleteObject``."""
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))


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
