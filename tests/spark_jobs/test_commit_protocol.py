"""The commit protocol: one classification of the output root, the same on both sides.

:func:`fruits_jobs.contract.classify` is tested alone on each case, then on random listings
written into a real folder: the Spark side (:mod:`fruits_jobs.commits`, through Hadoop's
FileSystem on a real SparkSession) and the Airflow side (``outputs_state.survey`` over a
:class:`LocalStore`) must find the same committed batches, the same current fit, and delete
exactly the left-overs the survey names.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fruits_jobs import commits, contract
from fruits_pipeline.outputs_state import survey
from fruits_pipeline.stores import LocalStore

REPORT = b'{"input": 2, "featurized": 1, "quarantined": 1}'
FIT = "20261124T093000Z-1a2b3c4d"
OLD_FIT = "20261123T093000Z-0f0f0f0f"
TORN = (b"", b'{"input": 1', b"[]", b'{"input": "2", "featurized": 1, "quarantined": 1}', b"\xff")
"""Report contents that commit nothing: empty, cut short, no object, a count not an int."""
OLD_LAYOUT = {
    "_reports/pca_scatter.png": "_reports/pca_scatter.png",
    "pca/part-00000.parquet": "pca/part-00000.parquet",
    "pca_model/metadata/part-00000": "pca_model/metadata/",
}
"""Files of the layout before fits had folders, and the unit each is a left-over of."""
OLD_POINTER = b'{"k": 2, "rows": 3}'
"""``pca.json`` of the layout before fits: it names none."""
FOREIGN = ("_reports/notes.txt", "_reports/pca.json.bak", "_reports/pca_$folder$", "README.md")
"""Files outside the contract's names: in no unit."""


def classify(files: dict[str, bytes]) -> contract.OutputState:
    return contract.classify({k: len(v) for k, v in files.items()}, files.__getitem__)


def left_overs(state: contract.OutputState) -> list[str]:
    return [unit.name for unit in state.left_overs]


def batch_files(batch: str) -> dict[str, bytes]:
    """A batch's data and attribution folders, without its report."""
    return {
        f"{contract.batch_key(dataset, batch)}/part-0.parquet": b"PAR1"
        for dataset in contract.BATCH_DATASETS
    }


def fit_files(fit: str) -> dict[str, bytes]:
    return {f"{contract.fit_key(dataset, fit)}/part-0": b"x" for dataset in contract.FIT_DATASETS}


def pointer(fit: str) -> bytes:
    return json.dumps({contract.R_FIT: fit, contract.R_K: 2}).encode()


def test_a_batch_counts_once_its_report_does():
    state = classify(
        {**batch_files("a"), **batch_files("b"), contract.featurize_report_key("a"): REPORT}
    )
    assert state.committed == {"a": json.loads(REPORT)}
    assert left_overs(state) == [
        "_reports/attribution/b/",
        "features/batch=b/",
        "quarantine/batch=b/",
    ]
    assert {u.owner for u in state.units} == {"a", "b"}


@pytest.mark.parametrize("data", TORN)
def test_a_half_written_or_foreign_report_commits_nothing(data):
    state = classify({**batch_files("a"), contract.featurize_report_key("a"): data})
    assert state.committed == {}
    assert "_reports/featurize-a.json" in left_overs(state)
    assert "features/batch=a/" in left_overs(state)


def test_checksums_and_emrfs_markers_go_with_their_file_or_folder():
    extras = {
        "features/batch=a/.part-0.parquet.crc": b"crc",
        "features/batch=a_$folder$": b"",
        "_reports/.featurize-a.json.crc": b"crc",
    }
    committed = classify({**batch_files("a"), contract.featurize_report_key("a"): REPORT, **extras})
    assert left_overs(committed) == []
    (features,) = [u for u in committed.units if u.name == "features/batch=a/"]
    assert sorted(features.keys) == [
        "features/batch=a/.part-0.parquet.crc",
        "features/batch=a/part-0.parquet",
        "features/batch=a_$folder$",
    ]
    assert (features.size, features.roots) == (7, ("features/batch=a", "features/batch=a_$folder$"))

    torn = classify({**batch_files("a"), contract.featurize_report_key("a"): b"", **extras})
    report = next(u for u in torn.left_overs if u.kind == contract.REPORT_UNIT)
    assert report.roots == ("_reports/featurize-a.json", "_reports/.featurize-a.json.crc")


