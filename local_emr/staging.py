"""A step's view of S3 on local disk: what its command names is mirrored in, what it wrote out.

Local Spark has no ``s3://`` filesystem (no EMRFS, no hadoop-aws jars here). Hadoop's
``ViewFileSystemOverloadScheme`` lets the step keep its ``s3://bucket/key`` URIs unchanged:
each bucket is mounted on a local folder (:func:`hadoop_confs`), so Spark lists, reads and
writes ``s3://`` paths that live on this machine, and the rows the jobs write still say
``s3://...``. Around the step, :class:`Stage` copies the named prefixes in from the S3 API
(``ListObjectsV2``, ``GetObject``; each file's mtime set to the object's ``LastModified``, as
EMRFS reports it) and, after the step, sends back what changed (``PutObject``) and removes
what the step deleted (``DeleteObjects``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

S3_URI = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/[^,\s]*)?")
"""An ``s3://bucket[/key]`` URI inside a command-line word (also in ``a,b`` lists)."""

Snapshot = dict[Path, tuple[int, int]]
"""Local file -> (size, mtime in ns)."""


def s3_uris(words: Iterable[str]) -> list[tuple[str, str]]:
    """The ``(bucket, key prefix)`` of every ``s3://`` URI in ``words``, in order, no repeats.

    >>> s3_uris(["--py-files", "s3://b/code/x.zip,s3://b/y.py", "--out", "s3://c"])
    [('b', 'code/x.zip'), ('b', 'y.py'), ('c', '')]
    """
    found: list[tuple[str, str]] = []
    for word in words:
        for match in S3_URI.finditer(word):
            uri = (match.group(1), (match.group(2) or "").strip("/"))
            if uri not in found:
                found.append(uri)
    return found


def hadoop_confs(mounts: dict[str, Path]) -> dict[str, str]:
    """Spark confs that serve ``s3://<bucket>/...`` from ``mounts[bucket]`` on local disk.

    The ``s3`` scheme becomes a view whose mount table for authority ``<bucket>`` falls back
    to the bucket's folder; Hadoop's local filesystem does the I/O, without checksum files.
    """
    confs = {
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.viewfs.ViewFileSystemOverloadScheme",
        "spark.hadoop.fs.s3.impl.disable.cache": "true",
        "spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
    }
    for bucket, folder in sorted(mounts.items()):
        confs[f"spark.hadoop.fs.viewfs.mounttable.{bucket}.linkFallback"] = folder.as_uri()
    return confs


def snapshot(root: Path) -> Snapshot:
    """Size and mtime of every regular file under ``root``."""
    found: Snapshot = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            info = path.stat()
            found[path] = (info.st_size, info.st_mtime_ns)
    return found


def skipped(relative: str) -> bool:
    """Hadoop's by-products that EMRFS never writes: hidden files, ``_temporary`` folders."""
    parts = relative.split("/")
    return any(p.startswith(".") or p == "_temporary" for p in parts)


@dataclass
class Stage:
    """The local mirror of some S3 prefixes for one cluster: ``<root>/<bucket>/<key>``.

    :param s3: a boto3 S3 client of the stand-in's endpoint.
    :param root: the cluster's staging folder (kept between its steps, removed with it).
    """

    s3: Any
    root: Path

    def folder(self, bucket: str) -> Path:
        """Where ``s3://<bucket>/`` lives locally."""
        return self.root / bucket

    def pull(self, uris: Iterable[tuple[str, str]]) -> dict[str, int]:
        """Mirror each ``(bucket, prefix)`` locally; objects gone from S3 go locally too.

        An object counts as under ``prefix`` when its key is the prefix or starts with
        ``prefix/``. Files already staged with the object's size and ``LastModified`` are
        not fetched again. :returns: objects fetched, per bucket.
        """
        fetched: dict[str, int] = {}
        for bucket, prefix in uris:
            folder = self.folder(bucket)
            folder.mkdir(parents=True, exist_ok=True)
            listed = set()
            for obj in self._objects(bucket, prefix):
                path = folder / obj["Key"]
                listed.add(path)
                mtime_ns = int(obj["LastModified"].timestamp() * 1e9)
                if path.is_file() and (path.stat().st_size, path.stat().st_mtime_ns) == (
                    obj["Size"],
                    mtime_ns,
                ):
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(bucket, obj["Key"], str(path))
                os.utime(path, ns=(mtime_ns, mtime_ns))
                fetched[bucket] = fetched.get(bucket, 0) + 1
            base = folder / prefix if prefix else folder
            stale = [p for p in snapshot(base) if p not in listed] if base.is_dir() else []
            for path in stale:
                path.unlink()
            log.info("staged s3://%s/%s: %d objects", bucket, prefix, len(listed))
        return fetched

    def _objects(self, bucket: str, prefix: str) -> Iterable[dict[str, Any]]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if not prefix or key == prefix or key.startswith(prefix.rstrip("/") + "/"):
                    yield obj

    def snapshot(self) -> Snapshot:
        """The state of every staged bucket, to compare with after a step."""
        return snapshot(self.root) if self.root.is_dir() else {}

    def push(self, before: Snapshot) -> tuple[list[str], list[str]]:
        """Send to S3 the files new or changed since ``before``; delete the ones removed.

        :returns: the ``s3://`` URIs written and deleted.
        """
        after = self.snapshot()
        written, deleted = [], []
        for path, state in sorted(after.items()):
            bucket, key = self._address(path)
            if before.get(path) == state or skipped(key):
                continue
            self.s3.upload_file(str(path), bucket, key)
            modified = self.s3.head_object(Bucket=bucket, Key=key)["LastModified"]
            mtime_ns = int(modified.timestamp() * 1e9)
            os.utime(path, ns=(mtime_ns, mtime_ns))
            written.append(f"s3://{bucket}/{key}")
        gone: dict[str, list[str]] = {}
        for path in sorted(set(before) - set(after)):
            bucket, key = self._address(path)
            if not skipped(key):
                gone.setdefault(bucket, []).append(key)
        for bucket, keys in gone.items():
            for start in range(0, len(keys), 1000):
                chunk = [{"Key": key} for key in keys[start : start + 1000]]
                self.s3.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
            deleted += [f"s3://{bucket}/{key}" for key in keys]
        return written, deleted

    def _address(self, path: Path) -> tuple[str, str]:
        bucket, *key = path.relative_to(self.root).parts
        return bucket, "/".join(key)
