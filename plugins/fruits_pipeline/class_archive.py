"""A class-data-sharing archive per Spark job, so a local job's JVM starts in seconds.

A Spark job's JVM spends seconds loading and verifying Spark's classes before any work.
Java's dynamic class-data sharing (JDK 13+) keeps them: the first run of a job on this
machine dumps the classes its JVM loaded (``-XX:ArchiveClassesAtExit``, about 20 s more, once
per job), and every later run maps that archive (``-XX:SharedArchiveFile``). Measured on
2 cores: a featurize run on 96 photos 18.5 s -> 14.7 s, a PCA run 17.3 s -> 11.9 s
(``make bench-startup``).

The JVM checks an archive against itself and its class path when it starts, and runs
without one that does not match, with a warning, never a failure. The archive's name carries
the Java binary, the pyspark version and the Spark home whose ``jars/`` make the class path,
so that an upgrade, or a job run from another Spark home (the EMR stand-in's), starts a new
archive instead of ignoring the one that is there. A run dumps to a name of its own,
published only when the run succeeds, so concurrent first runs and killed ones never leave a
half-written archive.

>>> ClassArchive(Path("/no/such/featurize-1a2b.jsa")).java_option(dump=False)
''
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def java_binary() -> Path | None:
    """The ``java`` that ``spark-submit`` runs: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(found).resolve() if found and Path(found).is_file() else None


def default_spark_home() -> Path:
    """The Spark home ``spark-submit`` runs from: ``$SPARK_HOME``, else pyspark's own folder."""
    home = os.environ.get("SPARK_HOME")
    if home:
        return Path(home)
    import pyspark

    return Path(pyspark.__file__).parent


def runtime_key(spark_home: Path) -> str | None:
    """12 hex digits naming the Java binary, the pyspark version and ``spark_home``.

    The Java binary by path, size and mtime; ``spark_home`` because its ``jars/`` are the
    JVM's class path, which the archive records. ``None`` when there is no Java to name.
    """
    java = java_binary()
    if java is None:
        return None
    try:
        spark = version("pyspark")
    except PackageNotFoundError:
        spark = "none"
    stat = java.stat()
    text = f"{java}\0{stat.st_size}\0{stat.st_mtime_ns}\0{spark}\0{spark_home}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class ClassArchive:
    """The archive of one job's classes at :attr:`path`, used or, the first time, dumped.

    Use :meth:`java_option` in the job's JVM options, then :meth:`finish` once the JVM ended.
    """

    path: Path
    pending: Path | None = field(default=None, init=False)
    option: str = field(default="", init=False)
    """What :meth:`java_option` last returned."""

    @classmethod
    def for_job(cls, cache: str, job: str, spark_home: Path | None = None) -> ClassArchive | None:
        """``<cache>/<job>-<runtime key>.jsa``; ``None`` when ``cache`` is empty (no archive).

        :param spark_home: the Spark home the job runs from (default: :func:`default_spark_home`).
        """
        key = runtime_key(spark_home or default_spark_home()) if cache else None
        return cls(Path(cache).expanduser() / f"{job}-{key}.jsa") if key else None

    def java_option(self, dump: bool = True) -> str:
        """The JVM option that maps the archive, or else dumps it when the JVM exits.

        :param dump: whether this JVM may dump a missing archive (one JVM of a run: its
            driver); without, a missing archive gives no option.
        """
        if self.path.is_file():
            self.option = f"-XX:SharedArchiveFile={self.path}"
        elif not dump:
            self.option = ""
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.pending = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
            self.option = f"-XX:ArchiveClassesAtExit={self.pending}"
        return self.option

    def finish(self, succeeded: bool) -> None:
        """Publish the archive the JVM dumped when its run ``succeeded``, else delete it."""
        if self.pending is None:
            return
        if succeeded and self.pending.is_file():
            self.pending.replace(self.path)
        else:
            self.pending.unlink(missing_ok=True)
        self.pending = None
