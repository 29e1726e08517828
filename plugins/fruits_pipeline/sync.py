"""Bring new or changed images from a source folder or landing prefix into the lake.

The landing area is filled by the mobile app: its keys and sizes are not ours to trust, and
its volume grows fast. For every file the source lists, :func:`sync`:

1. checks the key (:func:`fruits_pipeline.stores.check_key`: no ``..``, absolute, empty
   segment or control character) and its place in the layout the featurizer reads: images
   (the contract's extensions) as ``<Label>/<file>`` or Fruits-360's ``<split>/<Class>/<file>``,
   and the attribution files (``ATTRIBUTION*``, ``LICENSE*``, ``NOTICE*``) at the root;
2. refuses files over ``max_file_bytes``, hidden files and anything not a regular file;
3. compares the rest with the destination's listing, with no download (:func:`is_current`),
   and copies the new or changed ones (:class:`fruits_pipeline.transfers.Transfers`),
   ``concurrency`` at a time, streaming, logging progress every few seconds.

Whatever is refused is skipped, never fatal for the good files, and reported by key with
its reason in the result and the task log. A copy that fails (network, permissions) is
reported the same way under ``failed``; the caller decides whether that fails the run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.exceptions import RetriesExceededError

from fruits_jobs import contract
from fruits_pipeline.config import SYNC_CONCURRENCY, SYNC_MAX_FILE_BYTES
from fruits_pipeline.stores import Entry, LocalStore, S3Store, Store, UnsafeKeyError, check_key
from fruits_pipeline.transfers import Transfers, s3_etag

log = logging.getLogger(__name__)

MAX_REPORTED = 1000
"""Refused or failed keys listed by name in the result and the log; beyond, counted only
(a landing area of junk must not make an XCom or a log of unbounded size)."""
PROGRESS_EVERY_S = 5.0
"""How often a long sync logs its progress."""

REASON_UNSAFE = "unsafe key"
REASON_HIDDEN = "hidden file"
REASON_NOT_REGULAR = "not a regular file"
REASON_LAYOUT = "not <Label>/<file>, <split>/<Class>/<file> or a root attribution file"
REASON_EXTENSION = "not an image (" + ", ".join(contract.IMAGE_EXTENSIONS) + ")"
REASON_TOO_LARGE = "too large"


def refusal(entry: Entry, max_file_bytes: int) -> str | None:
    """Why ``entry`` must not be copied into the lake, or None when it may.

    >>> from fruits_pipeline.stores import Entry
    >>> refusal(Entry("Apple/a.JPG", 10, 0), 100) is None
    True
    >>> refusal(Entry("Apple/../../a.jpg", 10, 0), 100)
    "unsafe key: a '..' segment"
    >>> refusal(Entry("Apple/notes.txt", 10, 0), 100)
    'not an image (.jpg, .jpeg, .png)'
    """
    try:
        check_key(entry.key)
    except UnsafeKeyError as error:
        return f"{REASON_UNSAFE}: {error.reason}"
    problem = _kind_problem(entry)
    if problem is None and entry.size > max_file_bytes:
        problem = f"{REASON_TOO_LARGE}: {entry.size} bytes, the limit is {max_file_bytes}"
    return problem


def _kind_problem(entry: Entry) -> str | None:
    """Hidden, not a regular file, or not where the featurizer looks (checked key)."""
    segments = entry.key.split("/")
    name = segments[-1]
    if any(s.startswith(".") for s in segments):
        return REASON_HIDDEN
    if not entry.regular:
        return REASON_NOT_REGULAR
    if len(segments) == 1:
        return None if name.upper().startswith(contract.ATTRIBUTION_PREFIXES) else REASON_LAYOUT
    if len(segments) > 3:
        return REASON_LAYOUT
    return None if name.lower().endswith(contract.IMAGE_EXTENSIONS) else REASON_EXTENSION


def is_current(entry: Entry, held: Entry | None, source: Store, dest: Store) -> bool:
    """Whether ``dest`` already holds ``entry`` of ``source`` as ``held``, with no download.

    Same size, and then, by where the copy lives:

    * a folder: the same mtime, since every copy is given its source's
      (:meth:`fruits_pipeline.stores.LocalStore.staged`);
    * S3, from S3: a ``LastModified`` no older than the source's: both are S3's clock,
      and a copy is made only while the source has the listed ETag. This covers
      multipart ETags, which cannot be compared across two uploads' part sizes;
    * S3, from a folder: the ETag equals :func:`fruits_pipeline.transfers.s3_etag` of the
      local file.

    S3's times are whole seconds: an object replaced by another of the same size within
    the second it was copied is seen at its next change.
    """
    if held is None or held.size != entry.size:
        return False
    if isinstance(dest, LocalStore):
        return held.mtime_ns == entry.mtime_ns
    if isinstance(source, S3Store):
        return held.mtime_ns >= entry.mtime_ns
    assert isinstance(source, LocalStore)
    return held.etag == s3_etag(source.path(entry.key), entry.size)


@dataclass
class SyncResult:
    """What one sync did; :meth:`as_dict` of it is the task's XCom.

    ``refused`` and ``failed`` map keys to reasons (the first :data:`MAX_REPORTED` of each);
    ``refused_count``, ``refused_reasons`` and ``failed_count`` count them all.
    """

    copied: int = 0
    unchanged: int = 0
    bytes_copied: int = 0
    seconds: float = 0.0
    refused: dict[str, str] = field(default_factory=dict)
    refused_count: int = 0
    refused_reasons: Counter[str] = field(default_factory=Counter)
    failed: dict[str, str] = field(default_factory=dict)
    failed_count: int = 0

    def refuse(self, key: str, reason: str) -> None:
        """Count ``key`` as refused, and name it in the result and the log while room."""
        self.refused_count += 1
        self.refused_reasons[reason.partition(":")[0]] += 1
        if len(self.refused) < MAX_REPORTED:
            self.refused[key] = reason
            log.warning("refused %r: %s", key, reason)

    def fail(self, key: str, error: Exception) -> None:
        """Count ``key`` as failed (a copy that raised), with the error."""
        self.failed_count += 1
        if len(self.failed) < MAX_REPORTED:
            self.failed[key] = f"{type(error).__name__}: {error}"
        log.error("could not copy %r: %s", key, error)

    def as_dict(self) -> dict[str, Any]:
        """The result as a plain dict (XCom-serialisable)."""
        return {
            "copied": self.copied,
            "unchanged": self.unchanged,
            "bytes_copied": self.bytes_copied,
            "seconds": self.seconds,
            "refused": dict(self.refused),
            "refused_count": self.refused_count,
            "refused_reasons": dict(self.refused_reasons),
            "failed": dict(self.failed),
            "failed_count": self.failed_count,
        }


class _Progress:
    """Files and bytes done out of a plan, logged with rate and ETA every few seconds."""

    def __init__(self, files: int, size: int, every_s: float) -> None:
        self.files, self.size, self.every_s = files, size, every_s
        self.files_done = self.bytes_done = 0
        self.started = self.logged = time.monotonic()
        self._lock = threading.Lock()

    def add_bytes(self, count: int) -> None:
        with self._lock:
            self.bytes_done += count

    def maybe_log(self) -> None:
        now = time.monotonic()
        if now - self.logged < self.every_s:
            return
        self.logged = now
        rate = self.bytes_done / (now - self.started)
        eta = (self.size - self.bytes_done) / rate if rate else float("inf")
        log.info(
            "sync progress: %d/%d files, %.1f/%.1f MB, %.1f MB/s, ETA %.0f s",
            self.files_done,
            self.files,
            self.bytes_done / 1e6,
            self.size / 1e6,
            rate / 1e6,
            eta,
        )


def sync(
    source: Store,
    dest: Store,
    *,
    max_file_bytes: int = SYNC_MAX_FILE_BYTES,
    concurrency: int = SYNC_CONCURRENCY,
    progress_every_s: float = PROGRESS_EVERY_S,
) -> SyncResult:
    """Copy what belongs in the lake from ``source`` where ``dest`` lacks or differs from it.

    What is refused: see the module's docstring.

    Calls ``ListObjectsV2`` on each S3 side, then per file copied ``GetObject``,
    ``PutObject``, ``CopyObject`` or their multipart forms (see
    :class:`fruits_pipeline.transfers.Transfers`). An unchanged landing area costs its listings
    only. Keys are kept, so the label stays the parent folder.

    :param source: the landing folder or prefix.
    :param dest: the lake.
    :param max_file_bytes: larger files are refused (setting ``sync_max_file_bytes``).
    :param concurrency: files, and S3 requests, in flight at once (``sync_concurrency``).
    :param progress_every_s: seconds between progress lines in the log.
    """
    result = SyncResult()
    started = time.monotonic()
    partials = dest.discard_partials()
    if partials:
        log.info("removed %d partial files an interrupted sync left in %s", partials, dest.uri)
    held = {entry.key: entry for entry in dest.entries()}
    wanted = []
    for entry in source.listing():
        reason = refusal(entry, max_file_bytes)
        if reason is None:
            wanted.append(entry)
        else:
            result.refuse(entry.key, reason)
    progress = _Progress(len(wanted), sum(e.size for e in wanted), progress_every_s)
    log.info(
        "sync %s -> %s: %d files to compare (%.1f MB), %d refused",
        source.uri,
        dest.uri,
        len(wanted),
        progress.size / 1e6,
        result.refused_count,
    )

    with Transfers(source, dest, concurrency) as transfers:

        def copy_if_changed(entry: Entry) -> bool:
            if is_current(entry, held.get(entry.key), source, dest):
                progress.add_bytes(entry.size)
                return False
            transfers.copy(entry, progress.add_bytes)
            return True

        with ThreadPoolExecutor(concurrency, thread_name_prefix="sync") as pool:
            todo = iter(wanted)
            pending: dict[Future[bool], Entry] = {}
            while True:
                while len(pending) < 2 * concurrency and (entry := next(todo, None)):
                    pending[pool.submit(copy_if_changed, entry)] = entry
                if not pending:
                    break
                done, _ = wait(pending, timeout=progress_every_s, return_when=FIRST_COMPLETED)
                for future in done:
                    _account(result, pending.pop(future), future)
                    progress.files_done += 1
                progress.maybe_log()
    result.seconds = round(time.monotonic() - started, 3)
    _log_summary(source, dest, result)
    return result


def _account(result: SyncResult, entry: Entry, future: Future[bool]) -> None:
    """Count one finished file in ``result``: copied, unchanged, refused or failed."""
    try:
        copied = future.result()
    except UnsafeKeyError as error:  # the destination path resolved out of the lake
        result.refuse(entry.key, f"{REASON_UNSAFE}: {error.reason}")
    except (OSError, BotoCoreError, ClientError, RetriesExceededError) as error:
        result.fail(entry.key, error)
    else:
        result.copied += copied
        result.unchanged += not copied
        result.bytes_copied += entry.size if copied else 0


def _log_summary(source: Store, dest: Store, result: SyncResult) -> None:
    log.info(
        "sync %s -> %s: %d copied (%d bytes), %d unchanged, %d refused %s, %d failed, %.1f s",
        source.uri,
        dest.uri,
        result.copied,
        result.bytes_copied,
        result.unchanged,
        result.refused_count,
        dict(result.refused_reasons),
        result.failed_count,
        result.seconds,
    )
    if result.refused_count > len(result.refused):
        log.warning(
            "%d more refused keys not listed (the first %d are)",
            result.refused_count - len(result.refused),
            MAX_REPORTED,
        )


def lake_digest(lake: Store) -> str:
    """:func:`fruits_jobs.contract.lake_digest` of the images under ``lake``, from its listing."""
    return contract.lake_digest(
        (entry.key, entry.size, entry.mtime_ns // 1_000_000_000) for entry in lake.entries()
    )
