"""Bring new or changed images from a source folder or landing prefix into the lake."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from fruits_pipeline.stores import Entry, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncResult:
    """What one sync did; ``asdict`` of it is the task's XCom."""

    uploaded: int
    skipped: int
    bytes_uploaded: int
    seconds: float

    def as_dict(self) -> dict[str, float]:
        """The result as a plain dict (XCom-serialisable)."""
        return asdict(self)


def content_md5(store: Store, entry: Entry) -> str:
    """The MD5 the listing gave (S3 ETag), else the store computes it."""
    return entry.md5 or store.md5(entry.key)


def sync(source: Store, dest: Store) -> SyncResult:
    """Copy every file of ``source`` that ``dest`` lacks or holds with other content.

    Unchanged means same size and same MD5 (the ETag on S3, for single-part uploads).

    Keys (``<Label>/<file>``, or Fruits-360's ``Training/<Class>/<file>``) are kept, so the
    label stays the parent folder; attribution files beside the images travel with them.
    """
    started = time.perf_counter()
    existing = {entry.key: entry for entry in dest.entries()}
    uploaded = skipped = sent = 0
    for entry in source.entries():
        old = existing.get(entry.key)
        if (
            old is not None
            and old.size == entry.size
            and content_md5(dest, old) == content_md5(source, entry)
        ):
            skipped += 1
            continue
        dest.write(entry.key, source.read(entry.key))
        uploaded += 1
        sent += entry.size
        if uploaded % 500 == 0:
            log.info("synced %d files (%d MB) so far", uploaded, sent >> 20)
    result = SyncResult(uploaded, skipped, sent, round(time.perf_counter() - started, 3))
    log.info(
        "sync %s -> %s: %d uploaded (%d bytes), %d unchanged, %.1f s",
        source.uri,
        dest.uri,
        uploaded,
        sent,
        skipped,
        result.seconds,
    )
    return result
