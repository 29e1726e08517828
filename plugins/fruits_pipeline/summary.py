"""Print where a local run's outputs are and what they say (``make demo`` ends with it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fruits_jobs import contract
from fruits_pipeline.outputs_state import survey
from fruits_pipeline.stores import LocalStore
from fruits_pipeline.validation import Findings, validate


def summarize(output: Path, batch: str) -> tuple[str, Findings]:
    """A few lines on the outputs, and the validation's findings (the outputs are surveyed once).

    The lines give the batch's counts, the current PCA, the artefacts' paths, and validity.
    Only committed batches and the current PCA fit are described; left-overs of runs that
    died are named (``make lake-state CLEAN=1`` removes them).
    """
    store = LocalStore(output)
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
        f"features   {output / contract.FEATURES}",
        f"quarantine {output / contract.QUARANTINE}",
        f"reports    {output / contract.REPORTS}",
    ]
    if state.pca is not None and state.fit is not None:
        pca, fit = state.pca, state.fit
        csv_files = sorted((output / contract.fit_key(contract.PCA_CSV, fit)).glob("*.csv"))
        lines += [
            f"PCA: k={pca[contract.R_K]} components explain "
            f"{pca[contract.R_CUMULATIVE][-1]:.1%} of the variance over {pca[contract.R_ROWS]} "
            f"images of {len(pca[contract.R_BATCHES])} batches (fit {fit})",
            f"PCA matrix {csv_files[0] if csv_files else output / contract.PCA_CSV}",
            f"PCA model  {output / contract.fit_key(contract.PCA_MODEL, fit)}",
            *(f"plot       {output / contract.plot_key(fit, name)}" for name in contract.PCA_PLOTS),
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
    text, findings = summarize(args.output, args.batch)
    print(text)
    return 0 if findings.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
