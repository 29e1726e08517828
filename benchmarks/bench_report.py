"""The batch report's render time for a 100,000-image batch, against a 10-image one.

``make bench-report`` (or ``python benchmarks/bench_report.py``) writes two output roots with
the contract's names, as the jobs leave them: (a) a batch of 10 images in 1 part file,
(b) a batch of 100,000 images in 2,000 part files (50 images a file), 1,000 of them
quarantined, with the report's 100-file sample, the real plots of a fit, and a CSV of
100,000 rows. Then, ``--rounds`` times (5), alternating, it times what the api-server does
for the "Batch report" tab: :func:`fruits_pipeline.batch_report.gather` (survey, validation,
plots) and :func:`~fruits_pipeline.batch_report.render`, and prints the medians and b/a.
The page lists the output folders (part files, not images) and reads the reports, the plots
and the CSV's head, never the data: (b) grows with the listing, far under the 2 s allowed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "spark_jobs")]

from fruits_jobs import contract  # noqa: E402
from fruits_pipeline.batch_report import RunFacts, gather, render  # noqa: E402
from fruits_pipeline.stores import LocalStore  # noqa: E402

BATCH = "2026-12-01"
FIT = "20261201T000000Z-0a1b2c3d"
K = 50


def plots(rows: int) -> dict[str, bytes]:
    """The fit's two plots, drawn by the PCA job's own functions (no Spark session)."""
    import numpy as np
    import pandas as pd

    from fruits_jobs.pca import plot_scatter, plot_variance

    rng = np.random.default_rng(0)
    sample = pd.DataFrame(
        {
            contract.LABEL: rng.choice(["Apple", "Banana", "Cherry"], 2000),
            "pc_1": rng.normal(size=2000),
            "pc_2": rng.normal(size=2000),
        }
    )
    drawn = (plot_variance(np.full(K, 0.9 / K)), plot_scatter(sample, rows))
    return dict(zip(contract.PCA_PLOTS, drawn, strict=True))


def output_root(folder: Path, images: int, parts: int, quarantined: int) -> LocalStore:
    """A committed batch of ``images`` in ``parts`` files and a current fit over it."""
    store = LocalStore(folder)
    for n in range(parts):
        store.write(f"{contract.FEATURES}/batch={BATCH}/part-{n:05d}.parquet", b"PAR1")
    store.write(f"{contract.QUARANTINE}/batch={BATCH}/part-00000.parquet", b"PAR1")
    sample = [
        {contract.PATH: f"s3://lake/raw/images/Apple/{n:06d}.jpg", contract.REASON: "truncated"}
        for n in range(min(quarantined, contract.QUARANTINE_SAMPLE))
    ]
    featurized = images - quarantined
    report = {
        contract.R_BATCH: BATCH,
        contract.R_DISCOVERED: images,
        contract.R_SKIPPED: 0,
        contract.R_INPUT: images,
        contract.R_FEATURIZED: featurized,
        contract.R_QUARANTINED: quarantined,
        contract.R_THROUGHPUT: 90.0,
        contract.R_QUARANTINE_SAMPLE: sample,
    }
    store.write(contract.featurize_report_key(BATCH), json.dumps(report).encode())
    k = K
    rows = "\n".join(
        f"s3://lake/raw/images/Apple/{n:06d}.jpg,Apple," + ",".join(["0.125"] * k)
        for n in range(featurized)
    )
    store.write(
        f"{contract.fit_key(contract.PCA_CSV, FIT)}/part-00000.csv",
        (",".join(contract.pca_csv_header(k)) + "\n" + rows).encode(),
    )
    store.write(f"{contract.fit_key(contract.PCA, FIT)}/part-00000.parquet", b"PAR1")
    store.write(f"{contract.fit_key(contract.PCA_MODEL, FIT)}/metadata/part-00000", b"{}")
    for name, png in plots(featurized).items():
        store.write(contract.plot_key(FIT, name), png)
    explained = [0.9 / k] * k
    pointer = {
        contract.R_FIT: FIT,
        contract.R_K: k,
        contract.R_ROWS: featurized,
        contract.R_EXPLAINED: explained,
        contract.R_CUMULATIVE: [sum(explained[: i + 1]) for i in range(k)],
        contract.R_BATCHES: [BATCH],
    }
    store.write(contract.PCA_REPORT_KEY, json.dumps(pointer).encode())
    return store


def page_seconds(store: LocalStore) -> float:
    """Wall seconds of what the api-server does for one request of the tab."""
    facts = RunFacts("fruits_local", "manual__x", "success", {}, {("preflight", "batch_id"): BATCH})
    started = time.perf_counter()
    page = render(gather(facts, store))
    took = time.perf_counter() - started
    assert "<h2>Outputs</h2><p>valid</p>" in page, "the benchmark's outputs must validate"
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = output_root(Path(tmp) / "a", images=10, parts=1, quarantined=1)
        large = output_root(Path(tmp) / "b", images=100_000, parts=2_000, quarantined=1_000)
        times: dict[str, list[float]] = {"a": [], "b": []}
        for _ in range(args.rounds):
            times["a"].append(page_seconds(small))
            times["b"].append(page_seconds(large))
    a, b = (statistics.median(times[x]) for x in "ab")
    print(f"(a) 10 images, 1 part file:            {a * 1000:7.1f} ms (median of {args.rounds})")
    print(f"(b) 100,000 images, 2,000 part files:  {b * 1000:7.1f} ms; b/a {b / a:.2f}")


if __name__ == "__main__":
    main()
