"""Dump this machine's JVM class archives up front: one run of each Spark job per Spark home.

A job's first run on a machine dumps the classes its driver JVM loaded, which makes that run
about 25 s longer (:mod:`fruits_pipeline.class_archive`); every later run maps the archive.
``make class-archives`` pays that once, before anything else runs a job, for both Spark homes
the project runs its jobs from: the local jobs' (``fruits_local``, ``make demo``) and the EMR
stand-in's (``make demo-emr``, the tests' clusters), each with the JVM options its runs use.
Each home's runs featurize 8 photos of the sample the repository ships with the configured
weights, then fit a PCA on them, in a temporary folder; an archive already there is kept.
``.ci/run`` calls it in its set-up, as it builds the node environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fruits_pipeline.class_archive import ClassArchive, default_spark_home
from fruits_pipeline.config import CLASS_ARCHIVES, SAMPLE_IMAGES, Settings
from fruits_pipeline.steps import (
    FEATURIZE,
    JOBS,
    featurize_args,
    local_java_options,
    local_target,
    pca_args,
)
from local_emr.runner import SparkEnv, local_command, shared_spark_home

CLASSES, PER_CLASS = 2, 4
"""The photos of each run: the first 4 of the sample's first 2 classes."""
BATCH = "2026-01-01"


def photos(dest: Path) -> Path:
    """Copy the first :data:`PER_CLASS` photos of the sample's first :data:`CLASSES` classes."""
    classes = sorted(p for p in (SAMPLE_IMAGES / "Training").iterdir() if p.is_dir())
    for folder in classes[:CLASSES]:
        (dest / folder.name).mkdir(parents=True)
        for photo in sorted(folder.glob("*.jpg"))[:PER_CLASS]:
            shutil.copy2(photo, dest / folder.name / photo.name)
    return dest


def job_args(job: str, images: Path, output: Path, weights: str) -> list[str]:
    """The job's arguments: a first batch, then a PCA of 2 components over it."""
    if job == FEATURIZE:
        return featurize_args(str(images), str(output), weights, BATCH)
    return pca_args(str(output), k=2)


def local_run(job: str, args: list[str], archive: ClassArchive) -> tuple[list[str], dict]:
    """The command and environment of ``job`` as ``fruits_local`` runs it (``local[*]``)."""
    java = local_java_options(job, archive.java_option(), fit_rows=CLASSES * PER_CLASS)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    return local_target(java).command(job, args), env


def stand_in_run(
    job: str, args: list[str], archive: ClassArchive, spark: SparkEnv
) -> tuple[list[str], dict]:
    """The command and environment of ``job`` as the stand-in runs a step of it.

    :func:`local_emr.runner.local_command` and :meth:`SparkEnv.environment`, on this interpreter.
    """
    code = local_target().code_root
    confs = {
        "spark.executor.extraJavaOptions": spark.java_options,
        "spark.ui.showConsoleProgress": "false",
    }
    command = local_command(["spark-submit", f"{code}/{job}.py", *args], spark, None, confs)
    return command, spark.environment(archive.java_option())


def run(
    home: str, job: str, command: list[str], env: dict, archive: ClassArchive, work: Path
) -> None:
    """Run ``command`` and publish the archive its driver dumped, if any.

    :raises SystemExit: naming the run, with its output's end, when spark-submit fails.
    """
    started = time.monotonic()
    log = work / f"{home}-{job}.log"
    with log.open("wb") as out:
        code = subprocess.run(
            command, check=False, env=env, cwd=work, stdout=out, stderr=subprocess.STDOUT
        )
    dumped = archive.pending is not None
    archive.finish(code.returncode == 0)
    if code.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{tail}\n{home} {job}: spark-submit exited {code.returncode}")
    done = "dumped" if dumped else "mapped"
    print(f"{home} {job}: {archive.path} {done} in {time.monotonic() - started:.1f} s")


def warm(
    home: str, cache: str, spark: SparkEnv | None, images: Path, weights: str, work: Path
) -> None:
    """Run featurize, then PCA over its output, from one Spark home, when an archive is missing.

    :param spark: the stand-in's Spark; ``None``: the local jobs' (:func:`local_run`).
    """
    spark_home = spark.spark_home if spark else default_spark_home()
    archives = {job: ClassArchive.for_job(cache, job, spark_home) for job in JOBS}
    if None in archives.values():
        print(f"{home}: no class archives (no Java, or no archive folder)")
        return
    if all(archive.path.is_file() for archive in archives.values()):
        print(f"{home}: {', '.join(str(a.path) for a in archives.values())} are there")
        return
    for job, archive in archives.items():  # PCA reads what featurize wrote
        args = job_args(job, images, work / home / "outputs", weights)
        command, env = (
            stand_in_run(job, args, archive, spark) if spark else local_run(job, args, archive)
        )
        run(home, job, command, env, archive, work)


def main() -> None:
    """Warm both Spark homes side by side (one core each), in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="fruits-class-archives-") as tmp:
        work = Path(tmp)
        images = photos(work / "images")
        stand_in = SparkEnv(shared_spark_home(CLASS_ARCHIVES, work), sys.executable)
        executors = stand_in.spark_home / "work"  # local-cluster's executors' folders
        before = set(executors.iterdir()) if executors.is_dir() else set()
        settings = Settings.from_env()
        homes = {
            "local": (settings.class_archives, None),
            "stand-in": (stand_in.class_archives, stand_in),
        }
        try:
            with ThreadPoolExecutor(len(homes)) as pool:
                runs = [
                    pool.submit(warm, home, *how, images, settings.weights, work)
                    for home, how in homes.items()
                ]
                for done in runs:
                    done.result()
        finally:
            for folder in set(executors.iterdir()) - before if executors.is_dir() else ():
                shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
