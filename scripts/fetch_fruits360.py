"""Download a small Fruits-360 sample (100x100 JPEG) from the dataset's official GitHub branch.

``make fetch-fruits360`` (or ``python scripts/fetch_fruits360.py --dest data/fruits360-sample``)
lists ``Training/`` of github.com/fruits-360/fruits-360-100x100 through GitHub's contents API,
takes the first ``--per-class`` images of each of ``--classes`` classes (all classes matching
``--match`` when given), and writes them in Fruits-360's own layout
``Training/<Class>/<file>.jpg`` with an ``ATTRIBUTION.md`` (CC BY-SA 4.0) beside them.
Files already present with the same size are kept, so a re-run downloads only what is missing.
Needs internet; ``--api`` points it elsewhere (the tests use a loopback server).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger("fetch_fruits360")

REPO = "fruits-360/fruits-360-100x100"
API = "https://api.github.com"
ATTRIBUTION = """# Fruits-360 sample

Images from **Fruits-360** by **Mihai Oltean** (2017-), github.com/{repo} (ref `{ref}`),
downloaded by `scripts/fetch_fruits360.py`. Licence: **CC BY-SA 4.0**
(https://creativecommons.org/licenses/by-sa/4.0/). Changes: only a subset was taken.
Anything that redistributes these images or builds on them (features, PCA matrices) must keep
this attribution and the same licence. Cite: H. Muresan, M. Oltean, "Fruit recognition from
images using deep learning", Acta Univ. Sapientiae, Informatica 10(1), 2018.
"""


def _get(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "fruits-pipeline"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def list_dir(api: str, ref: str, path: str) -> list[dict[str, Any]]:
    """GitHub contents API: the entries of ``path`` in the repository at ``ref``."""
    quoted = urllib.parse.quote(path)
    return json.loads(_get(f"{api}/repos/{REPO}/contents/{quoted}?ref={ref}"))


def fetch(
    dest: Path, *, classes: int, per_class: int, match: str = "", ref: str = "main", api: str = API
) -> int:
    """Download the sample into ``dest``; the number of files written."""
    folders = sorted(e["name"] for e in list_dir(api, ref, "Training") if e["type"] == "dir")
    chosen = [f for f in folders if match.lower() in f.lower()][: classes or None]
    if not chosen:
        raise SystemExit(f"no Training class matches {match!r} in {REPO}@{ref}")
    written = 0
    for folder in chosen:
        files = [e for e in list_dir(api, ref, f"Training/{folder}") if e["type"] == "file"]
        target = dest / "Training" / folder
        target.mkdir(parents=True, exist_ok=True)
        for entry in sorted(files, key=lambda e: e["name"])[:per_class]:
            path = target / entry["name"]
            if path.exists() and path.stat().st_size == entry["size"]:
                continue
            path.write_bytes(_get(entry["download_url"]))
            written += 1
        log.info("%s: %d files", folder, min(per_class, len(files)))
    (dest / "ATTRIBUTION.md").write_text(ATTRIBUTION.format(repo=REPO, ref=ref))
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path("data/fruits360-sample"))
    parser.add_argument("--classes", type=int, default=24, help="how many classes (0: all)")
    parser.add_argument("--per-class", type=int, default=25, help="images per class")
    parser.add_argument("--match", default="", help="only classes whose name contains this")
    parser.add_argument("--ref", default="main", help="branch, tag or commit of the dataset")
    parser.add_argument("--api", default=API, help="GitHub API base URL")
    args = parser.parse_args(argv)
    written = fetch(
        args.dest,
        classes=args.classes,
        per_class=args.per_class,
        match=args.match,
        ref=args.ref,
        api=args.api,
    )
    log.info("%d files written under %s", written, args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
