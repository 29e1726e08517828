"""One EMR step run on this machine: ``command-runner.jar spark-submit ...`` for real.

What happens, in order (:meth:`StepRun.run`):

1. The step's ``spark-submit`` words are kept, except what only YARN can do
   (:func:`local_command`): the master becomes ``local-cluster[workers,cores,memory]`` (a
   Spark standalone master and workers inside the driver's JVM, each executor its own JVM
   and Python workers), ``--deploy-mode cluster`` becomes ``client`` (Spark cannot run a
   Python driver in cluster mode on a standalone master), and the node Python the bootstrap
   installed into (the cluster's ``spark-env`` ``PYSPARK_PYTHON``) becomes this one.
   The cluster's ``spark-defaults`` classification is passed as ``--conf``, as EMR writes it.
2. The ``s3://`` prefixes the words name are staged locally and served as ``s3://`` to
   Spark (:mod:`local_emr.staging`); boto3 in the step (the jobs' weights download) talks to
   the stand-in through ``AWS_ENDPOINT_URL`` with its fixed test keys.
3. spark-submit runs in its own session (process group) with a minimal environment; its
   stdout and stderr go to files, then gzipped to ``<LogUri><cluster>/steps/<step>/``
   (``stdout.gz``, ``stderr.gz``, and ``controller.gz`` with the command and exit code);
   each executor's ``stdout`` and ``stderr`` to ``<LogUri><cluster>/containers/<app>/<id>/``
   (EMR's folders for YARN containers; here Spark standalone's application and executor ids).
   Its JVMs start with :data:`STAND_IN_JVM` and map the job's class archive, which the driver
   dumps the first time (:class:`~fruits_pipeline.class_archive.ClassArchive`).
4. What the step changed in the staged buckets is written back to S3.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fruits_pipeline.class_archive import ClassArchive
from fruits_pipeline.config import CLASS_ARCHIVES
from fruits_pipeline.steps import QUICK_JVM
from local_emr.staging import Stage, hadoop_confs, s3_uris

log = logging.getLogger(__name__)

VALUE_LESS = frozenset({"--verbose", "-v", "--supervise", "--help", "-h", "--version"})
"""spark-submit options that take no value (every other ``--option`` takes one)."""
SPARK_LOG_LINE = re.compile(r"^(\d\d/\d\d/\d\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\d[ T]\S+) ")
"""A log4j or Python ``logging`` line; the job's own one-line error is neither."""
JOB_ERROR = re.compile(r"^[\w.-]+: error: ")
"""argparse's and the jobs' one-line error: ``featurize: error: ...``."""
PYTHON_ERROR = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")
"""The last line of a Python traceback."""
APP_ID = re.compile(r"Connected to Spark cluster with app ID (app-[\w-]+)")
"""The driver's log line naming its application: its executors' folder in Spark's ``work/``."""
KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "JAVA_HOME", "TZ")
"""Host variables a step inherits; everything else (AWS, Airflow, FRUITS_*) stays out."""


class StepRefusedError(Exception):
    """The step is not something the stand-in runs (not ``command-runner.jar spark-submit``)."""


STAND_IN_JVM = f"{QUICK_JVM} -XX:+UseSerialGC"
"""JVM options of the stand-in's drivers and executors: the local jobs' C1 compiler only, and
the serial collector, for JVMs that live seconds on a small machine (a featurize step on 2
cores: 26 s and 29 CPU-s instead of 37 s and 53 CPU-s)."""


