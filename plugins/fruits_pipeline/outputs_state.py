"""The state of an output root: committed batches, the current PCA fit, and left-overs.

``python -m fruits_pipeline.outputs_state OUT [--clean]`` (``make lake-state``), where ``OUT``
is a folder or ``s3://bucket/prefix``, prints the batches whose report commits them (with
their counts), the current PCA fit and the batches it covers, and the left-overs: files of no
committed batch and no current fit, which a run that died left behind (the readers ignore
them). :func:`fruits_jobs.contract.classify` sorts the files, as it does for the Spark jobs.
``--clean`` deletes the left-overs; run it only while no job writes to ``OUT``, since a
running job's files are not committed yet either.
"""

from __future__ import annotations

import argparse
import logging
import re

from fruits_jobs import contract
from fruits_jobs.contract import OutputState
from fruits_pipeline.stores import Store, open_store

log = logging.getLogger(__name__)


def survey(store: Store) -> OutputState:
    """List the contract's folders under ``store`` and sort them (reads the reports: GETs on S3).

    See :func:`fruits_jobs.contract.classify`: committed batches, the current fit, and the
    left-overs, each a batch's or a fit's folder or a report file.
    """
    files = {e.key: e.size for top in contract.TOP_FOLDERS for e in store.listing(f"{top}/")}
    return contract.classify(files, store.read)


def clean(store: Store, state: OutputState) -> int:
    """Delete the files of ``state``'s left-overs (``DeleteObject`` each on S3); how many."""
    deleted = 0
    for left in state.left_overs:
        log.info("deleting %s/%s (%d files)", store.uri, left.name, len(left.keys))
        for key in left.keys:
            store.delete(key)
            deleted += 1
    return deleted


def describe(uri: str, state: OutputState) -> str:
    """The state of the output root ``uri`` as a few lines for a person."""
    lines = [f"{uri}: {len(state.committed)} committed batches"]
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
    print(describe(store.uri, state))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
