"""Print where a local run's outputs are and what they say (``make demo`` ends with it)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fruits_jobs import contract
from fruits_pipeline.stores import LocalStore
from fruits_pipeline.validation import validate


def summarize(output: Path, batch: str) -> str:
    """A few lines: the batch's counts, the PCA's size, the artefacts' paths, and validity."""
    featurize = json.loads((output / contract.featurize_report_key(batch)).read_text())
    pca = json.loads((output / contract.PCA_REPORT_KEY).read_text())
    findings = validate(LocalStore(output), batch)
    csv_files = sorted((output / contract.PCA_CSV).glob("*.csv"))
    lines = [
        f"batch {batch}: {featurize[contract.R_INPUT]} images in, "
        f"{featurize[contract.R_FEATURIZED]} featurized, "
        f"{featurize[contract.R_QUARANTINED]} quarantined, "
        f"{featurize[contract.R_SKIPPED]} already featurized earlier "
        f"({featurize[contract.R_THROUGHPUT]} images/s)",
        f"PCA: k={pca[contract.R_K]} components explain "
        f"{pca[contract.R_CUMULATIVE][-1]:.1%} of the variance over {pca[contract.R_ROWS]} images",
        f"features   {output / contract.FEATURES}",
        f"quarantine {output / contract.QUARANTINE}",
        f"PCA matrix {csv_files[0] if csv_files else output / contract.PCA_CSV}",
        f"PCA model  {output / contract.PCA_MODEL}",
        f"reports    {output / contract.REPORTS}",
        *(f"plot       {output / contract.plot_key(name)}" for name in contract.PCA_PLOTS),
        "outputs valid" if findings.ok else f"outputs INVALID: {findings.missing + findings.wrong}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the summary; exit 1 when the outputs break the contract."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", type=Path, help="the local output root")
    parser.add_argument("--batch", required=True, help="the batch to describe")
    args = parser.parse_args(argv)
    text = summarize(args.output, args.batch)
    print(text)
    return 0 if text.endswith("outputs valid") else 1


if __name__ == "__main__":
    raise SystemExit(main())
