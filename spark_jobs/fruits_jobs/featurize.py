"""Job 1: featurize fruit images with MobileNetV2 whose weights are broadcast from the driver.

What happens, in order:

1. The driver resolves the weights (``imagenet``, a path or ``s3://``) and reads and checks
   the arrays once (h5py: no TensorFlow in the driver).
2. A small Spark job has a Python worker in each task slot the batch will use (one a
   ``IMAGES_PER_WORKER`` new images, :func:`workers_for`) import TensorFlow and build and
   trace the bare net (:func:`fruits_jobs.model.prepare`), in the background, as soon as the
   job knows it has work: at once when the caller says so (``--expect-new``: the DAG's plan
   saw new images) or when every image is to be featurized (no ``--skip-existing``),
   otherwise after step 3's listing.
3. Spark lists the images with the ``binaryFile`` source (``.jpg/.jpeg/.png``, any case,
   recursively); the label is the image's parent folder. With ``--skip-existing``, images whose
   path, size and modification time already stand in an earlier committed batch are left
   out; when that leaves none, the batch is committed empty there and then, before any
   Python worker starts TensorFlow unless step 2 started already (:func:`count_new`).
   Otherwise the driver broadcasts the arrays (about 9 MB for alpha 1.0). Files go to read
   tasks by their bytes (:func:`read_tasks_by_bytes`).
4. A pandas **iterator** UDF decodes, resizes and featurizes each Arrow batch of
   ``--batch-size`` images. The first batch a Python worker sees builds MobileNetV2 from the
   broadcast arrays; every later batch, partition and task of that worker reuses it
   (:func:`fruits_jobs.model.cached_model`; Spark reuses Python workers between tasks).
   Every ``PROGRESS_S`` seconds the driver logs the images done, the rate and the ETA
   (:class:`Progress`).
5. Rows whose bytes are not a usable image carry a ``reason`` instead of features: they are
   written to ``quarantine/``, the others to ``features/``, and the report accounts for all.
6. The report is written last, in one step: it is the batch's commit record. It names the
   earlier batches the run relied on (``relies_on``) and the lake listing's digest the DAG
   gave (``--lake``): the DAG's nothing-new decision compares the next listing with it
   (:func:`fruits_jobs.contract.plan_work`). The job first deletes the batch's earlier
   report, so a run that dies at any point leaves the batch uncommitted (readers ignore its
   folders) until it runs again and replaces them (:mod:`fruits_jobs.commits`).

Why an iterator pandas UDF and not ``pyspark.ml.functions.predict_batch_udf``: both keep one
model per worker, and ``make bench`` measures them level (warm, 2,240 photos, ``local[2]``,
``predict_batch_udf`` / iterator UDF: 1.01, 0.97 and 1.07 in three runs). But
``predict_batch_udf`` takes numeric tensors, so decoding must happen in an earlier UDF whose
output (224x224x3 float32, 600 kB an image, 20x the JPEG) crosses Arrow as a column, and one
bad image fails its whole batch, where the quarantine needs a reason per row. Each worker
runs TensorFlow on its task's cores (``spark.task.cpus``), not on every core: concurrent
workers would otherwise oversubscribe the machine.

Output: see :mod:`fruits_jobs.contract`. Re-running a batch replaces that batch.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import numpy as np
import pandas as pd
from py4j.protocol import Py4JError
from pyspark import InheritableThread, StorageLevel, TaskContext
from pyspark.errors import AnalysisException, PySparkException
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F  # noqa: N812 - Spark's own convention
from pyspark.sql.functions import pandas_udf

from fruits_jobs import commits, contract, storage
from fruits_jobs.cli import Stopwatch, batch_id, lake_digest, positive_int, run_job
from fruits_jobs.errors import JobError
from fruits_jobs.imaging import QuarantineError, decode
from fruits_jobs.model import (
    FIRST_FILTERS,
    ModelSpec,
    cached_model,
    driver_weights,
    prepare,
    resolve_weights,
    sha256_of,
)

log = logging.getLogger(__name__)

PREPARE_GROUP = "fruits-prepare-workers"
"""Spark job group of :func:`prepare_workers`, cancelled when the batch fails."""
FEATURIZE_GROUP = "fruits-featurize"
"""Spark job group of the featurize UDF's jobs, whose tasks :class:`Progress` counts."""
PROGRESS_S = 10.0
"""Seconds between two progress lines of a running batch."""
IMAGES_PER_WORKER = 64
"""New images that pay for a Python worker's start (TensorFlow's import and the net's build,
about 3 CPU-s): a batch of n new images runs on ``ceil(n / 64)`` workers at most
(:func:`workers_for`), which then wait for their preparation. 16 photos on ``local[2]`` with
``--expect-new``, whole process, one worker against two: 11.6 s and 14.3 CPU-s against
12.2 s and 20.9 CPU-s (medians of 3)."""

