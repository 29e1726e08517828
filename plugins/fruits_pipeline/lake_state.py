"""The state of an output root: committed batches, the current PCA fit, and left-overs.

``python -m fruits_pipeline.lake_state OUT [--clean]`` (``make lake-state``), where ``OUT`` is
a folder or ``s3://bucket/prefix``, prints the batches whose report commits them (with their
counts), the current PCA fit and the batches it covers, and the left-overs: files of no
committed batch and no current fit, which a run that died left behind (the readers ignore
them; see :mod:`fruits_jobs.contract`). ``--clean`` deletes the left-overs; run it only while
no job writes to ``OUT``, since a running job's files are not committed yet either.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from fruits_jobs import contract
from fruits_pipeline.stores import Entry, Store, open_store

log = logging.getLogger(__name__)

BATCH_DATASETS = (contract.FEATURES, contract.QUARANTINE, contract.ATTRIBUTION)
"""Folders holding one sub-folder per batch (``batch=<id>`` or ``<id>``)."""
LISTED = (contract.REPORTS, contract.FEATURES, contract.QUARANTINE, *contract.FIT_DATASETS[:-1])
"""The prefixes a survey lists (``_reports/`` holds the plots' and attribution folders)."""
EMRFS_MARKER = "_$folder$"
"""The suffix of the empty objects EMRFS writes for folders."""
REPORT_FILES = {contract.PCA_REPORT_KEY, *(f"{contract.REPORTS}/{n}" for n in contract.PCA_PLOTS)}
"""Report names outside the folders: the PCA's, and the plots of the layout before fits."""
REPORT_PREFIXES = (contract.FEATURIZE_REPORT_PREFIX, contract.PCA_REPORT_KEY)
"""The reports' names, and their temporary files' (``<name>.<random>.tmp``)."""
BATCH, FIT, REPORT = "batch", "fit", "report"


@dataclass(frozen=True)
class LeftOver:
    """Files a run that died left: a folder (``name`` ends with ``/``) or a single file."""

    name: str
    keys: tuple[str, ...]
    size: int


@dataclass
class LakeState:
    """What :func:`survey` found under ``uri``."""

    uri: str
    committed: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Batch id -> its report, for every committed batch."""
    pca: dict[str, Any] | None = None
    """The current fit's report (``_reports/pca.json``), None when there is none."""
    fit_keys: list[str] = field(default_factory=list)
    """The keys of the current fit's files."""
    left_overs: list[LeftOver] = field(default_factory=list)

    @property
    def fit(self) -> str | None:
        """The current fit's id."""
        return None if self.pca is None else self.pca[contract.R_FIT]


def survey(store: Store) -> LakeState:
    """List the contract's folders under ``store`` and read the reports (GETs on S3).

    A batch is committed when ``_reports/featurize-<id>.json`` is a complete report; the
    current fit is the one a readable ``_reports/pca.json`` names. Every other file in
    ``features/``, ``quarantine/``, ``_reports/attribution/``, the fits' folders, and under
    the reports' names is a left-over, grouped by batch or fit folder. Files outside the
    contract's names are left out.
    """
    entries = [e for prefix in LISTED for e in store.listing(f"{prefix}/") if e.key[-1] != "/"]
    state = LakeState(store.uri)
    for entry in entries:
        if entry.key == contract.PCA_REPORT_KEY:
            state.pca = contract.parse_pointer(store.read(entry.key))
        elif batch := contract.batch_of_report(entry.key):
            report = contract.parse_report(store.read(entry.key))
            if report is not None:
                state.committed[batch] = report
    current_files = {contract.featurize_report_key(b) for b in state.committed}
    current_files |= {contract.PCA_REPORT_KEY} if state.pca is not None else set()
    units: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        key = _without_checksum(entry.key)
        unit, kind, owner = _unit(key)
        if kind == FIT and owner == state.fit:
            state.fit_keys.append(entry.key)
        elif not (
            unit is None
            or (kind == BATCH and owner in state.committed)
            or (kind == REPORT and key in current_files)
        ):
            units[unit].append(entry)
    state.left_overs = [
        LeftOver(name, tuple(e.key for e in found), sum(e.size for e in found))
        for name, found in sorted(units.items())
    ]
    return state


def _without_checksum(key: str) -> str:
    """The key of the file a Hadoop checksum ``dir/.name.crc`` belongs to, else ``key``."""
    folder, _, name = key.rpartition("/")
    if name.startswith(".") and name.endswith(".crc"):
        return f"{folder}/{name[1:-4]}".lstrip("/")
    return key


def _unit(key: str) -> tuple[str | None, str | None, str | None]:
    """The left-over unit ``key`` would belong to, its kind and owning batch or fit id.

    ``(None, None, None)`` for a file outside the contract's names.
    """
    for kind, datasets in ((BATCH, BATCH_DATASETS), (FIT, contract.FIT_DATASETS)):
        for dataset in datasets:
            if key.startswith(f"{dataset}/"):
                segment, _, rest = key[len(dataset) + 1 :].partition("/")
                folder = segment.removesuffix(EMRFS_MARKER)
                unit = f"{dataset}/{folder}{'/' if rest or folder != segment else ''}"
                return unit, kind, folder.removeprefix(f"{contract.BATCH}=")
    if key.startswith(REPORT_PREFIXES) or key in REPORT_FILES:
        return key, REPORT, None
    return None, None, None


def clean(store: Store, state: LakeState) -> int:
    """Delete the files of ``state``'s left-overs (``DeleteObject`` each on S3); how many."""
    deleted = 0
    for left in state.left_overs:
        log.info("deleting %s/%s (%d files)", store.uri, left.name, len(left.keys))
        for key in left.keys:
            store.delete(key)
            deleted += 1
    return deleted


def describe(state: LakeState) -> str:
    """The state as a few lines for a person."""
    lines = [f"{state.uri}: {len(state.committed)} committed batches"]
    for batch, report in sorted(state.committed.items()):
        problems = contract.check_counts(report)
        lines.append(
            f"  {batch}: {report[contract.R_INPUT]} images, "
            f"{report[contract.R_FEATURIZED]} featurized, "
            f"{report[contract.R_QUARANTINED]} quarantined"
            + (f"  ({'; '.join(problems)})" if problems else "")
        )
    if state.pca is None:
        lines.append("PCA: none current")
    else:
        covered = state.pca.get(contract.R_BATCHES) or []
        uncovered = sorted(set(state.committed) - set(covered))
        lines.append(
            f"PCA: fit {state.fit}, k={state.pca.get(contract.R_K)}, "
            f"{state.pca.get(contract.R_ROWS)} rows, covers {', '.join(covered) or 'no batch'}"
            + (f"; not {', '.join(uncovered)} (run the PCA)" if uncovered else "")
        )
    if not state.left_overs:
        lines.append("left-overs: none")
        return "\n".join(lines)
    lines.append(f"left-overs of runs that died ({len(state.left_overs)}, ignored by readers):")
    lines += [f"  {x.name}  ({len(x.keys)} files, {x.size:,} bytes)" for x in state.left_overs]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the state of an output root; with ``--clean``, delete its left-overs first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="the output root: a folder or s3://bucket/prefix")
    parser.add_argument(
        "--clean", action="store_true", help="delete the left-overs (no job may be running)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    client = None
    if re.match(r"s3a?://", args.output):
        import boto3

        client = boto3.client("s3")
    store = open_store(args.output, client)
    state = survey(store)
    if args.clean and state.left_overs:
        print(f"deleted {clean(store, state)} files of {len(state.left_overs)} left-overs")
        state = survey(store)
    print(describe(state))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
