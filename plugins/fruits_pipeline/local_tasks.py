"""The local DAG's own tasks: its preflight and spark-submit on ``local[*]``.

Also how long its ``validate_outputs`` sensor waits for the outputs in the local folder.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from airflow.sdk import task
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from fruits_pipeline.class_archive import ClassArchive
from fruits_pipeline.config import Settings
from fruits_pipeline.runs import current_run
from fruits_pipeline.steps import job_args, local_java_options, local_target

log = logging.getLogger(__name__)

SPARK_INFO = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d INFO ")
"""Spark's own INFO lines, left out of the task log (the jobs' own log lines stay)."""
CONTINUATION = re.compile(r"^(\s|\+- )")
"""A line that continues the log entry above it: Spark's plan trees and RDD descriptions."""
FIRST_ERROR = re.compile(r"^(\w+: error: |[\w.]*(Error|Exception): )")
"""A job's one-line error (``featurize: error: ...``) or a Python exception's last line."""
VALIDATION_POKE_S = 5
"""Seconds between two looks of ``validate_outputs`` at the local output folder."""
VALIDATION_TIMEOUT_S = 60
"""How long ``validate_outputs`` keeps looking for missing outputs before it fails."""


class SparkInfoFilter:
    """Tells the lines of a job's output a person reads from Spark's INFO entries.

    An INFO entry goes with its continuation lines (a physical plan's ``+- ...`` and indented
    lines); the jobs' own log lines, warnings, errors and tracebacks stay.

    >>> keep = SparkInfoFilter().keep
    >>> [keep(line) for line in (
    ...     "26/12/06 06:44:17 INFO DAGScheduler: Submitting ResultStage 1 (*(1) Project [path]",
    ...     "+- ArrowEvalPython [featurize(content#6)#13]",
    ...     "   +- FileScan binaryFile [path#3]",
    ...     "Traceback (most recent call last):",
    ...     '  File "featurize.py", line 1, in <module>',
    ...     "2026-12-06 06:44:30,022 INFO fruits_jobs.featurize batch b1: 96 images",
    ... )]
    [False, False, False, True, True, True]
    """

    def __init__(self) -> None:
        self.in_info = False

    def keep(self, line: str) -> bool:
        """Whether ``line``, the next line of the output, goes to the task log."""
        if SPARK_INFO.match(line):
            self.in_info = True
            return False
        if self.in_info and CONTINUATION.match(line):
            return False
        self.in_info = False
        return True


@task(multiple_outputs=True)
def preflight_local(settings: Settings) -> dict:
    """Check the local run can start: the source folder and the weights file exist."""
    run = current_run()
    problems = []
    if not run["image_source"].startswith("s3") and not Path(run["image_source"]).is_dir():
        problems.append(f"image source is not a folder: {run['image_source']}")
    if settings.weights != "imagenet" and not Path(settings.weights).is_file():
        problems.append(f"weights file not found: {settings.weights}")
    if problems:
        raise AirflowFailException("preflight failed: " + "; ".join(problems))
    return run


@task
def spark_submit_local(job: str, run: dict, work: dict, settings: Settings) -> None:
    """Run ``job`` with spark-submit on ``local[*]``, its output streamed into the task log.

    Spark's INFO entries are left out (:class:`SparkInfoFilter`): the log holds the job's own
    lines, warnings and errors.

    ``work`` is :func:`~fruits_pipeline.tasks.plan_work`'s decision: the lake's digest;
    whether it saw new photos (featurize then starts TensorFlow at once); the most rows the
    PCA may fit, which picks its JIT (:func:`~fruits_pipeline.steps.local_java_options`).

    The driver JVM maps the job's class archive, or dumps it on the first run
    (:class:`~fruits_pipeline.class_archive.ClassArchive`).
    """
    archive = ClassArchive.for_job(settings.class_archives, job)
    option = archive.java_option() if archive else ""
    java = local_java_options(job, option, work.get("fit_rows"))
    command = local_target(java).command(
        job,
        job_args(job, run, settings.local_lake, settings.local_output, settings.weights, work),
    )
    log.info("running %s", " ".join(command))
    env = {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    first_error = last = ""
    returncode = None
    readable = SparkInfoFilter()
    try:
        with subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env},
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                last = line.rstrip()
                if readable.keep(line):
                    log.info("%s", last)
                if not first_error and FIRST_ERROR.match(line):
                    first_error = line.strip()
        returncode = process.returncode
    finally:
        if archive:
            archive.finish(returncode == 0)
    if returncode != 0:
        raise AirflowException(f"spark-submit {job} exited {returncode}: {first_error or last}")
