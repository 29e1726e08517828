"""The walkthrough notebook runs end to end on a few shipped images, as make notebook runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fruits_pipeline.config import SAMPLE_IMAGES
from tests.conftest import ROOT, copy_images, labels, sample_images

PER_LABEL, LABELS = 4, 3


@pytest.fixture(scope="module")
def executed(weights_file, tmp_path_factory) -> dict:
    """``notebooks/build.py`` on 12 sample images: its exit status, notebook and output root."""
    training = SAMPLE_IMAGES / "Training"
    images = tmp_path_factory.mktemp("images")
    copy_images(sample_images(training, PER_LABEL, labels(training, LABELS)), images)
    out = tmp_path_factory.mktemp("notebook")
    env = {
        **os.environ,
        "FRUITS_IMAGE_SOURCE": str(images),
        "FRUITS_WEIGHTS": str(weights_file),
        "FRUITS_NOTEBOOK_OUTPUT": str(out / "outputs"),
        "FRUITS_NOTEBOOK_MASTER": "local[1]",
    }
    done = subprocess.run(
        [sys.executable, "notebooks/build.py", "notebooks/walkthrough.py", "--out", str(out)],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    notebook = json.loads((out / "walkthrough.ipynb").read_text())
    return {"done": done, "cells": notebook["cells"], "out": out}


def text_of(cell: dict) -> str:
    """Everything a code cell printed or displayed as text."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append("".join(output.get("text", "")))
        parts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_every_cell_runs_without_error(executed):
    assert executed["done"].returncode == 0, executed["done"].stderr[-3000:]
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert errors == [] and all(c.get("execution_count") for c in code)
    assert (executed["out"] / "walkthrough.html").stat().st_size > 100_000


def test_it_shows_the_quarantine_the_broadcast_and_the_job_counts(executed):
    printed = "\n".join(text_of(c) for c in executed["cells"])
    images = PER_LABEL * LABELS
    assert f"{images} image files listed" in printed
    assert "the same photo, cut in half: quarantined, reason 'truncated image: " in printed
    assert "260 arrays" in printed and "driver has built 0 nets" in printed
    counts = {"input": images, "featurized": images, "quarantined": 0}
    assert str(counts) in printed
    assert f"{images} rows x " in printed  # the CSV matrix, one row per image


def test_the_pca_plots_are_inline_and_are_the_jobs_own(executed):
    pngs = [
        o["data"]["image/png"]
        for c in executed["cells"]
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(pngs) == 3  # the decoded photo, the explained variance, the PC1/PC2 scatter
    report = json.loads((executed["out"] / "outputs" / "_reports" / "pca.json").read_text())
    assert len(report["plots"]) == 2 and report["rows"] == PER_LABEL * LABELS
