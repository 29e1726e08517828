"""Execute a jupytext notebook and write the executed ``.ipynb`` and an HTML copy.

``make notebook`` runs ``python notebooks/build.py notebooks/walkthrough.py --out out/notebook``;
the notebook reads its URIs from ``FRUITS_IMAGE_SOURCE``, ``FRUITS_WEIGHTS`` and
``FRUITS_NOTEBOOK_OUTPUT``. Any cell error fails the build (exit 1) after writing what ran, so
the failing cell and its traceback are in the ``.ipynb`` and the HTML.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

log = logging.getLogger(__name__)


def build(source: Path, out: Path, timeout_s: int = 3600) -> tuple[Path, Path]:
    """Execute ``source`` with its working directory in ``out``; the ``.ipynb`` and ``.html``.

    :raises CellExecutionError: a cell failed (both files are written first).
    """
    out.mkdir(parents=True, exist_ok=True)
    notebook = jupytext.read(source)
    client = NotebookClient(
        notebook,
        timeout=timeout_s,
        kernel_name="python3",
        resources={"metadata": {"path": str(out)}},
    )
    ipynb, html = out / f"{source.stem}.ipynb", out / f"{source.stem}.html"
    try:
        client.execute()
    finally:
        nbformat.write(notebook, ipynb)
        body, _ = HTMLExporter().from_notebook_node(notebook)
        html.write_text(body, encoding="utf-8")
    return ipynb, html


def main(argv: list[str] | None = None) -> int:
    """``python notebooks/build.py SOURCE --out DIR``: 0, or 1 naming the failed cell."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="jupytext notebook (py:percent)")
    parser.add_argument("--out", type=Path, required=True, help="folder for .ipynb and .html")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds a cell may take")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        ipynb, html = build(args.source, args.out, args.timeout)
    except CellExecutionError as err:
        log.error("%s: a cell failed (see %s): %s", args.source, args.out, str(err)[-2000:])
        return 1
    log.info("executed in %.0f s: %s, %s", time.perf_counter() - started, ipynb, html)
    return 0


if __name__ == "__main__":
    sys.exit(main())
