"""Execute a jupytext notebook and write the executed ``.ipynb`` and an HTML copy.

``make notebook`` runs ``python notebooks/build.py notebooks/walkthrough.py --out out/notebook``;
the notebook reads its URIs from ``FRUITS_IMAGE_SOURCE``, ``FRUITS_WEIGHTS`` and
``FRUITS_NOTEBOOK_OUTPUT``. Any cell error fails the build (exit 1) after writing what ran, so
the failing cell and its traceback are in the ``.ipynb`` and the HTML.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

log = logging.getLogger(__name__)

NOISE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on"
    r"|cpu_feature_guard|To enable the following instructions|Using incubator modules"
    r"|log4j2-defaults.properties|Setting default log level|To adjust logging level"
    r"|WARN (Utils|NativeCodeLoader)"
)
"""Start-up chatter the Python workers and the JVM print on stderr (TensorFlow's CPU notes,
Spark's logging setup): dropped from the written notebook; every other line is kept."""


def drop_noise(notebook: nbformat.NotebookNode) -> None:
    """Remove :data:`NOISE` lines from the cells' stderr, and stderr outputs left empty."""
    for cell in notebook.cells:
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                lines = output["text"].splitlines(keepends=True)
                output["text"] = "".join(line for line in lines if not NOISE.search(line))
                if not output["text"].strip():
                    continue
            kept.append(output)
        if cell.cell_type == "code":
            cell.outputs = kept


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
        drop_noise(notebook)
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
