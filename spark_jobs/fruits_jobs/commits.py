"""The output contract's commits, on the Spark side: which batches and which PCA fit count.

A batch counts once its report is published (:func:`commit`), after its data; a PCA fit once
``_reports/pca.json`` names it (:func:`publish_fit`), after its files. Everything else under
the output root is a left-over of a run that died: the readers here never see it, and the
next run of the same batch, or the next PCA, replaces or removes it. See
:mod:`fruits_jobs.contract` for the layout.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from fruits_jobs import contract, storage

log = logging.getLogger(__name__)


def _reports(spark: SparkSession, output: str) -> list[tuple[str, str]]:
    """``(uri, key)`` of the files directly in ``_reports/``."""
    return [
        (uri, f"{contract.REPORTS}/{uri.rsplit('/', 1)[-1]}")
        for uri in storage.list_files(spark, contract.dataset_uri(output, contract.REPORTS))
    ]


def committed_batches(spark: SparkSession, output: str) -> dict[str, dict[str, Any]]:
    """The batches committed under ``output``: batch id -> its report (one GET each on S3)."""
    found = {}
    for uri, key in _reports(spark, output):
        batch = contract.batch_of_report(key)
        if batch is None:
            continue
        report = contract.parse_report(storage.read_bytes(spark, uri))
        if report is None:
            log.warning("ignoring %s: not a featurize report (a run died writing it?)", uri)
            continue
        found[batch] = report
    return found


def uncommit(spark: SparkSession, output: str, batches: Iterable[str] | None = None) -> None:
    """Delete the reports of ``batches`` (of every batch when None) and their temporary files.

    Called before a batch's data is touched: a run that dies after this leaves the batch
    uncommitted, never committed with half its data.
    """
    wanted = None if batches is None else set(batches)
    for uri, key in _reports(spark, output):
        name = re.sub(r"\.[0-9a-f]+\.tmp$", "", key)  # what storage.publish_bytes writes first
        batch = contract.batch_of_report(name)
        if batch is not None and (wanted is None or batch in wanted):
            log.info("uncommitting batch %s: deleting %s", batch, uri)
            storage.delete(spark, uri)


def commit(spark: SparkSession, output: str, batch: str, report: dict[str, Any]) -> None:
    """Publish the report of ``batch``, its commit record, in one step (after its data)."""
    storage.write_json(spark, contract.featurize_report_uri(output, batch), report)


def read_committed(
    spark: SparkSession, dataset: str, schema: str, batches: Iterable[str]
) -> DataFrame | None:
    """The rows of ``batches`` in the ``dataset`` folder (with ``batch``); None for no batch."""
    uris = [contract.join(dataset, f"{contract.BATCH}={b}") for b in sorted(batches)]
    if not uris:
        return None
    return spark.read.schema(schema).option("basePath", dataset).parquet(*uris)


def current_fit(spark: SparkSession, output: str) -> str | None:
    """The fit id ``_reports/pca.json`` names, or None when there is no current PCA."""
    uri = contract.pca_report_uri(output)
    if not storage.exists(spark, uri):
        return None
    pointer = contract.parse_pointer(storage.read_bytes(spark, uri))
    return None if pointer is None else pointer[contract.R_FIT]


def publish_fit(spark: SparkSession, output: str, report: dict[str, Any]) -> None:
    """Make ``report[R_FIT]`` the current fit by publishing its report, then drop the others."""
    storage.write_json(spark, contract.pca_report_uri(output), report)
    drop_fits(spark, output, keep=report[contract.R_FIT])


def drop_fits(spark: SparkSession, output: str, keep: str | None) -> list[str]:
    """Delete the folders of every fit but ``keep``; their URIs.

    Before a fit: what PCA runs killed half-way left. After it: the fit it superseded.
    """
    dropped = []
    for dataset in contract.FIT_DATASETS:
        for uri in storage.list_folders(spark, contract.dataset_uri(output, dataset)):
            fit = uri.rsplit("/", 1)[-1]
            if fit != keep and re.fullmatch(contract.FIT_ID_PATTERN, fit):
                storage.delete(spark, uri)
                dropped.append(uri)
    if dropped:
        log.info("dropped %d folders of fits other than %s: %s", len(dropped), keep, dropped)
    return dropped