def test_temporary_files_are_left_overs_of_the_report_they_stand_for():
    temporary = contract.temporary_name(contract.featurize_report_key("a"))
    assert contract.published_name(temporary) == contract.featurize_report_key("a")
    pca_temporary = contract.temporary_name(contract.PCA_REPORT_KEY)
    files = {
        contract.featurize_report_key("a"): REPORT,
        temporary: REPORT[:5],
        contract.PCA_REPORT_KEY: pointer(FIT),
        pca_temporary: b"{",
    }
    state = classify({**files, **fit_files(FIT)})
    assert (sorted(state.committed), state.fit) == (["a"], FIT)
    assert [(u.name, u.kind, u.owner) for u in state.left_overs] == [
        (temporary, contract.REPORT_UNIT, "a"),
        (pca_temporary, contract.REPORT_UNIT, None),
    ]


def test_the_current_fit_is_the_one_pca_json_names():
    state = classify(
        {**fit_files(FIT), **fit_files(OLD_FIT), contract.PCA_REPORT_KEY: pointer(FIT)}
    )
    assert state.fit == FIT
    assert sorted(state.fit_keys) == sorted(fit_files(FIT))
    assert left_overs(state) == [
        contract.fit_key(dataset, OLD_FIT) + "/" for dataset in sorted(contract.FIT_DATASETS)
    ]
    assert {u.owner for u in state.left_overs} == {OLD_FIT}


def test_the_old_layout_is_left_over():
    old = dict.fromkeys(OLD_LAYOUT, b"x") | {contract.PCA_REPORT_KEY: OLD_POINTER}
    state = classify({**old, **fit_files(FIT)})
    assert (state.pca, state.fit, state.fit_keys) == (None, None, [])
    assert set(left_overs(state)) == {
        *OLD_LAYOUT.values(),
        contract.PCA_REPORT_KEY,
        *(f"{contract.fit_key(dataset, FIT)}/" for dataset in contract.FIT_DATASETS),
    }
    assert {u.owner for u in state.units if u.name in OLD_LAYOUT.values()} == {None}


def test_files_outside_the_contract_and_folder_objects_are_ignored():
    state = classify({**dict.fromkeys(FOREIGN, b"x"), "features/batch=a/": b""})
    assert state.units == []


def test_committed_batches_names_the_reports_it_ignores(spark, tmp_path, caplog):
    (tmp_path / contract.REPORTS).mkdir()
    (tmp_path / contract.featurize_report_key("a")).write_bytes(REPORT)
    (tmp_path / contract.featurize_report_key("b")).write_bytes(b'{"input": 1')
    with caplog.at_level(logging.WARNING, logger="fruits_jobs.commits"):
        assert list(commits.committed_batches(spark, str(tmp_path))) == ["a"]
    assert caplog.messages == [
        f"ignoring file:{tmp_path}/_reports/featurize-b.json: "
        "not a featurize report (a run died writing it?)"
    ]


# --- both sides on random listings ---------------------------------------------------------
BATCHES = ("b0", "b1", "2026-11-24")
FITS = (OLD_FIT, FIT, "20261125T000000Z-deadbeef")
TEMPORARY = ".0a1b2c3d.tmp"


@dataclass
class Listing:
    """Files to write under an output root, and what the contract must make of them."""

    files: dict[str, bytes] = field(default_factory=dict)
    committed: set[str] = field(default_factory=set)
    fit: str | None = None
    left_overs: set[str] = field(default_factory=set)

    def add(self, key: str, data: bytes, left_over: str | None = None) -> None:
        """Write ``data`` at ``key``, which makes the unit ``left_over`` (when given) one."""
        self.files[key] = data
        if left_over is not None:
            self.left_overs.add(left_over)


