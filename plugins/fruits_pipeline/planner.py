"""Cost and duration of one EMR run, from the number of images and the cluster settings.

:func:`estimate` adds up what a run of the ``fruits_emr`` DAG keeps a cluster up for:

1. **start**: EMR provisions the instances and installs its applications (``STARTING``);
2. **bootstrap**: every node unpacks the jobs' Python environment (``BOOTSTRAPPING``);
3. **featurize**: one step, a fixed start-up then the images at a per-vCPU rate over the
   core nodes' vCPUs (the driver, in cluster mode, takes one of them);
4. **PCA**: one step, a fixed start-up then the feature rows at a per-vCPU rate;

then prices those hours with the cluster's hourly cost (:meth:`Settings.cluster_eur_per_hour`:
EC2, EMR, public IPv4, EBS), on-demand and with spot core nodes. The ``cost_check`` task of
the EMR DAG refuses a run whose estimate exceeds ``max_cost_eur``; ``make plan IMAGES=N``
prints the same estimate and the core-node count that meets a target duration.

Every rate below is a named constant saying where it was measured; none is tuned to fit.

>>> plan = estimate(Settings(), images=0)
>>> plan.featurize_s == STEP_START_S and plan.total_s > CLUSTER_START_S
True
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass

from fruits_pipeline.config import Settings

CLUSTER_START_S = 600.0
"""``STARTING`` until the cluster runs its first step, bootstrap actions aside: 10 min. Quoted,
not measured here (no AWS account): "clusters take roughly 10-15 minutes to reach WAITING"
(alchemy.run, AWS EMR Cluster provider page); the lower end, since the bootstrap is counted
apart. The first real run replaces it with its own ``DescribeCluster`` timeline."""
BOOTSTRAP_S = 31.0
"""The bootstrap action, ``spark_jobs/bootstrap/install_python_deps.sh``, on each node at once:
the venv, the node environment archive's download (446 MB), unpack and import check took
20.9 s on this project's 2-vCPU build machine (``make bench-bootstrap``, 2026-12-06, the
archive served by a moto server on loopback), plus a 10 s allowance, not measured, for
``dnf install python3.11`` from Amazon Linux's repository. It replaced a ``pip install`` from
PyPI that took 222 s, then its import check 37 s (2026-11-25)."""
STEP_START_S = 15.0
"""Fixed cost of one Spark step: JVM and session, Python workers importing TensorFlow and
building the net, Parquet writes, shutdown. ``make bench`` (2026-12-08): the whole
``spark-submit`` took 27.6 s for 2,240 photos that a warm session featurized in 17.4 s, so
10.2 s, with the job's JVM class archive mapped; EMR's YARN containers map none, which
``make bench-startup`` puts at 5.1 s more (96 photos: 14.2 s against 9.1 s). It was 21 s
before the folded net and the class archives (README, Benchmarks)."""
FEATURIZE_IMAGES_PER_VCPU_S = 128.4 / 2
"""Featurize throughput per vCPU, warm: 128.4 images/s on ``local[2]`` (2 vCPUs, AMD EPYC, one
thread per core), ``make bench`` row (c), 2026-12-08 (89.5 before the folded net of 256342a),
README's Benchmarks table."""
PCA_ROWS_PER_VCPU_S = 100_000 / 57 / 2
"""PCA throughput per vCPU: read + covariance + eigendecomposition + projection of 100,000 x
1280 features in 57 s on ``local[2]`` (``make bench``, ``benchmarks/bench_pca.py``,
``--variance 0.9``; README, Benchmarks)."""
DRIVER_VCPUS = 1
"""vCPUs the Spark driver takes on a core node in ``--deploy-mode cluster`` (spark.driver.cores)."""
VCPUS_BY_SIZE = {"xlarge": 4, "2xlarge": 8, "4xlarge": 16}
"""vCPUs of an m5/m6i/c5/c6i/r5 instance by size (Amazon EC2 instance types: general purpose,
compute and memory optimized)."""
MAX_CORE_NODES = 64
"""The largest core-node count :func:`recommend_core_nodes` considers."""


def vcpus(instance_type: str) -> int:
    """The vCPUs of ``instance_type`` (``m5.xlarge`` -> 4).

    :raises ValueError: the size is not in :data:`VCPUS_BY_SIZE`.
    """
    size = instance_type.rsplit(".", maxsplit=1)[-1]
    if size not in VCPUS_BY_SIZE:
        raise ValueError(
            f"instance type {instance_type!r}: unknown size {size!r}; known: "
            f"{', '.join(VCPUS_BY_SIZE)}"
        )
    return VCPUS_BY_SIZE[size]


@dataclass(frozen=True)
class Plan:
    """One run's estimate: its parts in seconds and its price per hour, on-demand and spot."""

    images: int
    pca_rows: int
    nodes: int
    instance_type: str
    worker_vcpus: int
    start_s: float
    bootstrap_s: float
    featurize_s: float
    pca_s: float
    eur_per_hour: float
    spot_eur_per_hour: float

    @property
    def total_s(self) -> float:
        """Seconds the cluster is up: start, bootstrap and both steps."""
        return self.start_s + self.bootstrap_s + self.featurize_s + self.pca_s

    @property
    def eur(self) -> float:
        """The run's cost with every node on-demand."""
        return round(self.eur_per_hour * self.total_s / 3600, 2)

    @property
    def spot_eur(self) -> float:
        """The run's cost with the core nodes on spot (the master stays on-demand)."""
        return round(self.spot_eur_per_hour * self.total_s / 3600, 2)

    def cost(self, spot: bool) -> float:
        """:attr:`spot_eur` or :attr:`eur`."""
        return self.spot_eur if spot else self.eur

    def parts(self) -> str:
        """Where the time goes, in minutes: ``start 10.0 + bootstrap 2.5 + ...``."""
        return (
            f"start {self.start_s / 60:.1f} + bootstrap {self.bootstrap_s / 60:.1f} + "
            f"featurize {self.featurize_s / 60:.1f} ({self.images} images on "
            f"{self.worker_vcpus} vCPUs) + PCA {self.pca_s / 60:.1f} ({self.pca_rows} rows) "
            f"= {self.total_s / 60:.1f} min on {self.nodes} x {self.instance_type}"
        )