IMAGES_PER_TASK = IMAGES_PER_WORKER
"""New images that pay for a read task of their own (its launch, Arrow stream and Parquet
file: 0.2 to 0.4 s of a core on ``local[2]``), one Arrow batch of the default ``--batch-size``:
a batch of n new images is read in ``ceil(n / 64)`` tasks at most. The same number as
:data:`IMAGES_PER_WORKER` by construction: a small batch then has as many tasks as
:func:`workers_for` starts workers, where one task more would start an unprepared worker on a
free slot, and one fewer would leave a prepared one idle."""

RESULT_SCHEMA = f"{contract.FEATURES_COL} array<float>, {contract.REASON} string"
IMAGE_GLOB = (
    "*.{"
    + ",".join(
        "".join(f"[{c.lower()}{c.upper()}]" for c in ext.lstrip("."))
        for ext in contract.IMAGE_EXTENSIONS
    )
    + "}"
)
"""``pathGlobFilter`` matching the contract's extensions in any case: ``*.{[jJ][pP][gG],...}``."""


def build_parser() -> argparse.ArgumentParser:
    """The ``featurize.py`` command line."""
    parser = argparse.ArgumentParser(prog="featurize.py", description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="folder URI of <Label>/<image> files")
    parser.add_argument("--output", required=True, help="output root URI (see contract)")
    parser.add_argument(
        "--weights", default="imagenet", help="imagenet (Keras hub), a .h5 path or an s3:// URI"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=1.0,
        choices=sorted(FIRST_FILTERS),
        help="MobileNetV2 width (1.0); the narrower ones also give 1280 features",
    )
    parser.add_argument("--image-size", type=positive_int, default=224, help="input side (224)")
    parser.add_argument("--batch-id", type=batch_id, default="manual", help="batch name")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per predict")
    parser.add_argument(
        "--expect-new",
        action="store_true",
        help="the caller saw images no committed batch holds (the DAG's plan): the workers "
        "start TensorFlow once the weights are checked, not after the listing",
    )
    parser.add_argument(
        "--lake",
        type=lake_digest,
        help="the lake listing's digest, as the DAG measured it (recorded in the report; its "
        "image count bounds the Python workers started before the listing)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave out images already in an earlier batch (same path, size and mtime)",
    )
    mode.add_argument(
        "--full-recompute",
        action="store_true",
        help="uncommit and delete every batch, then featurize all images",
    )
    return parser


def featurize_batches(
    contents: Iterator[pd.Series], spec: ModelSpec, weights: Any
) -> Iterator[pd.DataFrame]:
    """Features or a quarantine reason for each image in each batch of ``contents``.

    :param contents: batches of image bytes (what Spark feeds an iterator pandas UDF).
    :param spec: the model to use; built once per process by :func:`cached_model`.
    :param weights: the broadcast weight arrays (read only when the model is built).
    """
    for content in contents:
        features: list[np.ndarray | None] = [None] * len(content)
        reasons: list[str | None] = [None] * len(content)
        good, pixels = [], []
        for i, data in enumerate(content):
            try:
                pixels.append(decode(data, spec.image_size))
                good.append(i)
            except QuarantineError as err:
                reasons[i] = str(err)
        if good:
            net = cached_model(spec, weights, threads=task_cpus())
            batch = net.features(np.stack(pixels))
            if batch.shape != (len(good), contract.FEATURE_DIM):
                raise ValueError(
                    f"MobileNetV2 returned shape {batch.shape}, "
                    f"expected {(len(good), contract.FEATURE_DIM)}"
                )
            for i, row in zip(good, batch, strict=True):
                features[i] = row
        yield pd.DataFrame({contract.FEATURES_COL: features, contract.REASON: reasons})