def draw_batch(draw: st.DrawFn, listing: Listing, batch: str) -> None:
    """A committed, half-written or torn batch, its temporary report, checksums, markers."""
    report = draw(st.sampled_from((None, REPORT, *TORN)))
    committed = report == REPORT
    if committed:
        listing.committed.add(batch)
    key = contract.featurize_report_key(batch)
    if report is not None:
        listing.add(key, report, None if committed else key)
        if draw(st.booleans()):
            listing.add(f"{contract.REPORTS}/.{key.rpartition('/')[2]}.crc", b"c")
    if draw(st.booleans()):
        listing.add(key + TEMPORARY, report or b"{", key + TEMPORARY)
    for dataset in draw(st.sets(st.sampled_from(list(contract.BATCH_DATASETS)))):
        folder = contract.batch_key(dataset, batch)
        listing.add(f"{folder}/part-0.parquet", b"PAR1", None if committed else f"{folder}/")
        if draw(st.booleans()):
            listing.add(f"{folder}/.part-0.parquet.crc", b"c")
        if draw(st.booleans()):
            listing.add(f"{folder}_$folder$", b"")


def draw_fits(draw: st.DrawFn, listing: Listing) -> None:
    """A ``pca.json`` naming a fit or torn (or none), its temporary file, fits' folders."""
    unnamed = st.sampled_from((*TORN, OLD_POINTER))
    named = draw(st.one_of(st.none(), st.sampled_from(FITS), unnamed))
    if isinstance(named, str):
        listing.fit = named
        listing.add(contract.PCA_REPORT_KEY, pointer(named))
    elif named is not None:
        listing.add(contract.PCA_REPORT_KEY, named, contract.PCA_REPORT_KEY)
    if draw(st.booleans()):
        temporary = contract.PCA_REPORT_KEY + TEMPORARY
        listing.add(temporary, b"{", temporary)
    for fit in draw(st.lists(st.sampled_from(FITS), unique=True)):
        for dataset in draw(st.sets(st.sampled_from(contract.FIT_DATASETS), min_size=1)):
            folder = contract.fit_key(dataset, fit)
            listing.add(f"{folder}/part-0", b"x", None if fit == listing.fit else f"{folder}/")
            if draw(st.booleans()):
                listing.add(f"{folder}_$folder$", b"")


@st.composite
def listings(draw: st.DrawFn) -> Listing:
    """Batches and fits in every state, the old layout and foreign files."""
    listing = Listing()
    for batch in draw(st.lists(st.sampled_from(BATCHES), unique=True)):
        draw_batch(draw, listing, batch)
    draw_fits(draw, listing)
    for key in draw(st.sets(st.sampled_from(list(OLD_LAYOUT)))):
        listing.add(key, b"x", OLD_LAYOUT[key])
    for key in draw(st.sets(st.sampled_from(FOREIGN))):
        listing.add(key, b"x")
    return listing


def write(root: Path, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)


@settings(max_examples=25, deadline=None)
@given(listing=listings(), wanted=st.one_of(st.none(), st.sets(st.sampled_from(BATCHES))))
def test_spark_and_airflow_sides_classify_alike(spark, tmp_path_factory, listing, wanted):
    root = tmp_path_factory.mktemp("outputs")
    write(root, listing.files)
    output, uri = str(root), f"file:{root}"
    state = survey(LocalStore(root))
    assert (set(state.committed), state.fit) == (listing.committed, listing.fit)
    assert set(left_overs(state)) == listing.left_overs

    assert commits.committed_batches(spark, output) == state.committed
    assert commits.current_fit(spark, output) == state.fit
    stale = {u.name for u in state.left_overs if u.kind == contract.FIT_UNIT and u.owner}
    dropped = commits.drop_fits(spark, output, keep=state.fit)
    assert sorted(dropped) == sorted(
        f"{uri}/{path}" for u in state.units if u.name in stale for path in u.roots
    )
    commits.uncommit(spark, output, wanted)
    reports = {
        u.name
        for u in state.units
        if u.kind == contract.REPORT_UNIT and u.owner and (wanted is None or u.owner in wanted)
    }
    after = survey(LocalStore(root))
    assert {u.name for u in after.units} == {u.name for u in state.units} - stale - reports
    kept = {b: r for b, r in state.committed.items() if wanted is not None and b not in wanted}
    assert (after.committed, after.fit) == (kept, state.fit)
