"""The code a cluster needs, as one content-addressed bundle: entry scripts, package, bootstrap.

The nodes' Python packages are not in it: :mod:`fruits_pipeline.node_env` builds them, once per
lock file.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

from fruits_pipeline.cluster import BOOTSTRAP_KEY
from fruits_pipeline.config import EMR_BOOTSTRAP_SCRIPT, PROJECT_ROOT
from fruits_pipeline.steps import JOBS, PACKAGE_ZIP

EPOCH = (1980, 1, 1, 0, 0, 0)
"""Fixed zip timestamps: the same sources always give the same bytes, hence the same version."""


def package_zip(package: Path) -> bytes:
    """A deterministic zip of the ``fruits_jobs`` package for ``spark-submit --py-files``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(package.rglob("*.py")):
            info = zipfile.ZipInfo(path.relative_to(package.parent).as_posix(), EPOCH)
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def code_bundle(root: Path = PROJECT_ROOT) -> dict[str, bytes]:
    """Key (relative to the code prefix) -> content, for everything ``upload_code`` sends."""
    jobs = root / "spark_jobs"
    bundle = {f"{job}.py": (jobs / f"{job}.py").read_bytes() for job in JOBS}
    bundle[PACKAGE_ZIP] = package_zip(jobs / "fruits_jobs")
    bundle[BOOTSTRAP_KEY] = (root / EMR_BOOTSTRAP_SCRIPT).read_bytes()
    return bundle


def bundle_version(bundle: dict[str, bytes]) -> str:
    """12 hex digits of the bundle's sha256: a new version only when the code changes."""
    digest = hashlib.sha256()
    for key in sorted(bundle):
        digest.update(key.encode() + b"\0" + hashlib.sha256(bundle[key]).digest())
    return digest.hexdigest()[:12]
