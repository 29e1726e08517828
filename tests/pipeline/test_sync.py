"""Sync from an untrusted landing area: real photos, hostile keys, S3 through moto (in-process,
or moto's server for a sync run in another process and killed mid-copy)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import boto3
import numpy as np
import pytest
from boto3.s3.transfer import TransferConfig
from PIL import Image

from fruits_jobs import contract
from fruits_pipeline.config import Settings
from fruits_pipeline.stores import PARTIAL_SUFFIX, LocalStore, S3Store, open_store
from fruits_pipeline.sync import REASON_TOO_LARGE, sync
from fruits_pipeline.transfers import MULTIPART_BYTES, s3_etag
from tests.conftest import FRUITS360, GROCERY, copy_images, sample_images
from tests.pipeline.conftest import REGION


def make_bucket(client, name: str = "lake") -> None:
    client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})


def put_files(client, prefix: str, files: dict[str, bytes], bucket: str = "lake") -> None:
    for key, data in files.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=data)


def photos(count: int) -> dict[str, bytes]:
    """``count`` real photos as ``<Label>/<file>`` keys, from several labels."""
    return {f"{p.parent.name}/{p.name}": p.read_bytes() for p in sample_images(GROCERY, 3)[:count]}


def noise_jpeg(side: int) -> bytes:
    """A real JPEG of seeded noise (barely compressible: big for its side)."""
    pixels = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=100)
    return buffer.getvalue()


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def lake_objects(client, prefix: str = "raw/images/") -> dict[str, bytes]:
    listed = client.list_objects_v2(Bucket="lake", Prefix=prefix).get("Contents", [])
    return {
        o["Key"][len(prefix) :]: client.get_object(Bucket="lake", Key=o["Key"])["Body"].read()
        for o in listed
    }


def count_calls(client) -> Counter:
    """Every S3 operation ``client`` sends from now on, by name (a botocore event hook)."""
    calls: Counter = Counter()
    client.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
    return calls


# --- hostile keys ---
def hostile_keys(lake: Path) -> dict[str, str]:
    """Landing keys (relative to the landing prefix) and the reason each must be refused for."""
    return {
        "Apple/../../../escaped.jpg": "unsafe key: a '..' segment",
        "../escaped.jpg": "unsafe key: a '..' segment",
        f"../{lake.name}-evil/Apple/a.jpg": "unsafe key: a '..' segment",
        "Apple/..": "unsafe key: a '..' segment",
        "Apple/./a.jpg": "unsafe key: a '.' segment",
        "Apple//a.jpg": "unsafe key: an empty segment",
        f"{lake}-evil/Apple/a.jpg": "unsafe key: absolute",  # the lake's path, one dash on
        "/etc/cron.d/fruits.jpg": "unsafe key: absolute",
        "Apple/a\nFAKE LOG LINE.jpg": "unsafe key: a control character",
        "Apple/\x1b[2Jclear.jpg": "unsafe key: a control character",
        "Apple/nul\x00.jpg": "unsafe key: a control character",
        "Apple\\..\\..\\x.jpg": "unsafe key: a backslash",
        "Apple/": "unsafe key: ends with '/' (a folder marker, not a file)",
        ".DS_Store": "hidden file",
        "Apple/.hidden.jpg": "hidden file",
        "MANIFEST.csv": "not <Label>/<file>, <split>/<Class>/<file> or a root attribution file",
        "Apple/deeper/still/a.jpg": (
            "not <Label>/<file>, <split>/<Class>/<file> or a root attribution file"
        ),
        "Apple/notes.txt": "not an image (.jpg, .jpeg, .png)",
    }


def good_landing() -> dict[str, bytes]:
    """Photos as ``<Label>/<file>`` and ``Training/<Class>/<file>``, and the attribution."""
    (cherry,) = sample_images(FRUITS360 / "Training", 1)[:1]
    return {
        **photos(4),
        f"Training/{cherry.parent.name}/{cherry.name}": cherry.read_bytes(),
        "ATTRIBUTION.md": (GROCERY / "ATTRIBUTION.md").read_bytes(),
    }


@pytest.mark.parametrize("dest", ["folder", "s3"])
def test_hostile_keys_are_refused_and_reported_and_the_good_photos_synced(
    tmp_path, s3, caplog, dest
):
    lake_dir = tmp_path / "local" / "lake"
    hostile = hostile_keys(lake_dir)
    good = good_landing()
    put_files(s3, "landing", {**good, **dict.fromkeys(hostile, b"\xff\xd8 payload")})
    lake = LocalStore(lake_dir) if dest == "folder" else S3Store(s3, "lake", "raw/images")
    before = files_under(tmp_path)

    result = sync(S3Store(s3, "lake", "landing"), lake, concurrency=4)

    assert result.refused == hostile and result.refused_count == len(hostile)
    assert (result.copied, result.failed) == (len(good), {})
    synced = files_under(lake_dir) if dest == "folder" else lake_objects(s3)
    assert synced == good
    written = set(files_under(tmp_path)) - set(before)
    objects = {o["Key"] for o in s3.list_objects_v2(Bucket="lake")["Contents"]}
    written |= {k for k in objects if not k.startswith("landing/")}
    into = "local/lake/" if dest == "folder" else "raw/images/"
    assert written == {into + key for key in good}
    assert "refused 'Apple/a\\nFAKE LOG LINE.jpg': unsafe key: a control character" in caplog.text
    assert not any("\n" in record.getMessage() for record in caplog.records)


def test_a_symlink_in_the_lake_pointing_out_is_not_followed(tmp_path, s3):
    outside = tmp_path / "lake-evil"  # its path starts with the lake's: compared as paths
    outside.mkdir()
    (tmp_path / "lake").mkdir()
    (tmp_path / "lake" / "Apple").symlink_to(outside)
    put_files(s3, "landing", {"Apple/a.jpg": b"\xff\xd8 photo", "Pear/b.jpg": b"\xff\xd8 pear"})
    result = sync(S3Store(s3, "lake", "landing"), LocalStore(tmp_path / "lake"))
    assert result.refused == {
        "Apple/a.jpg": f"unsafe key: resolves to {outside / 'a.jpg'}, outside {tmp_path / 'lake'}"
    }
    assert result.copied == 1 and not list(outside.iterdir())


def test_good_photos_beside_hostile_keys_are_featurized(tmp_path, s3, spark, weights_file):
    from tests.spark_jobs.test_featurize import featurize, read_report

    good = good_landing()
    put_files(s3, "landing", {**good, **dict.fromkeys(hostile_keys(tmp_path / "lake"), b"x")})
    lake = tmp_path / "lake"
    sync(S3Store(s3, "lake", "landing"), LocalStore(lake))
    assert featurize(lake, tmp_path / "out", weights_file, "b1") == 0
    report = read_report(tmp_path / "out", "b1")
    images = len(good) - 1  # the attribution travels beside them
    assert (report["input"], report["featurized"]) == (images, images)
    assert report["attribution"] == [contract.attribution_key("b1", "ATTRIBUTION.md")]


# --- bounded by size ---
def test_an_object_over_the_size_cap_is_refused_and_the_rest_copied(tmp_path, s3):
    good = photos(3)
    limit = max(len(data) for data in good.values())
    big_key = next(iter(good)).rpartition("/")[0] + "/huge.jpg"
    put_files(s3, "landing", {**good, big_key: noise_jpeg(400)})
    result = sync(S3Store(s3, "lake", "landing"), LocalStore(tmp_path), max_file_bytes=limit)
    size = s3.head_object(Bucket="lake", Key=f"landing/{big_key}")["ContentLength"]
    assert result.refused == {big_key: f"{REASON_TOO_LARGE}: {size} bytes, the limit is {limit}"}
    assert files_under(tmp_path) == good


# --- unchanged means listing only ---
@pytest.fixture
def big_photo() -> bytes:
    """A real JPEG over the multipart threshold."""
    data = noise_jpeg(2600)
    assert len(data) > MULTIPART_BYTES
    return data


def put_multipart(client, key: str, data: bytes) -> None:
    """Upload as the mobile app might: one-part multipart upload (ETag ``...-1``)."""
    config = TransferConfig(multipart_threshold=1, multipart_chunksize=max(len(data), 5 << 20))
    client.upload_fileobj(io.BytesIO(data), "lake", key, Config=config)


@pytest.mark.parametrize("dest", ["folder", "s3"])
def test_an_unchanged_landing_is_not_downloaded_again_multipart_etags_included(
    tmp_path, s3, big_photo, dest
):
    landing = photos(5)
    first = next(iter(landing))
    label = first.rpartition("/")[0]
    put_files(s3, "landing", landing)
    put_multipart(s3, f"landing/{label}/multipart.jpg", landing[first])
    put_files(s3, "landing", {f"{label}/big.jpg": big_photo})
    source = S3Store(s3, "lake", "landing")
    lake = LocalStore(tmp_path / "lake") if dest == "folder" else S3Store(s3, "lake", "raw/images")
    assert sync(source, lake).copied == 7

    calls = count_calls(s3)
    again = sync(source, lake)
    assert (again.copied, again.unchanged) == (0, 7)
    assert set(calls) == {"ListObjectsV2"}, calls

    time.sleep(1.05 - time.time() % 1)  # LastModified counts whole seconds
    changed = landing[first][::-1]  # same size, other content
    put_files(s3, "landing", {first: changed})
    assert sync(source, lake).copied == 1
    synced = files_under(tmp_path / "lake") if dest == "folder" else lake_objects(s3)
    assert synced[first] == changed


def test_folder_to_s3_compares_etags_without_downloading(tmp_path, s3, big_photo):
    source = tmp_path / "landing"
    copy_images(sample_images(GROCERY, 2)[:4], source)
    (source / "Big").mkdir()
    (source / "Big" / "big.jpg").write_bytes(big_photo)
    lake = open_store("s3://lake/raw/images", s3)
    assert sync(LocalStore(source), lake).copied == 5
    etag = s3.head_object(Bucket="lake", Key="raw/images/Big/big.jpg")["ETag"].strip('"')
    assert etag.endswith("-2") and etag == s3_etag(source / "Big/big.jpg", len(big_photo))

    calls = count_calls(s3)
    again = sync(LocalStore(source), lake)
    assert (again.copied, again.unchanged, set(calls)) == (0, 5, {"ListObjectsV2"})
    changed = sorted(p for p in source.glob("*/*.jpg") if p.name != "big.jpg")[0]
    changed.write_bytes(changed.read_bytes()[::-1])
    assert sync(LocalStore(source), lake).copied == 1
    assert lake_objects(s3)[changed.relative_to(source).as_posix()] == changed.read_bytes()


def test_folder_to_folder_copies_new_and_changed_files_only(tmp_path, caplog):
    source = tmp_path / "landing"
    copy_images(sample_images(GROCERY, 3)[:6], source)
    lake = LocalStore(tmp_path / "lake")
    caplog.set_level(logging.INFO, logger="fruits_pipeline.sync")
    first = sync(LocalStore(source), lake, concurrency=2, progress_every_s=0.001)
    assert (first.copied, first.unchanged) == (6, 0)
    assert re.search(r"sync progress: \d/6 files, [\d.]+/[\d.]+ MB, [\d.]+ MB/s, ETA", caplog.text)
    again = sync(LocalStore(source), lake)
    assert (again.copied, again.unchanged) == (0, 6)
    changed = sorted(source.glob("*/*.jpg"))[0]
    changed.write_bytes(changed.read_bytes()[::-1])  # same size, other content
    assert sync(LocalStore(source), lake).copied == 1
    assert files_under(tmp_path / "lake") == files_under(source)


def test_fruits360_layout_and_attribution_travel_to_s3_and_back(tmp_path, s3):
    source = tmp_path / "fruits360"
    copy_images(sample_images(FRUITS360 / "Training", 2)[:2], source / "Training")
    for name in ("ATTRIBUTION.md", "LICENSE", "MANIFEST.csv"):
        if (FRUITS360 / name).exists():
            shutil.copy(FRUITS360 / name, source)
    lake = open_store("s3://lake/raw/images", s3)
    result = sync(LocalStore(source), lake)
    expected = {k: v for k, v in files_under(source).items() if k != "MANIFEST.csv"}
    assert lake_objects(s3) == expected and result.copied == len(expected)
    assert set(result.refused) == {"MANIFEST.csv"} & set(files_under(source))
    back = tmp_path / "back"
    assert sync(lake, LocalStore(back)).copied == len(expected)
    assert files_under(back) == expected


# --- killed mid-copy ---
CHILD = """
import sys, time
from pathlib import Path
import boto3
from fruits_pipeline.stores import LocalStore, S3Store
from fruits_pipeline.sync import sync