@dataclass(frozen=True)
class SparkEnv:
    """How this machine runs Spark for the stand-in.

    :param spark_home: a folder laid out as ``SPARK_HOME`` (its ``work/`` gets executor logs).
    :param python: the interpreter of the driver and of every Python worker.
    :param master: the Spark master of every step, never ``local[*]``.
    :param java_options: JVM options of the driver and of every executor.
    :param class_archives: the folder of the jobs' class archives; empty: none.
    """

    spark_home: Path
    python: str
    master: str = "local-cluster[2,1,2048]"
    java_options: str = STAND_IN_JVM
    class_archives: str = CLASS_ARCHIVES

    @property
    def submit(self) -> str:
        """``spark-submit`` of :attr:`spark_home`."""
        return str(self.spark_home / "bin" / "spark-submit")

    def environment(self, driver_archive: str = "") -> dict[str, str]:
        """A spark-submit's environment: :data:`KEPT_ENV` of the host's, and Spark's own.

        :param driver_archive: the driver JVM's class-archive option, if any.
        """
        env = {name: os.environ[name] for name in KEPT_ENV if name in os.environ}
        env.update(
            PATH=f"{Path(self.python).parent}:{env.get('PATH', '/usr/bin:/bin')}",
            SPARK_HOME=str(self.spark_home),
            PYSPARK_PYTHON=self.python,
            PYSPARK_DRIVER_PYTHON=self.python,
            SPARK_SUBMIT_OPTS=f"{self.java_options} {driver_archive}".strip(),
            SPARK_LOCAL_IP="127.0.0.1",
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        return env


def split_submit(words: list[str]) -> tuple[list[tuple[str, str | None]], list[str]]:
    """spark-submit's ``words`` (after ``spark-submit``) as (option, value) pairs and the rest.

    The rest starts at the primary resource (the ``.py`` file) and holds its arguments.
    """
    options: list[tuple[str, str | None]] = []
    i = 0
    while i < len(words) and words[i].startswith("-"):
        word = words[i]
        if word in VALUE_LESS:
            options.append((word, None))
            i += 1
        elif "=" in word and word.startswith("--") and word.split("=", 1)[0] != "--conf":
            name, value = word.split("=", 1)
            options.append((name, value))
            i += 1
        else:
            if i + 1 >= len(words):
                raise StepRefusedError(f"spark-submit option {word} has no value")
            options.append((word, words[i + 1]))
            i += 2
    return options, words[i:]


def local_command(
    args: list[str], spark: SparkEnv, emr_python: str | None, confs: Mapping[str, str]
) -> list[str]:
    """The command that runs the EMR step ``args`` on this machine (see the module doc).

    >>> env = SparkEnv(Path("/s"), "/venv/bin/python", "local-cluster[2,1,1024]")
    >>> local_command(
    ...     ["spark-submit", "--deploy-mode", "cluster", "--conf",
    ...      "spark.executorEnv.PYSPARK_PYTHON=/usr/bin/python3.11", "s3://b/job.py", "--x"],
    ...     env, "/usr/bin/python3.11", {"a": "1"})  # doctest: +NORMALIZE_WHITESPACE
    ['/s/bin/spark-submit', '--master', 'local-cluster[2,1,1024]', '--deploy-mode', 'client',
     '--conf', 'a=1', '--conf', 'spark.executorEnv.PYSPARK_PYTHON=/venv/bin/python',
     's3://b/job.py', '--x']
    """
    if not args or args[0] != "spark-submit":
        raise StepRefusedError(
            "the local EMR stand-in runs command-runner.jar steps of spark-submit only, "
            f"got {args[:1]}"
        )
    options, rest = split_submit(args[1:])
    if not rest:
        raise StepRefusedError("spark-submit names no application file")
    command = [spark.submit, "--master", spark.master, "--deploy-mode", "client"]
    for key, value in confs.items():
        command += ["--conf", f"{key}={value}"]
    for name, value in options:
        if name in ("--master", "--deploy-mode"):
            continue
        if value is None:
            command.append(name)
            continue
        command += [name, value.replace(emr_python, spark.python) if emr_python else value]
    return [*command, *rest]


def spark_home(folder: Path) -> Path:
    """A ``SPARK_HOME`` of links to pyspark's own, so Spark's ``work/`` lands in ``folder``.

    Several stand-ins may share ``folder``: each application's ``work/<app>`` is its own.
    """
    import pyspark

    source = Path(pyspark.__file__).parent
    folder.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        link = folder / entry.name
        if entry.name != "work" and not link.is_symlink():
            with contextlib.suppress(FileExistsError):  # another stand-in made it meanwhile
                link.symlink_to(entry)
    return folder


def shared_spark_home(class_archives: str, workdir: Path) -> Path:
    """The stand-in's ``SPARK_HOME``: one per pyspark install under ``class_archives``.

    The steps' class path, and with it their class archives, are then the same from one
    stand-in to the next. Without archives: ``workdir/spark-home``.
    """
    if not class_archives:
        return spark_home(workdir / "spark-home")
    import pyspark

    source = hashlib.sha256(str(Path(pyspark.__file__).parent).encode()).hexdigest()[:12]
    return spark_home(Path(class_archives).expanduser() / f"spark-home-{source}")


def last_error(stdout: str, stderr: str) -> str:
    r"""The step's one-line error, for ``FailureDetails.Message``.

    spark-submit merges the Python driver's stderr into its stdout (``PythonRunner``), so
    the job's ``<job>: error: ...`` line, or a traceback's last line, is looked for there
    first; else stderr's last line that is not a log line or a stack frame (JVM errors).

    >>> last_error("x\npca: error: no feature rows\n", "26/11/25 10:00:00 ERROR boom")
    'pca: error: no feature rows'
    """
    lines = [line.strip() for line in stdout.splitlines()]
    for pattern in (JOB_ERROR, PYTHON_ERROR):
        found = [line for line in lines if pattern.match(line)]
        if found:
            return found[-1][:500]
    for line in reversed(stderr.splitlines()):
        text = line.strip()
        if text and not SPARK_LOG_LINE.match(text) and not text.startswith("at "):
            return text[:500]
    return ""


def gzip_to(s3: Any, source: Path, bucket: str, key: str) -> str:
    """``PutObject`` ``source`` gzipped to ``s3://bucket/key``; the URI."""
    s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(source.read_bytes()))
    return f"s3://{bucket}/{key}"