def task_cpus() -> int | None:
    """The cores Spark gives the running task (``spark.task.cpus``); ``None`` off Spark."""
    context = TaskContext.get()
    return context.cpus() if context is not None else None


def featurize_udf(spec: ModelSpec, weights: Any) -> Callable[[Column], Column]:
    """The iterator pandas UDF ``content -> struct(features, reason)`` for ``spec``."""

    @pandas_udf(RESULT_SCHEMA)  # type: ignore[call-overload]
    def featurize(contents: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        return featurize_batches(contents, spec, weights)

    return featurize


def workers_for(spark: SparkSession, images: int | None) -> int:
    """The Python workers worth starting for ``images`` new images (None: not known yet).

    One a :data:`IMAGES_PER_WORKER` images, at least one, at most one a task slot; every slot
    when the count is not known.

    >>> from types import SimpleNamespace as Ns
    >>> local2 = Ns(sparkContext=Ns(defaultParallelism=2))
    >>> workers_for(local2, 16), workers_for(local2, 65), workers_for(local2, None)
    (1, 2, 2)
    """
    slots = spark.sparkContext.defaultParallelism
    if images is None:
        return slots
    return max(1, min(slots, -(-images // IMAGES_PER_WORKER)))


def prepare_workers(
    spark: SparkSession, spec: ModelSpec, workers: int | None = None
) -> InheritableThread:
    """Start, in the background, a job that runs :func:`~fruits_jobs.model.prepare` in slots.

    ``workers`` slots (default: every one), one row each, through a pandas UDF: Python workers
    that run RDD code are another pool than those of SQL UDFs, and the prepared ones must be
    those Spark hands the featurize UDF's tasks next. Best effort: ``defaultParallelism`` may
    not count executors still starting, and a failed or cancelled Spark job is only logged (the
    featurize tasks then build the net themselves); any other exception is a bug and ends the
    thread with its traceback. Its jobs run in the group :data:`PREPARE_GROUP`.
    """
    slots = workers or spark.sparkContext.defaultParallelism

    @pandas_udf("long")  # type: ignore[call-overload]
    def warm(ids: pd.Series) -> pd.Series:
        prepare(spec, task_cpus())
        return ids

    def prepare_all() -> None:
        spark.sparkContext.setJobGroup(PREPARE_GROUP, "prepare the Python workers")
        try:
            rows = spark.range(slots, numPartitions=slots).select(warm("id"))
            rows.write.format("noop").mode("overwrite").save()
        except (PySparkException, Py4JError) as err:  # a task failed, or the job was cancelled
            log.warning("preparing the Python workers failed: %s", f"{err}".strip() or repr(err))

    thread = InheritableThread(target=prepare_all, name=PREPARE_GROUP, daemon=True)
    thread.start()
    return thread


@contextmanager
def read_tasks_by_bytes(spark: SparkSession, images: int | None = None) -> Iterator[None]:
    """Within the block, fill read tasks by the images' bytes: >= 4 tasks a core, <= 32 MB each.

    For a small batch of ``images`` new images, one task a :data:`IMAGES_PER_TASK` of them
    instead, so never fewer tasks than :func:`workers_for` starts workers, and no other
    Python worker starts for them (more tasks only for images over 32 MB a task).

    Spark counts each file as 4 MB more than its size when it fills a read task
    (``spark.sql.files.openCostInBytes``, sized for Parquet files): 30 kB photos then came
    about 30 to a task, and the per-task costs (launch, Arrow stream, Python round trips)
    showed: the UDF took 27.8 s for 2,240 photos on ``local[2]`` in 70 tasks, 22.3 s in 9.
    The 32 MB cap keeps a cluster busy when ``defaultParallelism`` undercounts it (executors
    still starting under dynamic allocation). Values given with ``--conf`` win; the session's
    own values come back after the block.
    """
    given = spark.sparkContext.getConf()
    slots = spark.sparkContext.defaultParallelism
    tasks = 4 * slots if images is None else max(1, min(4 * slots, -(-images // IMAGES_PER_TASK)))
    wanted = {
        "spark.sql.files.openCostInBytes": "8k",
        "spark.sql.files.minPartitionNum": str(tasks),
        "spark.sql.files.maxPartitionBytes": "32m",
    }
    wanted = {key: value for key, value in wanted.items() if not given.contains(key)}
    previous = {key: spark.conf.get(key, None) for key in wanted}
    for key, value in wanted.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def hadoop_path(uri: str) -> str:
    """Spell a file URI as Hadoop's ``Path.toString`` does (``file:/a b``, not ``file:///a%20b``)."""
    uri = unquote(uri)
    return "file:/" + uri[len("file:///") :] if uri.startswith("file:///") else uri


def list_images(spark: SparkSession, images: str) -> tuple[DataFrame, list[str]]:
    """``path, label, length, modification_time, content`` of the images under ``images``.

    Spark's file scan silently skips 0-byte files: :func:`unscanned_images` brings them back
    from the file index's list, which this also returns.

    :returns: the images the scan reads, and the paths of all the images the index lists.
    :raises JobError: the folder does not exist or holds no image.
    """
    try:
        files = (
            spark.read.format("binaryFile")
            .option("recursiveFileLookup", "true")
            .option("pathGlobFilter", IMAGE_GLOB)
            .load(images)
        )
    except AnalysisException as err:
        if "PATH_NOT_FOUND" in str(err) or "does not exist" in str(err):
            raise JobError(f"images path does not exist: {images}") from err
        raise
    listed = [hadoop_path(uri) for uri in files.inputFiles()]
    if not listed:
        raise JobError(f"no images found under {images} (looked for {IMAGE_GLOB})")
    return with_labels(files.select("path", "length", "modificationTime", "content")), listed


def with_labels(files: DataFrame) -> DataFrame:
    """Spark's ``path, length, modificationTime, content`` as the contract's columns + label."""
    return files.select(
        F.col("path").alias(contract.PATH),
        F.element_at(F.split("path", "/"), -2).alias(contract.LABEL),
        F.col("length").alias(contract.LENGTH),
        F.col("modificationTime").alias(contract.MTIME),
        "content",
    )


def unscanned_images(spark: SparkSession, listed: list[str], scanned: DataFrame) -> DataFrame:
    """The ``listed`` images missing from ``scanned`` (0-byte files), with empty content.

    The featurizer then quarantines them like any other unusable file.
    """
    missing = (
        spark.createDataFrame([(p,) for p in listed], f"{contract.PATH} string")
        .join(scanned.select(contract.PATH), contract.PATH, "left_anti")
        .collect()
    )
    if missing:
        log.warning("%d files the scan skipped (0 bytes): %s", len(missing), missing[:5])
    rows = [(row.path, *storage.status(spark, row.path), b"") for row in missing]
    schema = "path string, length long, modificationTime timestamp, content binary"
    return with_labels(spark.createDataFrame(rows, schema))


def featured(images: DataFrame, featurize: Callable[[Column], Column]) -> DataFrame:
    """``images`` with ``features`` and ``reason`` in place of their ``content``."""
    return (
        images.select(
            contract.PATH,
            contract.LABEL,
            contract.LENGTH,
            contract.MTIME,
            featurize("content").alias("result"),
        )
        .select("*", "result.*")
        .drop("result")
    )


def write_results(
    result: DataFrame, output: str, batch: str, mode: str = "overwrite"
) -> tuple[int, int]:
    """Write ``result`` (images with ``features`` or a ``reason``) to the batch's data sets.

    One pass of the UDF: the features' write computes it, caches every row and counts both
    kinds on the way (an :class:`~pyspark.sql.Observation`); the quarantine's write reads the
    cache, or nothing when the count found no bad image (its empty data set is still written).
    With ``mode="append"``, the quarantine is written only when it gets rows.

    :returns: how many images were featurized and how many quarantined.
    """
    ok = F.col(contract.REASON).isNull()
    counts = Observation("featurize-counts")
    result.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # Dictionary encoding never pays on float embeddings: off, the job gains 4%.
        result.observe(
            counts, F.count_if(ok).alias("featurized"), F.count_if(~ok).alias("quarantined")
        ).where(ok).select(
            contract.PATH, contract.LABEL, contract.LENGTH, contract.MTIME, contract.FEATURES_COL
        ).write.mode(mode).option("parquet.enable.dictionary", "false").parquet(
            contract.batch_uri(output, contract.FEATURES, batch)
        )
        featurized, quarantined = counts.get["featurized"], counts.get["quarantined"]
        if mode == "overwrite" or quarantined:
            bad = result.where(~ok).select(
                contract.PATH, contract.LENGTH, contract.MTIME, contract.REASON
            )
            # None to write: an empty relation (Spark's optimizer drops the scan of the cache).
            bad = bad if quarantined else bad.limit(0)
            bad.write.mode(mode).parquet(contract.batch_uri(output, contract.QUARANTINE, batch))
        return featurized, quarantined
    finally:
        result.unpersist()


def already_seen(
    spark: SparkSession, output: str, batch: str
) -> tuple[DataFrame | None, list[str]]:
    """Keys (path, length, mtime) of images featurized or quarantined in other committed batches.

    :returns: the keys (None when there are none), and the batches they come from.
    """
    keys = [contract.PATH, contract.LENGTH, contract.MTIME]
    others = commits.committed_batches(spark, output)
    others.pop(batch, None)
    seen = None
    for dataset, schema, count in (
        (contract.FEATURES, contract.FEATURES_SCHEMA, contract.R_FEATURIZED),
        (contract.QUARANTINE, contract.QUARANTINE_SCHEMA, contract.R_QUARANTINED),
    ):
        with_rows = [b for b, report in others.items() if report[count] > 0]
        rows = commits.read_committed(
            spark, contract.dataset_uri(output, dataset), schema, with_rows
        )
        if rows is not None:
            rows = rows.select(*keys)
            seen = rows if seen is None else seen.unionByName(rows)
    return seen, sorted(others)


def copy_attribution(spark: SparkSession, images: str, output: str, batch: str) -> list[str]:
    """Copy ATTRIBUTION/LICENSE/NOTICE files at the images' root next to the batch's reports.

    Licences such as Fruits-360's CC BY-SA 4.0 require the attribution to follow the images'
    derivatives; the features and the PCA matrix are such derivatives.
    """
    copied = []
    for uri in storage.list_files(spark, images):
        name = uri.rsplit("/", 1)[-1]
        if name.upper().startswith(contract.ATTRIBUTION_PREFIXES):
            key = contract.attribution_key(batch, name)
            storage.write_bytes(spark, contract.join(output, key), storage.read_bytes(spark, uri))
            copied.append(key)
    return copied


@dataclass
class Inputs:
    """The batch's images: those the scan reads, every listed path, what earlier batches hold."""

    images: DataFrame
    listed: list[str]
    seen: DataFrame | None
    relies_on: list[str]
    _unscanned: DataFrame | None = None

    def new(self, frame: DataFrame) -> DataFrame:
        """The rows of ``frame`` whose image no earlier batch holds (all without ``seen``)."""
        keys = [contract.PATH, contract.LENGTH, contract.MTIME]
        return frame if self.seen is None else frame.join(self.seen, keys, "left_anti")

    def unscanned(self, spark: SparkSession) -> DataFrame:
        """:func:`unscanned_images` of these inputs, found once (a driver-side collect)."""
        if self._unscanned is None:
            self._unscanned = unscanned_images(spark, self.listed, self.images)
        return self._unscanned


def find_inputs(spark: SparkSession, args: argparse.Namespace) -> Inputs:
    """List the images, uncommit what this run replaces, and read what earlier batches hold.

    :raises JobError: the images folder does not exist or holds no image.
    """
    images, listed = list_images(spark, args.images)
    if args.full_recompute:
        commits.uncommit(spark, args.output)
        for dataset in (contract.FEATURES, contract.QUARANTINE, contract.ATTRIBUTION):
            log.warning("full recompute: deleting %s", contract.dataset_uri(args.output, dataset))
            storage.delete(spark, contract.dataset_uri(args.output, dataset))
    else:
        commits.uncommit(spark, args.output, [args.batch_id])
    seen, relies_on = (
        already_seen(spark, args.output, args.batch_id) if args.skip_existing else (None, [])
    )
    return Inputs(images, listed, seen, relies_on)


def count_new(spark: SparkSession, inputs: Inputs) -> int:
    """How many listed images no earlier batch holds: Spark counts of keys, no image read."""
    if inputs.seen is None:
        return len(inputs.listed)
    scanned = inputs.images.select(contract.PATH, contract.LENGTH, contract.MTIME)
    return inputs.new(scanned).count() + inputs.new(inputs.unscanned(spark)).count()


class Progress:
    """Logs, every ``every_s`` seconds, how far the featurize tasks are: images, rate, ETA.

    Read on the driver from Spark's status tracker (the tasks of the jobs in
    :data:`FEATURIZE_GROUP`), so it works wherever the driver runs, EMR included. Images are
    counted from tasks done, in proportion: read tasks hold images by their bytes.
    """

    def __init__(self, spark: SparkSession, images: int, every_s: float = PROGRESS_S) -> None:
        self.spark, self.images, self.every_s = spark, images, every_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fruits-progress", daemon=True)

    def __enter__(self) -> Progress:
        self.started = time.monotonic()
        tracker = self.spark.sparkContext.statusTracker()
        self.earlier = set(tracker.getJobIdsForGroup(FEATURIZE_GROUP))  # a session's others
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def tasks(self) -> tuple[int, int]:
        """Tasks done and in all in the UDF's stage: the first stage of this batch's first job.

        That job, the features' write, runs the UDF (see :func:`write_results`).
        """
        tracker = self.spark.sparkContext.statusTracker()
        jobs = set(tracker.getJobIdsForGroup(FEATURIZE_GROUP)) - self.earlier
        info = tracker.getJobInfo(min(jobs)) if jobs else None
        stage = tracker.getStageInfo(min(info.stageIds)) if info and info.stageIds else None
        return (stage.numCompletedTasks, stage.numTasks) if stage else (0, 0)

    def line(self) -> str | None:
        """``featurize: about 120/560 images (21%), 24.0 images/s, ETA 18 s``; None before tasks."""
        done, total = self.tasks()
        if not total:
            return None
        images = round(self.images * done / total)
        rate = images / max(time.monotonic() - self.started, 1e-9)
        eta = f"{(self.images - images) / rate:.0f} s" if rate else "unknown"
        share = f"{100 * images / max(self.images, 1):.0f}%"
        return (
            f"featurize: about {images}/{self.images} images ({share}), "
            f"{rate:.1f} images/s, ETA {eta}"
        )

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            text = self.line()
            if text:
                log.info("%s", text)


def featurize_images(
    spark: SparkSession,
    inputs: Inputs,
    featurize: Callable[[Column], Column],
    output: str,
    batch: str,
) -> tuple[int, int]:
    """Featurize the new images of ``inputs`` into ``batch``; how many featurized, quarantined."""
    featurized, quarantined = write_results(
        featured(inputs.new(inputs.images), featurize), output, batch
    )
    # Only a short count (or skipped images) can hide 0-byte files the scan left out.
    if inputs.seen is not None or featurized + quarantined < len(inputs.listed):
        more = write_results(
            featured(inputs.new(inputs.unscanned(spark)), featurize), output, batch, mode="append"
        )
        featurized, quarantined = featurized + more[0], quarantined + more[1]
    return featurized, quarantined


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, Any]:
    """Featurize ``args.images`` into batch ``args.batch_id`` of ``args.output``; the report.

    The weights are read and checked first, with h5py (no TensorFlow): bad weights fail the
    job before anything starts. The Python workers then start TensorFlow
    (:func:`prepare_workers`) as soon as the job knows there is work: at once with
    ``--expect-new`` or without ``--skip-existing`` (every image listed is then new), in
    parallel with the listing; otherwise once the listing shows new images. When earlier
    batches hold every image, the batch is committed empty, before any TensorFlow import
    unless the caller expected new images (a started preparation is then cancelled).
    """
    clock = Stopwatch()
    weights_path = resolve_weights(args.weights, args.alpha, args.image_size)
    spec = ModelSpec(args.alpha, args.image_size, sha256_of(weights_path))
    arrays = driver_weights(spec, weights_path)
    clock.lap("weights")
    early = args.expect_new or not args.skip_existing
    bound = contract.digest_images(args.lake) if args.lake else None  # new <= the lake's images
    preparing = prepare_workers(spark, spec, workers_for(spark, bound)) if early else None
    try:
        inputs = find_inputs(spark, args)
        clock.lap("listing")
        new = count_new(spark, inputs)
        if not new:
            log.info("nothing new: earlier batches hold the %d images listed", len(inputs.listed))
            spark.sparkContext.cancelJobGroup(PREPARE_GROUP)
            return commit_batch(spark, args, inputs, spec, (0, 0), clock)
        log.info("%d of the %d images listed are new", new, len(inputs.listed))
        workers = workers_for(spark, new)
        preparing = preparing or prepare_workers(spark, spec, workers)
        if workers < spark.sparkContext.defaultParallelism:
            preparing.join()  # else a free slot would start a worker of its own for the UDF
        with Progress(spark, new):
            counts = featurize_broadcast(spark, args, inputs, spec, arrays, new)
        return commit_batch(spark, args, inputs, spec, counts, clock)
    except BaseException:
        spark.sparkContext.cancelJobGroup(PREPARE_GROUP)
        raise
    finally:
        if preparing is not None:
            preparing.join()


def quarantine_sample(spark: SparkSession, output: str, batch: str) -> list[dict[str, str]]:
    """The first quarantined files of ``batch`` by path, with their reasons, for the report.

    At most :data:`~fruits_jobs.contract.QUARANTINE_SAMPLE`; the UI's batch report lists them.
    """
    rows = (
        spark.read.parquet(contract.batch_uri(output, contract.QUARANTINE, batch))
        .select(contract.PATH, contract.REASON)
        .orderBy(contract.PATH)
        .limit(contract.QUARANTINE_SAMPLE)
        .collect()
    )
    return [{contract.PATH: row[0], contract.REASON: row[1]} for row in rows]


def commit_batch(
    spark: SparkSession,
    args: argparse.Namespace,
    inputs: Inputs,
    spec: ModelSpec,
    counts: tuple[int, int],
    clock: Stopwatch,
) -> dict[str, Any]:
    """Commit the batch: its report, with ``counts`` (featurized, quarantined); the report."""
    featurized, quarantined = counts
    seconds = clock.lap("featurize")
    discovered = len(inputs.listed)
    report = {
        contract.R_BATCH: args.batch_id,
        contract.R_DISCOVERED: discovered,
        contract.R_SKIPPED: discovered - featurized - quarantined,
        contract.R_INPUT: featurized + quarantined,
        contract.R_FEATURIZED: featurized,
        contract.R_QUARANTINED: quarantined,
        contract.R_MODEL: spec.as_report(args.weights),
        contract.R_TIMINGS: clock.timings(),
        contract.R_THROUGHPUT: round((featurized + quarantined) / max(seconds, 1e-9), 2),
        contract.R_IMAGES: args.images,
        contract.R_ATTRIBUTION: copy_attribution(spark, args.images, args.output, args.batch_id),
        contract.R_SKIP_EXISTING: args.skip_existing,
        contract.R_FULL_RECOMPUTE: args.full_recompute,
        contract.R_RELIES_ON: inputs.relies_on,
        contract.R_QUARANTINE_SAMPLE: quarantine_sample(spark, args.output, args.batch_id)
        if quarantined
        else [],
    }
    if args.lake:
        report[contract.R_LAKE] = args.lake
    commits.commit(spark, args.output, args.batch_id, report)
    log.info(
        "batch %s: %d images, %d featurized, %d quarantined, %d skipped, %.1f images/s",
        args.batch_id,
        discovered,
        featurized,
        quarantined,
        report[contract.R_SKIPPED],
        report[contract.R_THROUGHPUT],
    )
    return report


def featurize_broadcast(
    spark: SparkSession,
    args: argparse.Namespace,
    inputs: Inputs,
    spec: ModelSpec,
    arrays: list[np.ndarray],
    new: int,
) -> tuple[int, int]:
    """Broadcast ``arrays``, then :func:`featurize_images` with them; unpersist the broadcast.

    The read tasks are sized for the ``new`` images (:func:`read_tasks_by_bytes`).
    """
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(args.batch_size))
    # The cached results are mostly float embeddings: compressing them gains little memory and
    # cost 6% of the job's time (make bench).
    spark.conf.set("spark.sql.inMemoryColumnarStorage.compressed", "false")
    broadcast = spark.sparkContext.broadcast(arrays)
    log.info("weights %s (sha256 %s) broadcast", args.weights, spec.weights_sha256[:12])
    try:
        spark.sparkContext.setJobGroup(FEATURIZE_GROUP, "featurize the new images")
        with read_tasks_by_bytes(spark, new):
            return featurize_images(
                spark, inputs, featurize_udf(spec, broadcast), args.output, args.batch_id
            )
    finally:
        broadcast.unpersist()


def main(argv: list[str] | None = None) -> int:
    """``spark-submit featurize.py ...``: exit 0, or 2 with one line naming the problem."""
    return run_job("featurize", build_parser(), run, argv)