class SlowBody:  # a slow network: every read of an object's body waits first
    def __init__(self, body):
        self.body = body
    def read(self, *args):
        time.sleep(0.2)
        return self.body.read(*args)
    def __getattr__(self, name):
        return getattr(self.body, name)

def slow(parsed, **_):
    parsed["Body"] = SlowBody(parsed["Body"])

client = boto3.client("s3", endpoint_url=sys.argv[1], region_name="eu-west-1")
client.meta.events.register("after-call.s3.GetObject", slow)
sync(S3Store(client, "lake", "landing"), LocalStore(Path(sys.argv[2])), concurrency=2)
"""


def copying(folder: Path, name: str, size: int) -> list[Path]:
    """The files in ``folder`` named after ``name`` that hold part of its ``size`` bytes."""
    found = []
    for path in folder.glob(f"*{name}*"):
        with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
            if 0 < path.stat().st_size < size:
                found.append(path)
    return found


def test_a_sync_killed_mid_copy_leaves_no_partial_image_and_a_rerun_completes(
    tmp_path, moto_server
):
    client = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    make_bucket(client)
    landing = photos(12)
    label = next(iter(landing)).rpartition("/")[0]
    big = f"{label}/0-big.jpg"
    landing[big] = noise_jpeg(1000)  # listed first, about 1 s to copy at 0.2 s a read
    put_files(client, "landing", landing)
    lake = tmp_path / "lake"
    child = subprocess.Popen([sys.executable, "-c", CHILD, moto_server, str(lake)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            done = [p for p in lake.rglob("*.jpg") if p.name[0] != "." and p.name != "0-big.jpg"]
            if done and copying(lake / label, "0-big.jpg", len(landing[big])):
                os.kill(child.pid, signal.SIGKILL)  # the big file half copied, others done
                break
            time.sleep(0.01)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, "the sync ended before it could be killed"
    (partial,) = copying(lake / label, "0-big.jpg", len(landing[big]))
    assert partial.name.startswith(".0-big.jpg.") and partial.name.endswith(PARTIAL_SUFFIX)
    left = {k: v for k, v in files_under(lake).items() if not k.rpartition("/")[2].startswith(".")}
    assert left and all(landing[key] == data for key, data in left.items())  # whole or absent

    rerun = sync(S3Store(client, "lake", "landing"), LocalStore(lake))
    assert (rerun.copied, rerun.unchanged) == (len(landing) - len(left), len(left))
    assert files_under(lake) == landing  # the partial file is gone too


def test_sync_settings_come_from_the_environment_and_are_checked():
    settings = Settings.from_env(
        {"FRUITS_SYNC_MAX_FILE_BYTES": "1000", "FRUITS_SYNC_CONCURRENCY": "3"}
    )
    assert (settings.sync_max_file_bytes, settings.sync_concurrency) == (1000, 3)
    with pytest.raises(ValueError, match=r"sync_concurrency \(0\) must be >= 1"):
        Settings(sync_concurrency=0)