@dataclass
class StepOutcome:
    """How a step ended: exit code (None: killed), its one-line error, where its logs went."""

    exit_code: int | None
    error: str = ""
    log_folder: str | None = None
    written: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class StepRun:
    """One step's run: :meth:`run` blocks until spark-submit ends; :meth:`kill` ends it early.

    :param step_id: the EMR step id (``s-...``).
    :param args: the step's ``HadoopJarStep.Args``.
    :param folder: the step's local folder (its stdout, stderr, controller files).
    :param stage: the cluster's staged buckets.
    :param spark: how Spark runs here.
    :param endpoint: the stand-in's endpoint URL, for boto3 inside the step.
    :param region: the cluster's region.
    :param emr_python: the node Python the cluster's configuration names (replaced).
    :param spark_defaults: the cluster's ``spark-defaults`` properties.
    :param log_uri: the cluster's ``LogUri`` (``s3://bucket/prefix/``) or None.
    :param cluster_id: the cluster's id, for the log folder.
    """

    step_id: str
    args: list[str]
    folder: Path
    stage: Stage
    spark: SparkEnv
    endpoint: str
    region: str
    emr_python: str | None = None
    spark_defaults: Mapping[str, str] = field(default_factory=dict)
    log_uri: str | None = None
    cluster_id: str = ""
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _archive: ClassArchive | None = field(default=None, init=False, repr=False)
    _killed: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    @property
    def _driver_archive(self) -> str:
        """The driver JVM's class-archive option: map the job's archive, or dump it."""
        return self._archive.option if self._archive else ""

    def environment(self) -> dict[str, str]:
        """The step's environment: :meth:`SparkEnv.environment`, and the stand-in's AWS."""
        env = self.spark.environment(self._driver_archive)
        env.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=self.region,
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
        )
        return env

    def command(self) -> list[str]:
        """The local command line of this step, with the staged buckets mounted."""
        buckets = {bucket for bucket, _ in s3_uris(self.args)}
        confs = dict(self.spark_defaults)
        confs.update(hadoop_confs({b: self.stage.folder(b) for b in buckets}))
        confs["spark.ui.showConsoleProgress"] = "false"
        mapped = self._driver_archive if self._archive and not self._archive.pending else ""
        executor_options = (
            f"{confs.get('spark.executor.extraJavaOptions', '')} {self.spark.java_options} {mapped}"
        )
        confs["spark.executor.extraJavaOptions"] = " ".join(executor_options.split())
        return local_command(self.args, self.spark, self.emr_python, confs)

    def run(self) -> StepOutcome:
        """Stage, run spark-submit, write back, ship the logs; never raises for a job failure."""
        started = time.monotonic()
        self.folder.mkdir(parents=True, exist_ok=True)
        stdout, stderr = self.folder / "stdout", self.folder / "stderr"
        controller = self.folder / "controller"
        outcome = StepOutcome(exit_code=None)
        rest = split_submit(self.args[1:])[1]  # the application file, then its arguments
        job = Path(rest[0]).stem if rest else "step"
        self._archive = ClassArchive.for_job(self.spark.class_archives, job, self.spark.spark_home)
        if self._archive:
            self._archive.java_option()
        try:
            command = self.command()
            self.stage.pull(s3_uris(self.args))
            before = self.stage.snapshot()
            controller.write_text(f"command: {' '.join(self.args)}\nlocal: {' '.join(command)}\n")
            outcome.exit_code = self._execute(command, stdout, stderr)
            # As with EMRFS, what a failed or killed step wrote before it ended is in S3.
            outcome.written, outcome.deleted = self.stage.push(before)
            if outcome.exit_code != 0:
                logs = (path.read_text(errors="replace") for path in (stdout, stderr))
                outcome.error = last_error(*logs) or (f"spark-submit exited {outcome.exit_code}")
        except StepRefusedError as err:
            outcome.error = str(err)
            stderr.write_text(f"{err}\n")
            stdout.touch()
        if self._archive:
            self._archive.finish(outcome.exit_code == 0)
        outcome.seconds = round(time.monotonic() - started, 1)
        with controller.open("a") as out:
            out.write(
                f"exit code: {outcome.exit_code}\nseconds: {outcome.seconds}\n"
                f"written to S3: {len(outcome.written)} objects, "
                f"deleted: {len(outcome.deleted)}\n"
            )
        outcome.log_folder = self.ship_logs(stdout, stderr, controller)
        return outcome

    def _execute(self, command: list[str], stdout: Path, stderr: Path) -> int | None:
        log.info("step %s: %s", self.step_id, " ".join(command))
        with stdout.open("wb") as out, stderr.open("wb") as err:
            self._process = subprocess.Popen(
                command,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=self.folder,
                env=self.environment(),
                start_new_session=True,
            )
            code = self._process.wait()
        self._kill_group(signal.SIGKILL)  # executors or Python workers left behind
        return None if self._killed.is_set() else code

    def _kill_group(self, sig: int) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, sig)

    def kill(self, grace_s: float = 10.0) -> None:
        """End spark-submit and every process it started (TERM, then KILL after ``grace_s``)."""
        self._killed.set()
        if self._process is None or self._process.poll() is not None:
            return
        self._kill_group(signal.SIGTERM)
        try:
            self._process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self._kill_group(signal.SIGKILL)

    def ship_logs(self, stdout: Path, stderr: Path, controller: Path) -> str | None:
        """Gzip the step's files to ``<LogUri><cluster>/steps/<step>/``; that folder's URI.

        The executors' files go to ``containers/<app>/<executor>/`` beside ``steps/``.
        """
        app = APP_ID.search(stderr.read_text(errors="replace"))
        work = self.spark.spark_home / "work" / app[1] if app else None
        try:
            if not self.log_uri:
                return None
            bucket, _, prefix = self.log_uri.removeprefix("s3://").partition("/")
            folder = f"{prefix}{self.cluster_id}/steps/{self.step_id}/"
            for path in (stdout, stderr, controller):
                gzip_to(self.stage.s3, path, bucket, f"{folder}{path.name}.gz")
            if work:
                containers = f"{prefix}{self.cluster_id}/containers/{work.name}"
                for path in sorted(work.glob("*/std*")):
                    key = f"{containers}/{path.parent.name}/{path.name}.gz"
                    gzip_to(self.stage.s3, path, bucket, key)
            return f"s3://{bucket}/{folder}"
        finally:
            if work:
                remove(work)  # the Spark home may be shared: leave no application behind


def remove(folder: Path) -> None:
    """Delete a staging or step folder (the images in it never leave the machine anyway)."""
    shutil.rmtree(folder, ignore_errors=True)
