"""What the jobs share: the stopwatch of their reports' ``timings_s``."""

from __future__ import annotations

import doctest
from types import SimpleNamespace

from fruits_jobs import cli


def test_docstring_examples_hold():
    result = doctest.testmod(cli)
    assert result.attempted > 0 and result.failed == 0


def test_stopwatch_laps_run_from_the_previous_lap_and_total_from_the_start(monkeypatch):
    ticks = iter([10.0, 10.5, 12.2504, 13.0])
    monkeypatch.setattr(cli, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    clock = cli.Stopwatch()
    assert clock.lap("fit") == 0.5
    assert abs(clock.lap("write") - 1.7504) < 1e-9  # unrounded, for rates
    assert clock.timings() == {"fit": 0.5, "write": 1.75, "total": 3.0}
