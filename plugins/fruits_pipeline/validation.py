"""Check the Spark jobs' outputs against their contract, in any :class:`Store`.

The rules and the words are :mod:`fruits_jobs.contract`'s; this module only fetches the
files. Only committed batches and the current PCA fit count
(:mod:`fruits_pipeline.outputs_state`): left-overs of runs that died are named in the summary,
never counted. Two kinds of problem: *missing* (may still be arriving: a sensor waits) and
*wrong* (the outputs exist and contradict each other: fail at once).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from fruits_jobs import contract
from fruits_jobs.contract import OutputState
from fruits_pipeline.outputs_state import survey
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


def validate(store: Store, batch: str, state: OutputState | None = None) -> Findings:
    """Check the outputs under ``store`` (the output root) after batch ``batch``.

    ``state`` is :func:`~fruits_pipeline.outputs_state.survey`'s of ``store`` when the caller
    has surveyed it already; by default the outputs are surveyed here.

    * batch ``batch`` is committed and its ``input = featurized + quarantined``;
    * a current PCA fit covers every committed batch (else *missing*: a PCA is due), and
      its rows equal the featurized rows of the batches it covers;
    * the fit's folders exist, with exactly one CSV whose header is ``path,label,pc_1..pc_k``
      and whose sample has no NaN, and both plots.
    """
    findings = Findings()
    state = survey(store) if state is None else state
    report = state.committed.get(batch)
    if report is None:
        findings.missing.append(f"{store.uri}/{contract.featurize_report_key(batch)}")
    else:
        findings.wrong += [f"batch {batch}: {p}" for p in contract.check_counts(report)]
        findings.summary["batch"] = {
            k: report.get(k)
            for k in (contract.R_INPUT, contract.R_FEATURIZED, contract.R_QUARANTINED)
        }
    findings.summary["feature_rows"] = sum(
        r[contract.R_FEATURIZED] for r in state.committed.values()
    )
    findings.summary["left_overs"] = [left.name for left in state.left_overs]
    if state.pca is None:
        findings.missing.append(f"{store.uri}/{contract.PCA_REPORT_KEY}")
    else:
        _check_fit(store, state, findings)
    return findings


def _check_fit(store: Store, state: OutputState, findings: Findings) -> None:
    pca, fit = state.pca or {}, state.fit or ""
    covered = set(pca.get(contract.R_BATCHES) or [])
    gone = sorted(covered - set(state.committed))
    uncovered = sorted(set(state.committed) - covered)
    if gone or uncovered:  # the fit is older than the batches: the next PCA replaces it
        findings.missing.append(
            f"a PCA fit over the committed batches: fit {fit} covers {sorted(covered)}"
            + (f", not {uncovered}" if uncovered else "")
            + (f", and {gone} are no longer committed" if gone else "")
        )
    else:
        rows = sum(state.committed[b][contract.R_FEATURIZED] for b in covered)
        findings.wrong += contract.check_pca_report(pca, rows)
    findings.summary["pca"] = {
        "fit": fit,
        "k": pca.get(contract.R_K),
        "rows": pca.get(contract.R_ROWS),
    }
    present = set(state.fit_keys)
    for dataset in contract.FIT_DATASETS:
        if not any(key.startswith(f"{contract.fit_key(dataset, fit)}/") for key in present):
            findings.wrong.append(f"{store.uri}/{contract.fit_key(dataset, fit)}/ is absent")
    findings.wrong += [
        f"{store.uri}/{contract.plot_key(fit, name)} is absent"
        for name in contract.PCA_PLOTS
        if contract.plot_key(fit, name) not in present
    ]
    _check_csv(store, fit, int(pca.get(contract.R_K) or 0), state.fit_csvs, findings)


def _check_csv(store: Store, fit: str, k: int, parts: list[str], findings: Findings) -> None:
    folder = contract.fit_key(contract.PCA_CSV, fit)
    if len(parts) != 1:
        findings.wrong.append(f"{len(parts)} CSV files in {store.uri}/{folder}/, expected one")
    if not parts:
        return
    text = store.read(parts[0], max_bytes=CSV_SAMPLE_BYTES).decode("utf-8", errors="replace")
    lines = text.splitlines()
    if len(text.encode()) >= CSV_SAMPLE_BYTES and lines:
        lines = lines[:-1]  # the range read may cut the last line
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    if not rows:
        findings.wrong.append(f"{parts[0]} is empty")
        return
    findings.wrong += contract.check_csv_sample(rows[0], rows[1:], k)
