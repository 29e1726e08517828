"""Print where a run's outputs are and what they say (``make demo``, ``make demo-emr``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fruits_jobs import contract
from fruits_pipeline.outputs_state import survey
from fruits_pipeline.stores import LocalStore, Store
from fruits_pipeline.validation import Findings, validate


def summarize(store: Store, batch: str) -> tuple[str, Findings]:
    """Lines on the outputs in ``store`` (folder or S3 prefix), and the validation's findings.

    The outputs are surveyed once. The lines give the batch's counts, the current PCA, the
    artefacts' locations, and validity. Only committed batches and the current PCA fit are
    described; left-overs of runs that died are named (``make lake-state CLEAN=1`` removes
    them).
    """
    state = survey(store)
    findings = validate(store, batch, state)
    featurize = state.committed.get(batch)
    lines = [
        f"batch {batch}: not committed (its run did not finish)"
        if featurize is None
        else f"batch {batch}: {featurize[contract.R_INPUT]} images in, "
        f"{featurize[contract.R_FEATURIZED]} featurized, "
        f"{featurize[contract.R_QUARANTINED]} quarantined, "
        f"{featurize.get(contract.R_SKIPPED)} already featurized earlier "
        f"({featurize.get(contract.R_THROUGHPUT)} images/s)",
        f"features   {contract.join(store.uri, contract.FEATURES)}",
        f"quarantine {contract.join(store.uri, contract.QUARANTINE)}",
        f"reports    {contract.join(store.uri, contract.REPORTS)}",
    ]
    if state.pca is not None and state.fit is not None:
        pca, fit = state.pca, state.fit
        csv_keys = state.fit_csvs
        lines += [
            f"PCA: k={pca[contract.R_K]} components explain "
            f"{sum(pca[contract.R_EXPLAINED]):.1%} of the variance over {pca[contract.R_ROWS]} "
            f"images of {len(pca[contract.R_BATCHES])} batches (fit {fit})",
            f"PCA matrix {contract.join(store.uri, csv_keys[0] if csv_keys else contract.PCA_CSV)}",
            f"PCA model  {contract.join(store.uri, contract.fit_key(contract.PCA_MODEL, fit))}",
            *(
                f"plot       {contract.join(store.uri, contract.plot_key(fit, name))}"
                for name in contract.PCA_PLOTS
            ),
        ]
    if state.left_overs:
        lines.append(
            f"left-overs of runs that died, ignored: {', '.join(x.name for x in state.left_overs)}"
            " (make lake-state CLEAN=1 removes them)"
        )
    lines.append(
        "outputs valid" if findings.ok else f"outputs INVALID: {findings.missing + findings.wrong}"
    )
    return "\n".join(lines), findings


def main(argv: list[str] | None = None) -> int:
    """Print the summary; exit 1 when the outputs break the contract."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", type=Path, help="the local output root")
    parser.add_argument("--batch", required=True, help="the batch to describe")
    args = parser.parse_args(argv)
    text, findings = summarize(LocalStore(args.output), args.batch)
    print(text)
    return 0 if findings.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
