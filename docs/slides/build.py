"""Build the presentation: figures from the code and a real run, then Marp to HTML and PDF.

``make slides`` runs ``python docs/slides/build.py --out out/slides``:

1. ``--run OUT`` (optional) copies a real run's reports and PCA plots (an output root of
   ``make demo`` or ``make notebook``) into ``docs/slides/run/``, the run the slides show;
2. draws the architecture diagram and the planner's cost chart (:mod:`fruits_pipeline.planner`)
   into ``OUT/img/``, beside the run's plots;
3. fills each ``{{ name }}`` of ``slides.md`` with a figure computed here (planner, benchmark
   constants, the run's reports) and each image with its PNG as a data URI, so the HTML is one
   self-contained file;
4. runs the pinned Marp CLI (``docs/slides/package.json``) with Debian's Chromium
   (``CHROME_PATH``) to write ``OUT/slides.html`` and ``OUT/slides.pdf``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fruits_jobs import contract, model
from fruits_pipeline import planner
from fruits_pipeline.config import Settings

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
RUN = HERE / "run"
"""The real run the slides show: its featurize and PCA reports and its two plots."""
SOURCE = HERE / "slides.md"
PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
IMAGE = re.compile(r"!\[([^\]]*)\]\(img/([\w.-]+\.png)\)")
"""An image of the deck: ``![alt](img/name.png)``, always under ``img/``."""
SIZES = (1_000, 100_000, 1_000_000)
"""Batch sizes of the cost slide."""


def refresh_run(outputs: Path) -> None:
    """Copy the current PCA fit's report, its plots and its batches' reports into :data:`RUN`."""
    pca_report = json.loads((outputs / contract.PCA_REPORT_KEY).read_text())
    RUN.mkdir(exist_ok=True)
    for old in RUN.iterdir():
        old.unlink()
    shutil.copy2(outputs / contract.PCA_REPORT_KEY, RUN / "pca.json")
    for batch in pca_report[contract.R_BATCHES]:
        shutil.copy2(
            outputs / contract.featurize_report_key(batch), RUN / f"featurize-{batch}.json"
        )
    for name in pca_report[contract.R_PLOTS]:
        shutil.copy2(outputs / contract.plot_key(pca_report[contract.R_FIT], name), RUN / name)
    log.info("run %s copied into %s", pca_report[contract.R_FIT], RUN)


def architecture(path: Path, settings: Settings) -> None:
    """The architecture diagram: Airflow, S3, IAM and the per-batch EMR cluster."""
    from matplotlib import pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plt.subplots(figsize=(12, 5.6))
    ax.set(xlim=(0, 12), ylim=(0, 5.6))
    ax.axis("off")
    boxes = [
        ((0.2, 3.9, 2.9, 1.1), "#f2f2f2", "image source\nfolder or s3://landing/{ds}/"),
        (
            (0.2, 0.5, 2.9, 2.8),
            "#e3f0ff",
            "Airflow 3: fruits_emr DAG\npreflight\nsync_images, upload_code\ncost_check"
            "\nvalidate_outputs\nterminate_cluster",
        ),
        (
            (4.3, 3.3, 3.3, 2.0),
            "#fff3d6",
            f"S3 bucket ({settings.region})\nSSE, no public access, TLS only\n"
            "raw/images/  code/<hash>/\noutputs/  emr-logs/",
        ),
        (
            (4.3, 0.3, 4.3, 2.4),
            "#e6f5e6",
            f"EMR cluster, one per batch\n{settings.emr_release}, 1 + "
            f"{settings.core_instance_count} {settings.core_instance_type}\n"
            "bootstrap: Python 3.11 + TensorFlow\nstep 1 featurize (MobileNetV2,\n"
            "broadcast weights), step 2 PCA",
        ),
        (
            (9.3, 0.6, 2.5, 1.8),
            "#f5e6f5",
            "IAM\nEMR service role\nnode instance profile:\nthis bucket only",
        ),
        (
            (9.3, 3.5, 2.5, 1.6),
            "#f2f2f2",
            "outputs\nfeatures, PCA matrix (CSV),\nPipelineModel, plots",
        ),
    ]
    for (x, y, w, h), colour, text in boxes:
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="#555"))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9.5)
    arrows = [
        ((1.65, 3.9), (1.65, 3.35), "sync (new files)"),
        ((3.15, 2.9), (4.3, 3.8), "PutObject"),
        ((3.15, 1.3), (4.3, 1.3), "RunJobFlow,\nAddJobFlowSteps"),
        ((6.0, 2.75), (6.0, 3.3), "EMRFS"),
        ((9.3, 1.5), (8.65, 1.5), "assumed\nby"),
        ((7.65, 4.3), (9.3, 4.3), "outputs/"),
    ]
    white = {"fc": "white", "ec": "none", "pad": 1}
    for start, end, label in arrows:
        ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "lw": 1.6})
        middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ax.text(*middle, label, fontsize=8, ha="center", va="center", color="#333", bbox=white)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def cost_chart(path: Path, settings: Settings) -> None:
    """Where a run's time goes, per batch size (stacked minutes), from the planner."""
    from matplotlib import pyplot as plt

    plans = [planner.estimate(settings, n) for n in SIZES]
    parts = {
        "cluster start": [p.start_s / 60 for p in plans],
        "bootstrap": [p.bootstrap_s / 60 for p in plans],
        "featurize": [p.featurize_s / 60 for p in plans],
        "PCA": [p.pca_s / 60 for p in plans],
    }
    fig, ax = plt.subplots(figsize=(9, 4.2))
    names = [
        f"{n:,} images\nEUR {p.eur:.2f} (spot {p.spot_eur:.2f})"
        for n, p in zip(SIZES, plans, strict=True)
    ]
    left = [0.0] * len(plans)
    for label, minutes in parts.items():
        ax.barh(names, minutes, left=left, label=label)
        left = [a + b for a, b in zip(left, minutes, strict=True)]
    ax.set(xlabel="minutes the cluster is up (planner estimate)")
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def figures(settings: Settings) -> dict[str, Any]:
    """Every ``{{ name }}`` of the deck: computed from the planner, constants and the run."""
    pca_report = json.loads((RUN / "pca.json").read_text())
    batches = [json.loads(p.read_text()) for p in sorted(RUN.glob("featurize-*.json"))]
    fruits360 = planner.estimate(settings, 67_692)
    best = planner.recommend_core_nodes(settings, 1_000_000, 30 * 60)
    assert best is not None, "1M images fit in 30 min with up to MAX_CORE_NODES core nodes"
    shapes = model.weight_shapes(1.0)
    return {
        "weights_arrays": str(len(shapes)),
        "weights_mb": f"{sum(int(np.prod(s)) for s in shapes) * 4 / 1e6:.0f}",
        "covariance_mb": f"{contract.FEATURE_DIM**2 * 8 / 1e6:.0f}",
        "eur_per_hour": f"{settings.cluster_eur_per_hour(spot=False):.2f}",
        "spot_eur_per_hour": f"{settings.cluster_eur_per_hour(spot=True):.2f}",
        "max_cost": f"{settings.max_cost_eur:.0f}",
        "cluster_start_min": f"{planner.CLUSTER_START_S / 60:.0f}",
        "bootstrap_min": f"{planner.BOOTSTRAP_S / 60:.1f}",
        "step_start_s": f"{planner.STEP_START_S:.0f}",
        "per_vcpu": f"{planner.FEATURIZE_IMAGES_PER_VCPU_S:.1f}",
        "pca_per_vcpu": f"{planner.PCA_ROWS_PER_VCPU_S:.0f}",
        "plan_table": planner.table(settings, list(SIZES)),
        "fruits360_parts": fruits360.parts(),
        "fruits360_eur": f"{fruits360.eur:.2f}",
        "fruits360_spot_eur": f"{fruits360.spot_eur:.2f}",
        "best_1m_nodes": str(best.nodes - 1),
        "best_1m_minutes": f"{best.total_s / 60:.0f}",
        "best_1m_eur": f"{best.eur:.2f}",
        "run_images": str(sum(b[contract.R_INPUT] for b in batches)),
        "run_featurized": str(sum(b[contract.R_FEATURIZED] for b in batches)),
        "run_quarantined": str(sum(b[contract.R_QUARANTINED] for b in batches)),
        "run_rate": f"{batches[-1][contract.R_THROUGHPUT]:.1f}",
        "run_labels": batches[-1][contract.R_IMAGES].rstrip("/").rsplit("/", 1)[-1],
        "run_k": str(pca_report[contract.R_K]),
        "run_variance": f"{pca_report[contract.R_CUMULATIVE][-1]:.1%}",
        "run_rows": str(pca_report[contract.R_ROWS]),
        "run_fit": pca_report[contract.R_FIT],
    }


