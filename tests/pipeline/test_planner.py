"""The cost and scale planner: its arithmetic, its recommendation, its command line."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys

import pytest

from fruits_pipeline import planner
from fruits_pipeline.config import Settings
from tests.conftest import ROOT


def plan_cli(*args: str, **settings: str) -> str:
    """``python -m fruits_pipeline.planner ARGS`` with only ``settings`` as FRUITS_ settings."""
    env = {k: v for k, v in os.environ.items() if "FRUITS_" not in k}
    env.update({f"FRUITS_{name.upper()}": value for name, value in settings.items()})
    return subprocess.run(
        [sys.executable, "-m", "fruits_pipeline.planner", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    ).stdout


def test_docstring_examples_hold():
    result = doctest.testmod(planner)
    assert result.attempted > 0 and result.failed == 0


def test_parts_are_fixed_costs_plus_images_over_the_executor_vcpus():
    plan = planner.estimate(Settings(), images=67_692)
    workers = 2 * 4 - 1  # two m5.xlarge core nodes, one vCPU for the driver
    assert plan.worker_vcpus == workers and plan.nodes == 3
    assert (plan.start_s, plan.bootstrap_s) == (planner.CLUSTER_START_S, planner.BOOTSTRAP_S)
    assert plan.featurize_s == pytest.approx(
        planner.STEP_START_S + 67_692 / (planner.FEATURIZE_IMAGES_PER_VCPU_S * workers)
    )
    assert plan.pca_s == pytest.approx(
        planner.STEP_START_S + 67_692 / (planner.PCA_ROWS_PER_VCPU_S * workers)
    )
    assert plan.total_s == pytest.approx(
        plan.start_s + plan.bootstrap_s + plan.featurize_s + plan.pca_s
    )


def test_cost_is_the_hours_times_the_clusters_hourly_price_on_demand_and_spot():
    settings = Settings()
    plan = planner.estimate(settings, images=1_000_000, pca_rows=2_000_000)
    hours = plan.total_s / 3600
    assert plan.eur == pytest.approx(settings.cluster_eur_per_hour(spot=False) * hours, abs=0.01)
    assert plan.spot_eur == pytest.approx(
        settings.cluster_eur_per_hour(spot=True) * hours, abs=0.01
    )
    assert plan.spot_eur < plan.eur
    assert plan.cost(spot=True) == plan.spot_eur and plan.cost(spot=False) == plan.eur
    assert plan.pca_rows == 2_000_000
    assert "1000000 images on 7 vCPUs" in plan.parts() and "(2000000 rows)" in plan.parts()


def test_more_core_nodes_shorten_the_steps_not_the_fixed_start():
    settings = Settings()
    two, eight = (planner.estimate(settings, 500_000, core_nodes=n) for n in (2, 8))
    assert eight.worker_vcpus == 31 and eight.nodes == 9
    assert eight.start_s + eight.bootstrap_s == two.start_s + two.bootstrap_s
    steps_two = two.featurize_s - planner.STEP_START_S
    steps_eight = eight.featurize_s - planner.STEP_START_S
    assert steps_two / steps_eight == pytest.approx(31 / 7)
    assert eight.eur_per_hour == pytest.approx(
        Settings(core_instance_count=8).cluster_eur_per_hour()
    )


def test_larger_instances_bring_more_vcpus():
    plan = planner.estimate(Settings(core_instance_type="m5.2xlarge"), 10_000)
    assert plan.worker_vcpus == 2 * 8 - 1 and plan.instance_type == "m5.2xlarge"


def test_recommendation_is_the_fewest_core_nodes_meeting_the_target():
    settings = Settings()
    best = planner.recommend_core_nodes(settings, 1_000_000, target_s=30 * 60)
    assert best is not None and best.total_s <= 30 * 60
    fewer = planner.estimate(settings, 1_000_000, core_nodes=best.nodes - 2)
    assert fewer.total_s > 30 * 60
    fixed = planner.CLUSTER_START_S + planner.BOOTSTRAP_S
    assert planner.recommend_core_nodes(settings, 1_000, target_s=fixed) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": -1}, "need images"),
        ({"images": 1, "core_nodes": 0}, "need images"),
    ],
)
def test_bad_counts_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        planner.estimate(Settings(), **kwargs)


def test_unknown_instance_size_is_named():
    with pytest.raises(ValueError, match=r"'m5\.metal': unknown size 'metal'"):
        planner.vcpus("m5.metal")


def test_command_line_prints_the_estimate_and_a_recommendation():
    out = plan_cli("--images", "67692", "--target-minutes", "20", core_instance_count="3")
    plan = planner.estimate(Settings(core_instance_count=3), 67_692)
    best = planner.recommend_core_nodes(Settings(), 67_692, 20 * 60)
    assert best is not None
    lines = out.splitlines()
    assert lines[0] == plan.parts()
    assert lines[1].startswith(f"EUR {plan.eur:.2f} on-demand")
    # "core node" or "core nodes", by the count
    assert lines[2].startswith(f"for 20 min: {best.nodes - 1} core node")


def test_command_line_prints_a_table_for_several_counts():
    out = plan_cli("--images", "1000", "100000")
    assert out.strip() == planner.table(Settings(), [1000, 100_000])
    assert "| 100,000 |" in out
