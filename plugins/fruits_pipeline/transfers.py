"""Streaming copies between two stores, memory bounded whatever the file size.

:class:`Transfers` copies a listed file from one :class:`~fruits_pipeline.stores.Store` to
another (boto3's managed transfers on the S3 side); :func:`s3_etag` gives the ETag its upload
of a local file gets, so a copy on S3 can be compared with the file without a download.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from s3transfer.subscribers import BaseSubscriber
from s3transfer.utils import ChunksizeAdjuster

from fruits_pipeline.stores import UPLOAD_ARGS, Entry, LocalStore, S3Store, Store

MULTIPART_BYTES = 8 * 1024 * 1024
"""Multipart threshold and part size of S3 transfers (boto3's and the AWS CLI's default)."""
BLOCK_BYTES = 1024 * 1024
"""What a local copy or hash holds in memory at a time."""
COPY_ARGS = {"ChecksumAlgorithm": "CRC32"}
"""A server-side copy gets a CRC32 of its own content, not the source's (maybe composite) one."""


def s3_etag(path: Path, size: int) -> str:
    """The ETag S3 gives ``path`` uploaded the way :class:`Transfers` uploads it.

    Below :data:`MULTIPART_BYTES` the content's MD5; above, the MD5 of the parts' MD5s and
    ``-<parts>`` (parts of :data:`MULTIPART_BYTES`, as s3transfer sizes them). Read in
    :data:`BLOCK_BYTES` blocks: a local read, never a download.
    """
    with open(path, "rb") as handle:
        if size < MULTIPART_BYTES:
            return _md5(handle, size).hexdigest()
        part_size = ChunksizeAdjuster().adjust_chunksize(MULTIPART_BYTES, size)
        parts = [_md5(handle, part_size).digest() for _ in range(-(-size // part_size))]
    return f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"


def _md5(handle: BinaryIO, limit: int) -> Any:
    """The MD5 of the next ``limit`` bytes of ``handle`` (fewer at its end)."""
    digest = hashlib.md5(usedforsecurity=False)
    while limit > 0 and (block := handle.read(min(BLOCK_BYTES, limit))):
        digest.update(block)
        limit -= len(block)
    return digest


class _Bounded:
    """A write-only file that refuses more than ``limit`` bytes (an object grown since listed)."""

    def __init__(self, handle: BinaryIO, limit: int, progress: Callable[[int], None]) -> None:
        self.handle, self.left, self.progress = handle, limit, progress

    def write(self, data: bytes) -> int:
        self.left -= len(data)
        if self.left < 0:
            raise OSError("the file grew beyond the size it was listed with")
        self.progress(len(data))
        return self.handle.write(data)


class _Subscriber(BaseSubscriber):
    """Passes s3transfer's byte counts on; gives it the listed size and ETag (no ``HeadObject``).

    With the ETag, a ranged download asks for that version of the object (``IfMatch``).
    """

    def __init__(self, entry: Entry, progress: Callable[[int], None]) -> None:
        self.entry, self.progress = entry, progress

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self.entry.size)
        if self.entry.etag:
            future.meta.provide_object_etag(f'"{self.entry.etag}"')

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self.progress(bytes_transferred)


class Transfers:
    """Streaming copies from ``source`` to ``dest``, callable from many threads at once.

    * folder -> folder: 1 MB blocks into :meth:`LocalStore.staged`;
    * S3 -> folder: ``GetObject`` (ranged, in parallel, above :data:`MULTIPART_BYTES`) into
      :meth:`LocalStore.staged`, the object's ``LastModified`` kept as the file's mtime;
    * folder -> S3: ``PutObject``, or a multipart upload of 8 MB parts;
    * S3 -> S3: ``CopyObject`` or ``UploadPartCopy``, server side (no byte passes through
      this process), on condition that the source still has the listed ETag.

    The S3 side runs on one s3transfer manager of ``concurrency`` request threads shared by
    all copies, so memory stays bounded whatever the sizes: at most a few parts in flight
    (s3transfer's in-memory chunk limits), never a whole file. The listed size is handed to
    it, so a download or copy makes no ``HeadObject`` first.
    """

    def __init__(self, source: Store, dest: Store, concurrency: int) -> None:
        self.source, self.dest = source, dest
        client = next((s.client for s in (dest, source) if isinstance(s, S3Store)), None)
        config = TransferConfig(
            multipart_threshold=MULTIPART_BYTES,
            multipart_chunksize=MULTIPART_BYTES,
            max_concurrency=concurrency,
        )
        self._manager = None if client is None else create_transfer_manager(client, config)

    def __enter__(self) -> Transfers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._manager is not None:
            self._manager.shutdown(cancel=exc_info[0] is not None)

    def copy(self, entry: Entry, progress: Callable[[int], None]) -> None:
        """Copy ``entry`` (key already vetted by the caller), reporting bytes to ``progress``."""
        source, dest = self.source, self.dest
        if isinstance(dest, LocalStore):
            with dest.staged(entry.key, entry.mtime_ns) as handle:
                self._fetch(entry, handle, progress)
            return
        assert isinstance(dest, S3Store) and self._manager is not None
        target = (dest.bucket, dest.object_key(entry.key))
        subscribers = [_Subscriber(entry, progress)]
        if isinstance(source, LocalStore):
            future = self._manager.upload(
                str(source.path(entry.key)), *target, UPLOAD_ARGS, subscribers
            )
        else:
            assert isinstance(source, S3Store)
            future = self._manager.copy(
                {"Bucket": source.bucket, "Key": source.object_key(entry.key)},
                *target,
                {**UPLOAD_ARGS, **COPY_ARGS, "CopySourceIfMatch": f'"{entry.etag}"'},
                subscribers,
                source_client=source.client,
            )
        future.result()

    def _fetch(self, entry: Entry, handle: BinaryIO, progress: Callable[[int], None]) -> None:
        source = self.source
        if isinstance(source, LocalStore):
            with open(source.path(entry.key), "rb") as data:
                shutil.copyfileobj(data, _Bounded(handle, entry.size, progress), BLOCK_BYTES)
            return
        assert isinstance(source, S3Store) and self._manager is not None
        single = entry.size < MULTIPART_BYTES
        target = _Bounded(handle, entry.size, lambda n: None) if single else handle
        self._manager.download(
            source.bucket,
            source.object_key(entry.key),
            target,
            subscribers=[_Subscriber(entry, progress)],
        ).result()