def render(text: str, values: dict[str, Any], images: Path) -> str:
    """``text`` with its placeholders filled and its ``img/`` PNGs inlined as data URIs.

    :raises KeyError: a placeholder has no value; :raises FileNotFoundError: an image is missing.
    """

    def value(match: re.Match[str]) -> str:
        return str(values[match.group(1)])

    def inline(match: re.Match[str]) -> str:
        data = base64.b64encode((images / match.group(2)).read_bytes()).decode()
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    return IMAGE.sub(inline, PLACEHOLDER.sub(value, text))


def marp(markdown: Path, target: Path, *flags: str) -> None:
    """Run the pinned Marp CLI on ``markdown``; Chromium from ``CHROME_PATH`` (or Debian's)."""
    binary = HERE / "node_modules" / ".bin" / "marp"
    if not binary.exists():
        raise SystemExit(f"{binary} missing: run npm ci --prefix {HERE} (make slides does)")
    env = {**os.environ, "CHROME_PATH": os.environ.get("CHROME_PATH", "/usr/bin/chromium")}
    command = [
        str(binary),
        "--no-stdin",
        "--allow-local-files",
        *flags,
        str(markdown),
        "-o",
        str(target),
    ]
    subprocess.run(command, check=True, env=env, cwd=markdown.parent)


def main(argv: list[str] | None = None) -> int:
    """``python docs/slides/build.py --out DIR [--run OUTPUTS] [--no-pdf]``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for HTML, PDF, images")
    parser.add_argument("--run", type=Path, help="a run's output root to show (refreshes run/)")
    parser.add_argument("--no-pdf", action="store_true", help="HTML only")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.run:
        refresh_run(args.run)
    images = args.out / "img"
    images.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    architecture(images / "architecture.png", settings)
    cost_chart(images / "cost.png", settings)
    for name in contract.PCA_PLOTS:
        shutil.copy2(RUN / name, images / name)
    markdown = args.out / "slides.md"
    markdown.write_text(render(SOURCE.read_text(), figures(settings), images))
    marp(markdown, args.out / "slides.html")
    if not args.no_pdf:
        marp(markdown, args.out / "slides.pdf", "--pdf")
    log.info("slides in %s (%.0f s)", args.out, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
