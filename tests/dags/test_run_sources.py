"""Every way a run starts gives a batch id that is one safe path segment, or is refused."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from fruits_jobs import contract
from fruits_pipeline.config import Settings
from fruits_pipeline.runs import batch_from, resolve_run, run_params

QUEUED = datetime(2026, 11, 25, 21, 7, 37, 784107, tzinfo=timezone.utc)
SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@pytest.mark.parametrize(
    ("source", "params", "logical_date", "expected"),
    [
        (
            "schedule (@daily, the interval's start)",
            {},
            datetime(2026, 11, 24, tzinfo=timezone.utc),
            "2026-11-24",
        ),
        ("backfill", {}, datetime(2026, 3, 2, tzinfo=timezone.utc), "2026-03-02"),
        ("UI trigger, date left at now", {}, QUEUED, "2026-11-25"),
        ("REST / TriggerDagRunOperator, logical_date null", {}, None, "2026-11-25T210737"),
        ("asset event (no logical date)", {"batch_id": None}, None, "2026-11-25T210737"),
        ("form batch_id", {"batch_id": "spring-2026_v2"}, QUEUED, "spring-2026_v2"),
    ],
)
def test_each_run_source_gives_a_safe_batch_id(source, params, logical_date, expected):
    batch = batch_from(params, logical_date, QUEUED)
    assert batch == expected, source
    assert SAFE.fullmatch(batch) and ":" not in batch and "+" not in batch
    assert contract.validate_batch_id(batch) == batch


@pytest.mark.parametrize("bad", ["a/b", "../x", "manual__2026-11-25T21:07:37+00:00", ".hidden", ""])
def test_unsafe_batch_ids_are_refused_by_the_form_pattern_and_the_contract(bad):
    pattern = run_params(Settings())["batch_id"].schema["pattern"]
    assert not re.search(pattern, bad)
    if bad:
        with pytest.raises(ValueError, match="invalid batch id"):
            batch_from({"batch_id": bad}, None, QUEUED)


def test_image_source_day_placeholder_follows_the_run():
    params = {"image_source": "/landing/{ds}", "variance": 0.9}
    assert (
        resolve_run(params, datetime(2026, 11, 20, tzinfo=timezone.utc), QUEUED)["image_source"]
        == "/landing/2026-11-20"
    )
    assert resolve_run(params, None, QUEUED)["image_source"] == "/landing/2026-11-25"
