"""The nothing-new decision: from a lake listing and the outputs' commit records, what runs.

The outputs are sorted by :func:`fruits_jobs.contract.classify` from a listing and the
reports' bytes, as ``plan_work`` gets them from a store; the lake is listed from a folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fruits_jobs import contract
from fruits_pipeline.stores import open_store
from fruits_pipeline.sync import lake_digest
from tests.conftest import SAMPLE_IMAGES, copy_images, sample_images

LABELS = sorted(p.name for p in (SAMPLE_IMAGES / "Training").iterdir())[:2]


def digest(lake: Path) -> str:
    """The lake's digest as ``plan_work`` computes it from a store's listing."""
    return lake_digest(open_store(str(lake)))


def outputs(batches: dict[str, dict], fit: dict | None) -> contract.OutputState:
    """The state of an output root holding ``batches``' reports and the fit's report."""
    reports = {contract.featurize_report_key(b): r for b, r in batches.items()}
    if fit is not None:
        reports[contract.PCA_REPORT_KEY] = {contract.R_FIT: "20261201T000000Z-0a1b2c3d", **fit}
    data = {key: json.dumps(report).encode() for key, report in reports.items()}
    return contract.classify({key: len(body) for key, body in data.items()}, data.__getitem__)


def batch(lake: str, relies_on: list[str] = (), featurized: int = 4) -> dict:
    return {
        contract.R_INPUT: featurized,
        contract.R_FEATURIZED: featurized,
        contract.R_QUARANTINED: 0,
        contract.R_LAKE: lake,
        contract.R_RELIES_ON: list(relies_on),
    }


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    copy_images(sample_images(SAMPLE_IMAGES / "Training", 2, LABELS), root)
    (root / "ATTRIBUTION.md").write_text("not an image: not in the digest")
    return root


def test_the_digest_follows_every_image_and_nothing_else(lake):
    first = digest(lake)
    assert contract.digest_images(first) == 4 and digest(lake) == first
    (lake / "notes.txt").write_text("x")
    (lake / LABELS[0] / ".hidden.jpg").write_bytes(b"x")
    assert digest(lake) == first
    photo = next((lake / LABELS[0]).glob("*.jpg"))
    os.utime(photo, (photo.stat().st_atime, photo.stat().st_mtime + 5))  # touched
    touched = digest(lake)
    assert touched != first
    photo.unlink()
    assert contract.digest_images(digest(lake)) == 3


def test_nothing_new_when_a_committed_batch_covers_the_lake_and_the_fit_every_batch(lake):
    now = digest(lake)
    state = outputs({"d1": batch(now)}, {contract.R_K: 3, contract.R_BATCHES: ["d1"]})
    work = contract.plan_work(state, now, k=3)
    assert not work.anything
    assert work.reason.startswith("nothing new: the 4 images in the lake"), work.reason
    assert not contract.plan_work(state, now).anything  # no k asked: the fit's own is fine


def test_a_new_photo_or_a_failed_run_leaves_work_to_featurize(lake):
    before = digest(lake)
    state = outputs({"d1": batch(before)}, {contract.R_K: 3, contract.R_BATCHES: ["d1"]})
    copy_images(sample_images(SAMPLE_IMAGES / "Training", 3, LABELS)[-1:], lake)
    # Whether no run came after the photo landed, or one died before its commit: same state.
    work = contract.plan_work(state, digest(lake), k=3)
    assert (work.featurize, work.pca) == (True, True)
    assert work.reason.startswith("5 images in the lake, and no committed batch covers them all")
    assert work.fit_rows == 4 + 5  # d1's rows, and at most every image of the lake


def test_a_batch_whose_earlier_batches_were_uncommitted_no_longer_covers_the_lake(lake):
    now = digest(lake)
    fit = {contract.R_K: 3, contract.R_BATCHES: ["d2"]}
    # d2 left out d1's photos as featurized; d1 was uncommitted since (a re-run that died).
    assert contract.plan_work(outputs({"d2": batch(now, ["d1"])}, fit), now, k=3).featurize
    both = outputs(
        {"d1": batch("3-aa"), "d2": batch(now, ["d1"])}, {**fit, "batches": ["d1", "d2"]}
    )
    assert not contract.plan_work(both, now, k=3).anything


@pytest.mark.parametrize(
    ("fit", "asked", "why"),
    [
        (None, {"k": 3}, "no current PCA fit"),
        ({contract.R_K: 3, contract.R_BATCHES: []}, {"k": 3}, "not the committed ['d1']"),
        ({contract.R_K: 3, contract.R_BATCHES: ["d1"]}, {"k": 4}, "has k=3, asked k=4"),
        (
            {contract.R_K: 3, contract.R_TARGET_VARIANCE: 0.9, contract.R_BATCHES: ["d1"]},
            {"variance": 0.8},
            "has variance=0.9, asked variance=0.8",
        ),
    ],
)
def test_a_fit_that_misses_a_batch_or_has_another_size_is_refitted_alone(lake, fit, asked, why):
    now = digest(lake)
    work = contract.plan_work(outputs({"d1": batch(now)}, fit), now, **asked)
    assert (work.featurize, work.pca) == (False, True) and work.reason.endswith(why), work.reason
    assert work.fit_rows == 4  # d1's rows: nothing to featurize


def test_a_full_recompute_always_runs_both(lake):
    now = digest(lake)
    state = outputs({"d1": batch(now)}, {contract.R_K: 3, contract.R_BATCHES: ["d1"]})
    work = contract.plan_work(state, now, full_recompute=True, k=3)
    assert (work.featurize, work.pca) == (True, True) and work.fit_rows == 4 + 4
