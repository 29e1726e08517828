"""The output contract's commits, on the Spark side: which batches and which PCA fit count.

A batch counts once its report is published (:func:`commit`), after its data; a PCA fit once
``_reports/pca.json`` names it (:func:`publish_fit`), after its files. Everything else under
the output root is a left-over of a run that died: the readers here never see it, and the
next run of the same batch, or the next PCA, replaces or removes it. The rules are
:func:`fruits_jobs.contract.classify`'s, the Airflow side's too: this module lists the output
root through Hadoop's FileSystem, feeds it the keys, and deletes what it names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from fruits_jobs import contract, storage

log = logging.getLogger(__name__)


def _survey(
    spark: SparkSession, output: str, names: Iterable[str]
) -> tuple[str, contract.OutputState]:
    """The full URI of ``output``, and its files under ``names`` sorted by the contract."""
    root, files = storage.list_tree(spark, output, names)
    return root, contract.classify(
        files, lambda key: storage.read_bytes(spark, contract.join(root, key))
    )


def committed_batches(spark: SparkSession, output: str) -> dict[str, dict[str, Any]]:
    """The batches committed under ``output``: batch id -> its report (one GET each on S3)."""
    root, state = _survey(spark, output, [contract.REPORTS])
    for unit in state.left_overs:
        if contract.batch_of_report(unit.name) is not None:
            log.warning(
                "ignoring %s: not a featurize report (a run died writing it?)",
                contract.join(root, unit.name),
            )
    return state.committed


def uncommit(spark: SparkSession, output: str, batches: Iterable[str] | None = None) -> None:
    """Delete the reports of ``batches`` (of every batch when None) and their temporary files.

    Called before a batch's data is touched: a run that dies after this leaves the batch
    uncommitted, never committed with half its data.
    """
    wanted = None if batches is None else set(batches)
    root, state = _survey(spark, output, [contract.REPORTS])
    for unit in state.units:
        batch = unit.owner if unit.kind == contract.REPORT_UNIT else None
        if batch is not None and (wanted is None or batch in wanted):
            for path in unit.roots:
                uri = contract.join(root, path)
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
    _, state = _survey(spark, output, [contract.PCA_REPORT_KEY])
    return state.fit


def publish_fit(spark: SparkSession, output: str, report: dict[str, Any]) -> None:
    """Make ``report[R_FIT]`` the current fit by publishing its report, then drop the others."""
    storage.write_json(spark, contract.pca_report_uri(output), report)
    drop_fits(spark, output, keep=report[contract.R_FIT])


def drop_fits(spark: SparkSession, output: str, keep: str | None) -> list[str]:
    """Delete the folders of every fit but ``keep``; their URIs.

    Before a fit: what PCA runs killed half-way left. After it: the fit it superseded.
    """
    root, state = _survey(spark, output, contract.FIT_DATASETS)
    dropped = [
        contract.join(root, path)
        for unit in state.units
        if unit.kind == contract.FIT_UNIT and unit.owner not in (None, keep)
        for path in unit.roots
    ]
    for uri in dropped:
        storage.delete(spark, uri)
    if dropped:
        log.info("dropped %d folders of fits other than %s: %s", len(dropped), keep, dropped)
    return dropped
