"""The EMR nodes' Python environment: one archive per lock file, built from wheels only.

The archive is a gzipped tar of a ``site-packages`` folder holding the Spark jobs' third-party
packages (:data:`PACKAGES`) at the lock file's versions, installed from wheels built for EMR 7's
nodes (:data:`TARGET`: Amazon Linux 2023, x86_64, glibc 2.34, CPython 3.11). pip downloads the
target's wheels whatever the host runs, so any Linux machine builds it without compiling.
PySpark stays out: EMR provides Spark.

``cluster_request`` (:mod:`fruits_pipeline.emr_tasks`) puts it in the bucket under
:func:`env_key` (a hash of the lock file and of this module's choices) and skips the upload
when that key exists; the bootstrap action
(``spark_jobs/bootstrap/install_python_deps.sh``) downloads it on each node into a virtual
environment of Amazon Linux's ``python3.11`` (:data:`fruits_pipeline.config.EMR_PYTHON`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

log = logging.getLogger(__name__)

PACKAGES = (
    "tensorflow-cpu",
    "h5py",
    "pillow",
    "numpy",
    "pandas",
    "pyarrow",
    "matplotlib",
    "boto3",
)
"""What the jobs import beyond the standard library and PySpark (their distributions)."""
GLIBC_MINOR = 34
"""Amazon Linux 2023's glibc is 2.34: wheels for any manylinux up to it run on the nodes."""
PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(GLIBC_MINOR, 4, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)
"""pip's ``--platform`` tags of the nodes, newest first (pip takes each literally)."""
PYTHON = (3, 11)
"""The nodes' CPython: Amazon Linux 2023's ``python3.11``."""
COMPRESS_LEVEL = 4
"""gzip level of the archive: a third of the installed size, and quick to unpack."""
PRUNED = ("include", "tests")
"""Folders left out of every package: C headers (for building extensions) and test suites,
which nothing imports at run time; a third of the files a node would write, 340 MB."""


@dataclass(frozen=True)
class Target:
    """The interpreter and platform the archive is built for."""

    python: tuple[int, int] = PYTHON
    platforms: tuple[str, ...] = PLATFORMS

    @property
    def abi(self) -> str:
        """The interpreter's ABI tag (``cp311``)."""
        return f"cp{self.python[0]}{self.python[1]}"

    @property
    def tags(self) -> frozenset[Tag]:
        """Every wheel tag an interpreter of this target installs."""
        return frozenset(
            (
                *cpython_tags(self.python, [self.abi, "abi3", "none"], self.platforms),
                *compatible_tags(self.python, self.abi, self.platforms),
            )
        )

    def pip_options(self) -> list[str]:
        """Pip's options that pick this target's wheels, and only wheels."""
        options = ["--only-binary=:all:", "--implementation", "cp"]
        options += ["--python-version", ".".join(map(str, self.python))]
        options += ["--abi", self.abi]
        for platform in self.platforms:
            options += ["--platform", platform]
        return options


TARGET = Target()


class WheelError(ValueError):
    """A wheel that the target's interpreter cannot install."""


def env_key(lock: bytes, packages: tuple[str, ...] = PACKAGES, target: Target = TARGET) -> str:
    """The archive's name: a hash of the lock file, the packages and the target.

    A new archive only when one of them changes.

    >>> env_key(b"numpy==2.3.5")
    'python-deb853d6f127'
    """
    digest = hashlib.sha256(lock)
    digest.update(repr((packages, target, PRUNED)).encode())
    return f"python-{digest.hexdigest()[:12]}"


def check_wheels(folder: Path, target: Target = TARGET) -> list[Path]:
    """The wheels in ``folder``, each checked against the target's tags.

    :raises WheelError: naming the first wheel the target cannot install, or a file that is
        not a wheel (pip built nothing from source, and nothing else is installed).
    """
    wheels = sorted(folder.iterdir())
    tags = target.tags
    for path in wheels:
        if path.suffix != ".whl":
            raise WheelError(f"{path.name}: not a wheel (the node environment takes wheels only)")
        _, _, _, wheel_tags = parse_wheel_filename(path.name)
        if not wheel_tags & tags:
            raise WheelError(
                f"{path.name}: not for the nodes' CPython {'.'.join(map(str, target.python))} "
                f"on {target.platforms[0]} (its tags: {', '.join(sorted(map(str, wheel_tags)))})"
            )
    return wheels


def pip(*args: str) -> None:
    """Run this interpreter's pip, quietly; its output in the error when it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip {args[0]} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")


def build(
    lock: Path, dest: Path, packages: tuple[str, ...] = PACKAGES, target: Target = TARGET
) -> Path:
    """Build the archive of ``packages`` at ``lock``'s versions for ``target`` as ``dest``.

    pip downloads the target's wheels (its cache serves what ``make setup`` fetched), the
    builder checks each (:func:`check_wheels`), pip installs them into a folder with
    ``--no-index``, the :data:`PRUNED` folders go, and the folder becomes a gzipped tar,
    published by an atomic rename.
    """
    started = time.monotonic()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fruits-node-env-", dir=dest.parent) as work:
        wheels, site = Path(work) / "wheels", Path(work) / "site-packages"
        options = target.pip_options()
        pip(
            "download",
            "--quiet",
            "--dest",
            str(wheels),
            "--constraint",
            str(lock),
            *options,
            *packages,
        )
        check_wheels(wheels, target)
        pip(
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--target",
            str(site),
            *options,
            *map(str, sorted(wheels.iterdir())),
        )
        shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts: the jobs run none
        for name in PRUNED:
            for folder in sorted(site.glob(f"*/**/{name}"), reverse=True):
                if folder.is_dir():
                    shutil.rmtree(folder)
        pending = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        with tarfile.open(pending, "w:gz", compresslevel=COMPRESS_LEVEL) as archive:
            for entry in sorted(site.iterdir()):
                archive.add(entry, arcname=entry.name)
        pending.replace(dest)
    log.info(
        "node environment %s: %d packages, %.0f MB, built in %.0f s",
        dest.name,
        len(packages),
        dest.stat().st_size / 1e6,
        time.monotonic() - started,
    )
    return dest


def ensure(cache: Path, lock: Path, packages: tuple[str, ...] = PACKAGES) -> Path:
    """The archive of ``packages`` at ``lock``'s versions in the folder ``cache``.

    Built there first if missing, by one builder at a time (the others wait for it).
    """
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / f"{env_key(lock.read_bytes(), packages)}.tar.gz"
    with (cache / ".lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not dest.is_file():
            log.info("building the node environment %s (once per lock file)", dest.name)
            build(lock, dest, packages)
    return dest


def main() -> None:
    """``python -m fruits_pipeline.node_env``: this lock file's archive, in ``NODE_ENVS``."""
    from fruits_pipeline.config import LOCK_FILE, PROJECT_ROOT, Settings

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    archive = ensure(Path(Settings.from_env().node_envs).expanduser(), PROJECT_ROOT / LOCK_FILE)
    print(f"{archive} ({archive.stat().st_size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
