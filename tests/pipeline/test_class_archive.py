"""The class archive of a local job, with a real JVM: dumped by the first run, mapped later."""

from __future__ import annotations

import subprocess

from fruits_pipeline.class_archive import ClassArchive


def java(*options: str) -> str:
    """Run ``java <options> -version``; its output (the JVM's logs included)."""
    done = subprocess.run(
        ["java", *options, "-version"], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout + done.stderr


def test_the_first_run_dumps_the_archive_and_the_next_run_maps_it(tmp_path):
    archive = ClassArchive.for_job(str(tmp_path), "featurize")
    assert archive is not None and archive.path.parent == tmp_path
    option = archive.java_option()
    assert option.startswith("-XX:ArchiveClassesAtExit=")
    java(option)
    assert not archive.path.exists()  # published only once the run is known to have succeeded
    archive.finish(succeeded=True)
    assert [p.name for p in tmp_path.iterdir()] == [archive.path.name]

    again = ClassArchive.for_job(str(tmp_path), "featurize")
    assert again.path == archive.path
    assert again.java_option() == f"-XX:SharedArchiveFile={archive.path}"
    assert "Mapped dynamic region" in java(again.java_option(), "-Xlog:cds=info")
    again.finish(succeeded=True)  # nothing pending: the archive stays as it was
    assert archive.path.is_file()


def test_a_failed_run_leaves_no_archive_and_the_next_run_dumps_again(tmp_path):
    archive = ClassArchive.for_job(str(tmp_path), "pca")
    java(archive.java_option())
    assert len(list(tmp_path.iterdir())) == 1  # the JVM dumped to the run's own name
    archive.finish(succeeded=False)
    assert not any(tmp_path.iterdir())
    assert archive.java_option().startswith("-XX:ArchiveClassesAtExit=")


def test_a_foreign_file_in_its_place_is_ignored_by_the_jvm_not_fatal(tmp_path):
    archive = ClassArchive.for_job(str(tmp_path), "pca")
    archive.path.write_bytes(b"not a class archive")
    java(archive.java_option())  # check=True: the JVM runs on without it


def test_each_spark_home_has_its_own_archive(tmp_path):
    """The archive records the class path, ``<spark home>/jars/*``: another home cannot map it."""
    local = ClassArchive.for_job(str(tmp_path), "featurize")
    stand_in = ClassArchive.for_job(str(tmp_path), "featurize", tmp_path / "spark-home")
    assert local.path != stand_in.path and local.path.parent == stand_in.path.parent


def test_no_folder_means_no_archive():
    assert ClassArchive.for_job("", "featurize") is None
