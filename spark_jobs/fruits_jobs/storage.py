"""Small files (reports, plots) on any URI Spark can write, through Hadoop's FileSystem API.

The same calls reach ``file:``, ``s3://`` (EMRFS on EMR) and ``s3a://``, so the jobs never
branch on the scheme; only :func:`publish_bytes` does, since a rename is atomic on a local
disk and a copy on S3. Data sets go through the DataFrame writers, never through here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from fruits_jobs import contract


def _filesystem(spark: SparkSession, uri: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    return path.getFileSystem(conf), path


def delete(spark: SparkSession, uri: str) -> bool:
    """Delete the file or folder at ``uri`` (recursively); whether anything was there."""
    filesystem, path = _filesystem(spark, uri)
    return bool(filesystem.delete(path, True))


def list_files(spark: SparkSession, uri: str) -> list[str]:
    """URIs of the files directly in the folder ``uri`` (not recursive); [] if it is absent."""
    filesystem, path = _filesystem(spark, uri)
    if not filesystem.exists(path):
        return []
    return [str(s.getPath().toString()) for s in filesystem.listStatus(path) if s.isFile()]


def list_tree(spark: SparkSession, root: str, names: Iterable[str]) -> tuple[str, dict[str, int]]:
    """The root's full URI, and key (relative to it) -> length of the files under its ``names``.

    Each ``root/<name>`` is listed recursively (a file lists itself; an absent name, nothing).
    On a local disk Hadoop leaves its ``.crc`` checksums out.
    """
    filesystem, path = _filesystem(spark, root)
    qualified = str(filesystem.makeQualified(path).toString()).rstrip("/")
    found = {}
    for name in names:
        filesystem, path = _filesystem(spark, contract.join(qualified, name))
        if not filesystem.exists(path):
            continue
        files = filesystem.listFiles(path, True)
        while files.hasNext():
            status = files.next()
            key = str(status.getPath().toString()).removeprefix(f"{qualified}/")
            found[key] = int(status.getLen())
    return qualified, found


def status(spark: SparkSession, uri: str) -> tuple[int, datetime]:
    """Length in bytes and modification time of the file at ``uri``."""
    filesystem, path = _filesystem(spark, uri)
    found = filesystem.getFileStatus(path)
    return found.getLen(), datetime.fromtimestamp(found.getModificationTime() / 1000)


def write_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    """Create or replace the file at ``uri`` with ``data`` (on S3: one PUT when closed)."""
    filesystem, path = _filesystem(spark, uri)
    stream = filesystem.create(path, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def publish_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    """Create or replace the file at ``uri`` so that no reader ever sees a part of ``data``.

    On S3 (EMRFS, S3A) the object appears whole when its one PUT completes. On a local disk
    (``file:``, where the driver runs), ``data`` goes to a temporary file beside it, which
    ``os.replace`` renames over ``uri`` in one step (Hadoop's local rename refuses to
    replace, and deletes first when told to); a process killed before that leaves only the
    temporary ``<name>.<random>.tmp`` (:func:`fruits_jobs.contract.temporary_name`).
    """
    filesystem, path = _filesystem(spark, uri)
    if filesystem.getScheme() != "file":
        write_bytes(spark, uri, data)
        return
    target = Path(filesystem.makeQualified(path).toUri().getPath())
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(contract.temporary_name(target.name))
    temporary.write_bytes(data)
    # A checksum Hadoop wrote for an earlier version would fail its reads of this one.
    target.with_name(f".{target.name}.crc").unlink(missing_ok=True)
    os.replace(temporary, target)


def read_bytes(spark: SparkSession, uri: str) -> bytes:
    """The content of the file at ``uri``, read by the driver (one GET on S3)."""
    filesystem, path = _filesystem(spark, uri)
    stream = filesystem.open(path)
    try:
        return bytes(spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()


def write_json(spark: SparkSession, uri: str, document: dict[str, Any]) -> None:
    """Publish ``document`` as indented JSON at ``uri`` (see :func:`publish_bytes`)."""
    publish_bytes(spark, uri, json.dumps(document, indent=2, sort_keys=True).encode())