def estimate(
    settings: Settings,
    images: int,
    pca_rows: int | None = None,
    core_nodes: int | None = None,
) -> Plan:
    """Estimate a run that featurizes ``images`` and fits the PCA on ``pca_rows`` features.

    :param settings: instance types, core-node count and volumes (prices: ``config``).
    :param images: images the featurize step processes (new ones, after ``sync_images``).
    :param pca_rows: feature rows the PCA refits on; default ``images``.
    :param core_nodes: override ``settings.core_instance_count``.
    :raises ValueError: a negative count, or no vCPU left for executors.
    """
    pca_rows = images if pca_rows is None else pca_rows
    nodes = settings.core_instance_count if core_nodes is None else core_nodes
    if images < 0 or pca_rows < 0 or nodes < 1:
        raise ValueError(
            f"need images, pca_rows >= 0 and core nodes >= 1: {images, pca_rows, nodes}"
        )
    workers = nodes * vcpus(settings.core_instance_type) - DRIVER_VCPUS
    if workers < 1:
        raise ValueError(f"{nodes} x {settings.core_instance_type} leaves no vCPU for executors")
    sized = dataclasses.replace(settings, core_instance_count=nodes)
    return Plan(
        images=images,
        pca_rows=pca_rows,
        nodes=nodes + 1,
        instance_type=settings.core_instance_type,
        worker_vcpus=workers,
        start_s=CLUSTER_START_S,
        bootstrap_s=BOOTSTRAP_S,
        featurize_s=STEP_START_S + images / (FEATURIZE_IMAGES_PER_VCPU_S * workers),
        pca_s=STEP_START_S + pca_rows / (PCA_ROWS_PER_VCPU_S * workers),
        eur_per_hour=sized.cluster_eur_per_hour(spot=False),
        spot_eur_per_hour=sized.cluster_eur_per_hour(spot=True),
    )


def recommend_core_nodes(
    settings: Settings, images: int, target_s: float, pca_rows: int | None = None
) -> Plan | None:
    """The plan with the fewest core nodes whose run takes at most ``target_s`` seconds.

    None when even :data:`MAX_CORE_NODES` nodes cannot: the fixed start and bootstrap times
    alone may exceed the target.
    """
    for nodes in range(1, MAX_CORE_NODES + 1):
        try:
            plan = estimate(settings, images, pca_rows, core_nodes=nodes)
        except ValueError:
            continue
        if plan.total_s <= target_s:
            return plan
    return None


def table(settings: Settings, counts: list[int]) -> str:
    """A Markdown table of :func:`estimate` for each image count (the README's cost table)."""
    lines = [
        "| images | start + bootstrap | featurize | PCA | total | EUR on-demand | EUR spot |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for count in counts:
        plan = estimate(settings, count)
        lines.append(
            f"| {count:,} | {(plan.start_s + plan.bootstrap_s) / 60:.1f} min | "
            f"{plan.featurize_s / 60:.1f} min | {plan.pca_s / 60:.1f} min | "
            f"{plan.total_s / 3600:.2f} h | {plan.eur:.2f} | {plan.spot_eur:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m fruits_pipeline.planner --images N``: the estimate on the current settings."""
    parser = argparse.ArgumentParser(prog="fruits_pipeline.planner", description=__doc__)
    parser.add_argument("--images", type=int, nargs="+", required=True, help="images to featurize")
    parser.add_argument("--pca-rows", type=int, help="rows the PCA refits on (default: images)")
    parser.add_argument("--target-minutes", type=float, help="recommend core nodes for this")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if min(args.images) < 0:
        parser.error(f"--images must be >= 0, got {min(args.images)}")
    if len(args.images) > 1:
        print(table(settings, args.images))
        return 0
    plan = estimate(settings, args.images[0], args.pca_rows)
    print(plan.parts())
    print(
        f"EUR {plan.eur:.2f} on-demand ({plan.eur_per_hour:.3f}/h), EUR {plan.spot_eur:.2f} with "
        f"spot core nodes ({plan.spot_eur_per_hour:.3f}/h); max_cost_eur {settings.max_cost_eur}"
    )
    if args.target_minutes is not None:
        best = recommend_core_nodes(
            settings, args.images[0], args.target_minutes * 60, args.pca_rows
        )
        if best is None:
            print(
                f"no count up to {MAX_CORE_NODES} core nodes finishes in {args.target_minutes} min"
            )
        else:
            print(
                f"for {args.target_minutes:g} min: {best.nodes - 1} core "
                f"node{'s' if best.nodes > 2 else ''}, "
                f"{best.total_s / 60:.1f} min, EUR {best.eur:.2f} (spot {best.spot_eur:.2f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
