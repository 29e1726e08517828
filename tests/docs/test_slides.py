"""The presentation builds as make slides builds it, and every slide's image is in it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SLIDES = ROOT / "docs" / "slides"
MARP = SLIDES / "node_modules" / ".bin" / "marp"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """``docs/slides/build.py`` into a temporary folder: the source and what it wrote."""
    chrome = Path(os.environ.get("CHROME_PATH", "/usr/bin/chromium"))
    assert MARP.exists(), f"{MARP} missing: make test runs npm ci in {SLIDES}"
    assert chrome.exists(), f"{chrome} missing: make setup installs Debian's chromium"
    out = tmp_path_factory.mktemp("slides")
    done = subprocess.run(
        [sys.executable, str(SLIDES / "build.py"), "--out", str(out)],
        check=False,
        cwd=ROOT,
        env={**os.environ, "CHROME_PATH": str(chrome)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {"source": (SLIDES / "slides.md").read_text(), "out": out}


def slides_in(markdown: str) -> list[str]:
    """The slides of a Marp deck: what lies between ``---`` lines, front matter excluded."""
    return re.split(r"\n---\n", markdown.split("\n---\n", 1)[1])


def test_every_slides_image_was_drawn_and_is_inlined_in_the_html(built):
    referenced = re.findall(r"\]\(img/([\w.-]+\.png)\)", built["source"])
    assert {"architecture.png", "cost.png", "pca_scatter.png"} <= set(referenced)
    for name in referenced:
        assert (built["out"] / "img" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    html = (built["out"] / "slides.html").read_text()
    assert html.count("data:image/png;base64,") == len(referenced)
    assert "img/" not in html and "{{" not in html  # self-contained, every figure filled in


def test_html_and_pdf_hold_every_slide(built):
    html = (built["out"] / "slides.html").read_text()
    assert html.count("<section ") == len(slides_in(built["source"]))
    assert (built["out"] / "slides.pdf").read_bytes()[:5] == b"%PDF-"


def test_the_run_the_slides_show_is_a_committed_real_run(built):
    run = SLIDES / "run"
    pca = json.loads((run / "pca.json").read_text())
    reports = [json.loads(p.read_text()) for p in run.glob("featurize-*.json")]
    assert sorted(r["batch"] for r in reports) == sorted(pca["batches"])
    assert sum(r["featurized"] for r in reports) == pca["rows"]
    html = (built["out"] / "slides.html").read_text()
    assert f"k = <strong>{pca['k']}</strong>" in html and pca["fit"] in html
