"""The batch report page of a run, from a real output root: what it shows and what it reads.

The output roots are written with the contract's names (:mod:`test_sync_validation`'s
helpers); the pages a running api-server serves for real runs are checked in
``running_airflow/test_rest_and_schedule.py``.
"""

from __future__ import annotations

import json

from fruits_jobs import contract
from fruits_pipeline.batch_report import RunFacts, gather, render
from fruits_pipeline.stores import LocalStore
from tests.pipeline.test_sync_validation import FIT, write_contract

BATCH = "2026-12-01"


class Recording(LocalStore):
    """A folder store that records the keys it reads and the prefixes it lists."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.reads: list[str] = []
        self.listed: list[str] = []

    def read(self, key: str, max_bytes: int | None = None) -> bytes:
        self.reads.append(key)
        return super().read(key, max_bytes)

    def listing(self, prefix: str = ""):
        self.listed.append(prefix)
        return super().listing(prefix)


def facts(**xcoms) -> RunFacts:
    values = {("preflight", "batch_id"): BATCH}
    values.update({(task, "return_value"): value for task, value in xcoms.items()})
    return RunFacts("fruits_local", "manual__2026-12-01T00:00:00+00:00", "success", {}, values)


def big_batch(store: LocalStore, images: int, quarantined: int, parts: int) -> list[dict]:
    """A committed batch of ``images`` in ``parts`` part files, its report with the sample."""
    write_contract(store, batch=BATCH, rows=4)
    for n in range(parts):
        store.write(f"{contract.FEATURES}/batch={BATCH}/part-{n:05d}.parquet", b"PAR1")
    sample = [
        {contract.PATH: f"file:/lake/Apple/<b>{n:03d}</b>.jpg", contract.REASON: "truncated image"}
        for n in range(contract.QUARANTINE_SAMPLE)
    ]
    report = {
        contract.R_INPUT: images,
        contract.R_FEATURIZED: images - quarantined,
        contract.R_QUARANTINED: quarantined,
        contract.R_SKIPPED: 7,
        contract.R_QUARANTINE_SAMPLE: sample,
    }
    store.write(contract.featurize_report_key(BATCH), json.dumps(report).encode())
    return sample


def test_a_committed_batch_shows_counts_quarantine_fit_plots_and_uris(tmp_path):
    store = Recording(tmp_path)
    sample = big_batch(store, images=100_000, quarantined=1_000, parts=2_000)
    page = render(gather(facts(), store))
    for label, value in (("photos in", 100000), ("featurized", 99000), ("quarantined", 1000)):
        assert f"<tr><th>{label}</th><td>{value}</td></tr>" in page
    assert "<tr><th>already featurized</th><td>7</td></tr>" in page
    assert "Quarantined: 1000 files (the first 100)" in page
    assert "&lt;b&gt;000&lt;/b&gt;.jpg</code>: truncated image" in page  # escaped, never markup
    assert "<b>" not in page and page.count("<li><code>") == len(sample)
    assert f"<tr><th>fit</th><td>{FIT}</td></tr>" in page and "70.0%" in page
    assert page.count("data:image/png;base64,") == len(contract.PCA_PLOTS)
    assert f"{tmp_path}/{contract.fit_key(contract.PCA_CSV, FIT)}/part-0.csv" in page
    assert "<h2>Outputs</h2>" in page  # the fit covers 3 rows, not the batch's: named
    # Reports, plots and the CSV's head are read; the data is listed by folder, never read.
    assert all(k.startswith(contract.REPORTS) or k.endswith(".csv") for k in store.reads)
    assert not any(k.startswith((contract.FEATURES, contract.QUARANTINE)) for k in store.reads)


def test_a_run_with_nothing_new_shows_the_decision(tmp_path):
    write_contract(LocalStore(tmp_path), batch=BATCH, rows=4)
    reason = "nothing new: the 3 images in the lake are in committed batches"
    page = render(
        gather(facts(plan_work={"anything": False, "reason": reason}), LocalStore(tmp_path))
    )
    assert "<h2>Nothing new</h2>" in page and reason in page and "<h2>Batch" not in page


def test_a_run_that_failed_half_way_shows_what_is_missing(tmp_path):
    write_contract(LocalStore(tmp_path), batch="2026-11-30", rows=4)  # an earlier batch only
    run = facts()
    run.tasks.update(featurize="failed", pca="upstream_failed")
    page = render(gather(run, LocalStore(tmp_path)))
    assert f"Batch {BATCH}</h2><p class='missing'>Not committed" in page
    assert f"{contract.featurize_report_key(BATCH)}</li>" in page  # named as missing
    assert "<tr><th>featurize</th><td>failed</td></tr>" in page


def test_an_emr_run_shows_its_cluster_and_cost(tmp_path):
    write_contract(LocalStore(tmp_path), batch=BATCH, rows=4)
    cluster = {
        "Status": {"State": "TERMINATED", "StateChangeReason": {"Code": "ALL_STEPS_COMPLETED"}}
    }
    described = []
    report = gather(
        facts(create_cluster="j-1ABC", cost_check={"eur": 0.42, "images": 3}),
        LocalStore(tmp_path),
        describe_cluster=lambda cluster_id: described.append(cluster_id) or cluster,
        log_uri="s3://logs/emr/",
        max_cost_eur=10.0,
    )
    page = render(report)
    assert described == ["j-1ABC"]
    assert "<tr><th>final state</th><td>TERMINATED ALL_STEPS_COMPLETED</td></tr>" in page
    assert "<tr><th>step logs</th><td>s3://logs/emr/j-1ABC/steps/</td></tr>" in page
    assert "EUR 0.42 (max_cost_eur 10.00)" in page


def test_a_batch_id_that_breaks_the_pattern_names_no_key(tmp_path):
    run = RunFacts("fruits_local", "r", "failed", {}, {("preflight", "batch_id"): "../b"})
    store = Recording(tmp_path)
    page = render(gather(run, store))
    assert run.batch is None and "No batch" in page
    assert not any(".." in key for key in store.reads + store.listed)
