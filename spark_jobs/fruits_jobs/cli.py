"""What every job entry point shares: the Spark session, logging, one-line errors, timings."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from pyspark.sql import SparkSession

from fruits_jobs import contract
from fruits_jobs.errors import JobError

log = logging.getLogger(__name__)


def session(app_name: str) -> SparkSession:
    """The active Spark session, or a new one named ``app_name`` (master from spark-submit)."""
    return SparkSession.builder.appName(app_name).getOrCreate()


def run_job(
    name: str,
    parser: argparse.ArgumentParser,
    run: Callable[[SparkSession, argparse.Namespace], dict[str, Any]],
    argv: list[str] | None,
) -> int:
    """Parse ``argv``, call ``run`` and turn a user-fixable error into exit code 2.

    ``run`` returns the job's report; a :class:`~fruits_jobs.errors.JobError` prints
    ``<name>: error: <message>`` on stderr, nothing more (argparse does the same for bad flags).
    The line also goes to the driver JVM's stderr, beside Spark's own log: spark-submit merges
    the Python driver's stderr into its stdout, and an EMR step's error is looked for in
    ``stderr.gz`` (the driver container's, in cluster mode).
    """
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")  # warnings up
    logging.getLogger("fruits_jobs").setLevel(logging.INFO)  # py4j's INFO lines stay out
    args = parser.parse_args(argv)
    spark = session(f"fruits-{name}")
    try:
        run(spark, args)
    except JobError as err:
        line = f"{name}: error: {err}"
        print(line, file=sys.stderr)
        spark.sparkContext._jvm.java.lang.System.err.println(line)  # py4j: the JVM of the driver
        return 2
    return 0


def positive_int(text: str) -> int:
    """``argparse`` type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def batch_id(text: str) -> str:
    """``argparse`` type: a batch id (see :func:`fruits_jobs.contract.validate_batch_id`)."""
    try:
        return contract.validate_batch_id(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def lake_digest(text: str) -> str:
    """``argparse`` type: a lake listing's digest (:func:`fruits_jobs.contract.lake_digest`).

    >>> lake_digest("16-2f0a")
    '16-2f0a'
    >>> lake_digest("../x")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: not a lake digest (<images>-<hex>): '../x'
    """
    try:
        contract.digest_images(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a lake digest (<images>-<hex>): {text!r}") from err
    return text


class Stopwatch:
    """Seconds spent in a job's steps, for its report's ``timings_s``.

    >>> clock = Stopwatch()
    >>> seconds = clock.lap("fit")
    >>> list(clock.timings())
    ['fit', 'total']
    """

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, step: str) -> float:
        """Record the seconds since the previous lap (or the start) as ``step``; return them."""
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        self.laps[step] = round(seconds, 3)
        return seconds

    def timings(self) -> dict[str, float]:
        """Each lap, then ``total``: the seconds since the start, all rounded to the ms."""
        return {**self.laps, "total": round(time.perf_counter() - self.started, 3)}
