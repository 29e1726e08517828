"""Small files (reports, plots) on any URI Spark can write, through Hadoop's FileSystem API.

The same calls reach ``file:``, ``s3://`` (EMRFS on EMR) and ``s3a://``, so the jobs never
branch on the scheme. Data sets go through the DataFrame writers, never through here.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pyspark.sql import SparkSession


def _filesystem(spark: SparkSession, uri: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    return path.getFileSystem(conf), path


def exists(spark: SparkSession, uri: str) -> bool:
    """Whether a file or folder exists at ``uri``."""
    filesystem, path = _filesystem(spark, uri)
    return bool(filesystem.exists(path))


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


def status(spark: SparkSession, uri: str) -> tuple[int, datetime]:
    """Length in bytes and modification time of the file at ``uri``."""
    filesystem, path = _filesystem(spark, uri)
    found = filesystem.getFileStatus(path)
    return found.getLen(), datetime.fromtimestamp(found.getModificationTime() / 1000)


def write_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    """Create or replace the file at ``uri`` with ``data``."""
    filesystem, path = _filesystem(spark, uri)
    stream = filesystem.create(path, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def read_bytes(spark: SparkSession, uri: str) -> bytes:
    """The content of the file at ``uri``."""
    return bytes(
        spark.sparkContext.binaryFiles(uri).values().first()  # one small file: no data collect
    )


def write_json(spark: SparkSession, uri: str, document: dict[str, Any]) -> None:
    """Write ``document`` as indented JSON at ``uri``."""
    write_bytes(spark, uri, json.dumps(document, indent=2, sort_keys=True).encode())


def read_json(spark: SparkSession, uri: str) -> dict[str, Any]:
    """Read the JSON document at ``uri``."""
    return json.loads(read_bytes(spark, uri))
