"""The nodes' Python environment archive: its key, its wheels' check, and its upload.

The archive itself is built once per lock file by ``cluster_request`` (or the stand-in tests'
first run) and proven complete by the stand-in's steps, which run on it (``tests/local_emr``).
moto (``mock_aws``) stands in for S3 here.
"""

from __future__ import annotations

import doctest
import io
import subprocess
import tarfile
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from fruits_pipeline import node_env
from fruits_pipeline.config import LOCK_FILE, PROJECT_ROOT, Settings
from fruits_pipeline.emr_tasks import upload_node_env
from local_emr import nodes

REGION = "eu-west-1"


@pytest.mark.parametrize("module", [node_env, nodes])
def test_docstring_examples_hold(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_the_key_follows_the_lock_file_and_the_packages():
    lock = (PROJECT_ROOT / LOCK_FILE).read_bytes()
    key = node_env.env_key(lock)
    assert key == node_env.env_key(lock)
    assert key != node_env.env_key(lock + b"numpy==9.9\n")
    assert key != node_env.env_key(lock, node_env.PACKAGES[1:])


@pytest.mark.parametrize(
    "wheel",
    [
        "tensorflow_cpu-2.21.0-cp311-cp311-manylinux_2_27_x86_64.whl",
        "numpy-2.3.5-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "pyarrow-21.0.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        "boto3-1.40.0-py3-none-any.whl",
        "h5py-3.14.0-cp311-abi3-manylinux_2_34_x86_64.whl",
    ],
)
def test_wheels_for_the_nodes_are_accepted(tmp_path, wheel):
    (tmp_path / wheel).touch()
    assert node_env.check_wheels(tmp_path) == [tmp_path / wheel]


@pytest.mark.parametrize(
    ("wheel", "why"),
    [
        ("numpy-2.3.5-cp312-cp312-manylinux_2_17_x86_64.whl", "not for the nodes' CPython 3.11"),
        ("numpy-2.3.5-cp311-cp311-manylinux_2_39_x86_64.whl", "manylinux_2_34_x86_64"),
        ("numpy-2.3.5-cp311-cp311-macosx_14_0_arm64.whl", "macosx_14_0_arm64"),
        ("numpy-2.3.5-cp311-cp311-manylinux_2_17_aarch64.whl", "manylinux_2_17_aarch64"),
        ("pillow-11.0.0.tar.gz", "not a wheel"),
    ],
)
def test_a_wheel_the_nodes_cannot_install_is_refused_by_name(tmp_path, wheel, why):
    (tmp_path / "boto3-1.40.0-py3-none-any.whl").touch()
    (tmp_path / wheel).touch()
    with pytest.raises(node_env.WheelError, match=why) as refused:
        node_env.check_wheels(tmp_path)
    assert str(refused.value).startswith(f"{wheel}: ")


def test_the_archive_is_sent_once_per_lock_file(tmp_path, monkeypatch):
    """The archive goes up when the bucket lacks its key, from the local cache (here a
    small file under the right name: the build is not what this test is about)."""
    key = node_env.env_key((PROJECT_ROOT / LOCK_FILE).read_bytes())
    (tmp_path / f"{key}.tar.gz").write_bytes(b"archive bytes")
    monkeypatch.setattr(node_env, "build", lambda *a, **k: pytest.fail("built again"))
    settings = Settings(bucket="lake", region=REGION, node_envs=str(tmp_path))
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": REGION})
        uri = upload_node_env(settings, s3)
        assert uri == f"s3://lake/code/node-env/{key}.tar.gz"
        body = s3.get_object(Bucket="lake", Key=f"code/node-env/{key}.tar.gz")["Body"].read()
        assert body == b"archive bytes"
        (tmp_path / f"{key}.tar.gz").unlink()  # a second run needs neither the file nor a build
        assert upload_node_env(settings, s3) == uri


def test_the_stand_in_makes_a_node_environment_once_and_refuses_a_bad_archive(tmp_path):
    """What the stand-in's nodes do with the archive (``local_emr.nodes``), on moto's S3."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.addfile(tarfile.TarInfo("fruitprobe/__init__.py"), io.BytesIO(b""))
    envs = nodes.NodeEnvs(tmp_path / "unpacked")
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_object(Bucket="lake", Key="env/good.tar.gz", Body=archive.getvalue())
        s3.put_object(Bucket="lake", Key="env/bad.tar.gz", Body=b"not a tar")
        python = envs.python(s3, "s3://lake/env/good.tar.gz")
        assert envs.python(s3, "s3://lake/env/good.tar.gz") == python  # unpacked once
        with pytest.raises(nodes.NodeBootstrapError, match=r"s3://lake/env/bad\.tar\.gz: "):
            envs.python(s3, "s3://lake/env/bad.tar.gz")
        with pytest.raises(nodes.NodeBootstrapError, match=r"s3://lake/env/gone\.tar\.gz: 404"):
            envs.python(s3, "s3://lake/env/gone.tar.gz")
    probe = subprocess.run(
        [python, "-c", "import fruitprobe, sys; print(sys.prefix, 'boto3' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.split() == [str(Path(python).parents[1]), "False"]
    assert sorted(p.name for p in (tmp_path / "unpacked").iterdir()) == [
        ".lock",
        Path(python).parents[1].name,
    ]
