"""Check the Spark jobs' outputs against their contract, in any :class:`Store`.

The rules and the words are :mod:`fruits_jobs.contract`'s; this module only fetches the
files. Two kinds of problem: *missing* (may still be arriving: a sensor waits) and *wrong*
(the outputs exist and contradict each other: fail at once).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from fruits_jobs import contract
from fruits_pipeline.stores import Store

CSV_SAMPLE_BYTES = 256 * 1024
"""How much of the PCA CSV is read to check its header and sample rows for NaN."""


@dataclass
class Findings:
    """What a validation found; ``ok`` when nothing is missing or wrong."""

    missing: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Nothing missing, nothing wrong."""
        return not self.missing and not self.wrong


def _json(store: Store, key: str, findings: Findings) -> dict[str, Any] | None:
    try:
        return json.loads(store.read(key))
    except FileNotFoundError:
        findings.missing.append(f"{store.uri}/{key}")
    except json.JSONDecodeError as err:
        findings.wrong.append(f"{store.uri}/{key} is not JSON: {err}")
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
            raise
        findings.missing.append(f"{store.uri}/{key}")
    return None


def validate(store: Store, batch: str) -> Findings:
    """Check the outputs under ``store`` (the output root) after batch ``batch``.

    * the batch's featurize report exists and ``input = featurized + quarantined``;
    * the PCA report's rows equal the featurized rows of every batch's report;
    * exactly one PCA CSV, with the header ``path,label,pc_1..pc_k`` and no NaN in a sample;
    * both plots exist.
    """
    findings = Findings()
    report = _json(store, contract.featurize_report_key(batch), findings)
    if report is not None:
        findings.wrong += [f"batch {batch}: {p}" for p in contract.check_counts(report)]
        findings.summary["batch"] = {
            k: report.get(k)
            for k in (contract.R_INPUT, contract.R_FEATURIZED, contract.R_QUARANTINED)
        }
    feature_rows = 0
    for entry in store.entries(contract.FEATURIZE_REPORT_PREFIX):
        batch_report = _json(store, entry.key, findings) or {}
        feature_rows += int(batch_report.get(contract.R_FEATURIZED, 0))
    pca = _json(store, contract.PCA_REPORT_KEY, findings)
    if pca is not None:
        findings.wrong += contract.check_pca_report(pca, feature_rows)
        findings.summary["pca"] = {"k": pca.get(contract.R_K), "rows": pca.get(contract.R_ROWS)}
        _check_csv(store, int(pca.get(contract.R_K) or 0), findings)
    findings.summary["feature_rows"] = feature_rows
    present = {entry.key for entry in store.entries(contract.REPORTS)}
    findings.missing += [
        f"{store.uri}/{contract.plot_key(name)}"
        for name in contract.PCA_PLOTS
        if contract.plot_key(name) not in present
    ]
    return findings


def _check_csv(store: Store, k: int, findings: Findings) -> None:
    parts = [e.key for e in store.entries(contract.PCA_CSV) if e.key.endswith(".csv")]
    if not parts:
        findings.missing.append(f"{store.uri}/{contract.PCA_CSV}/part-*.csv")
        return
    if len(parts) > 1:
        findings.wrong.append(f"{len(parts)} CSV files in {contract.PCA_CSV}/, expected one")
    text = store.read(parts[0], max_bytes=CSV_SAMPLE_BYTES).decode("utf-8", errors="replace")
    lines = text.splitlines()
    if len(text.encode()) >= CSV_SAMPLE_BYTES and lines:
        lines = lines[:-1]  # the range read may cut the last line
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    if not rows:
        findings.wrong.append(f"{parts[0]} is empty")
        return
    findings.wrong += contract.check_csv_sample(rows[0], rows[1:], k)
