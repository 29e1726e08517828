"""A run's batch report: what a run of either DAG did and produced, as the UI's tab shows it.

:func:`gather` reads three things, and writes nothing:

* the run, as Airflow's database has it (:class:`RunFacts`): its state, its tasks' states, and
  the XComs of ``preflight`` (the batch id), ``plan_work`` (the nothing-new decision),
  ``cost_check`` and ``create_cluster`` (``fruits_emr``);
* the output root, through :mod:`fruits_pipeline.stores`: the survey's listing of the output
  folders and its reads of the reports, the validation's checks of the fit, and the plots.
  Never a listing or a read of the images, so a batch of 100,000 photos reads as fast as one
  of 10;
* for ``fruits_emr``, the cluster (``DescribeCluster``).

:func:`render` makes it one HTML page, the plots inline. Neither imports Spark nor TensorFlow.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fruits_jobs import contract
from fruits_pipeline.outputs_state import survey
from fruits_pipeline.stores import Store
from fruits_pipeline.validation import Findings, validate

PLOT_MAX_BYTES = 5 * 1024 * 1024
"""A plot larger than this is linked, not inlined (the job's plots are about 50 kB)."""


@dataclass(frozen=True)
class RunFacts:
    """A DAG run as Airflow's database has it: state, task states, XComs."""

    dag_id: str
    run_id: str
    state: str
    tasks: dict[str, str] = field(default_factory=dict)
    """Task id -> state (``None`` as ``"none"``: not run yet)."""
    xcoms: dict[tuple[str, str], Any] = field(default_factory=dict)
    """(task id, key) -> value."""

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        """The XCom ``key`` of ``task_id``, or None."""
        return self.xcoms.get((task_id, key))

    @property
    def batch(self) -> str | None:
        """The run's batch id, from ``preflight``; None when it is absent or not a batch id."""
        batch = self.xcom("preflight", "batch_id")
        ok = isinstance(batch, str) and re.fullmatch(contract.BATCH_ID_PATTERN, batch)
        return batch if ok else None


@dataclass
class BatchReport:
    """What the tab shows for one run; see :func:`gather`."""

    facts: RunFacts
    output: str
    batch: str | None = None
    decision: str | None = None
    """``plan_work``'s sentence when the run had nothing to do."""
    featurize: dict[str, Any] | None = None
    """The batch's committed featurize report."""
    pca: dict[str, Any] | None = None
    """The current fit's report."""
    plots: dict[str, bytes | str] = field(default_factory=dict)
    """Plot name -> PNG bytes, or the plot's URI when it is too large to inline."""
    uris: dict[str, str] = field(default_factory=dict)
    findings: Findings | None = None
    cluster: dict[str, str] | None = None
    cost: dict[str, float] | None = None


def gather(
    facts: RunFacts,
    store: Store,
    describe_cluster: Callable[[str], dict[str, Any]] | None = None,
    log_uri: str = "",
    max_cost_eur: float | None = None,
) -> BatchReport:
    """The report of the run ``facts`` over the output root ``store``.

    :param describe_cluster: ``DescribeCluster``'s ``Cluster`` for a cluster id (fruits_emr).
    :param log_uri: the clusters' ``LogUri`` (fruits_emr).
    :param max_cost_eur: the cost ceiling the cost check compared with (fruits_emr).
    """
    report = BatchReport(facts, store.uri, batch=facts.batch)
    work = facts.xcom("plan_work") or {}
    if work and not work.get("anything", True):
        report.decision = str(work.get("reason", ""))
    state = survey(store)
    if report.batch:
        report.featurize = state.committed.get(report.batch)
    report.pca = state.pca
    if state.pca is not None and state.fit is not None:
        fit = state.fit
        csv = state.fit_csvs
        report.uris = {
            "PCA matrix (CSV)": contract.join(store.uri, csv[0] if csv else contract.PCA_CSV),
            "PCA scores (Parquet)": contract.join(store.uri, contract.fit_key(contract.PCA, fit)),
            "PCA model": contract.join(store.uri, contract.fit_key(contract.PCA_MODEL, fit)),
        }
        present = set(state.fit_keys)
        for name in contract.PCA_PLOTS:
            key = contract.plot_key(fit, name)
            if key in present:
                data = store.read(key, max_bytes=PLOT_MAX_BYTES + 1)
                inline = len(data) <= PLOT_MAX_BYTES
                report.plots[name] = data if inline else contract.join(store.uri, key)
    report.uris["features"] = contract.join(store.uri, contract.FEATURES)
    report.uris["quarantine"] = contract.join(store.uri, contract.QUARANTINE)
    if report.batch and report.decision is None and facts.tasks.get("featurize") != "skipped":
        report.findings = validate(store, report.batch, state)
    cluster_id = facts.xcom("create_cluster")
    if isinstance(cluster_id, str) and describe_cluster is not None:
        described = describe_cluster(cluster_id)
        status = described.get("Status", {})
        reason = status.get("StateChangeReason", {})
        report.cluster = {
            "id": cluster_id,
            "state": status.get("State", "unknown"),
            "reason": " ".join(filter(None, (reason.get("Code"), reason.get("Message")))),
            "logs": f"{log_uri}{cluster_id}/steps/",
        }
    cost = facts.xcom("cost_check")
    if isinstance(cost, dict) and "eur" in cost:
        report.cost = {"eur": float(cost["eur"])}
        if max_cost_eur is not None:
            report.cost["max_cost_eur"] = max_cost_eur
    return report


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _batch_section(report: BatchReport) -> str:
    featurize = report.featurize
    if featurize is None:
        return (
            f"<h2>Batch {_e(report.batch)}</h2><p class='missing'>Not committed: this run's "
            "featurize step did not finish (see the task states below).</p>"
        )
    parts = [
        f"<h2>Batch {_e(report.batch)}</h2>",
        _table(
            [
                ("photos in", featurize.get(contract.R_INPUT)),
                ("featurized", featurize.get(contract.R_FEATURIZED)),
                ("quarantined", featurize.get(contract.R_QUARANTINED)),
                ("already featurized", featurize.get(contract.R_SKIPPED)),
                ("images/s", featurize.get(contract.R_THROUGHPUT)),
            ]
        ),
    ]
    quarantined = featurize.get(contract.R_QUARANTINED) or 0
    sample = featurize.get(contract.R_QUARANTINE_SAMPLE) or []
    if quarantined:
        shown = sample[: contract.QUARANTINE_SAMPLE]
        items = "".join(
            f"<li><code>{_e(row.get(contract.PATH))}</code>: {_e(row.get(contract.REASON))}</li>"
            for row in shown
        )
        parts.append(
            f"<h3>Quarantined: {_e(quarantined)} file{'s' if quarantined != 1 else ''}"
            f"{f' (the first {len(shown)})' if len(shown) < quarantined else ''}</h3>"
            f"<ul class='quarantine'>{items}</ul>"
        )
    return "".join(parts)


def _pca_section(report: BatchReport) -> str:
    pca = report.pca
    if pca is None:
        return "<h2>PCA</h2><p class='missing'>No current PCA fit.</p>"
    batches = pca.get(contract.R_BATCHES) or []
    covers = report.batch in batches
    explained = sum(pca.get(contract.R_EXPLAINED) or [])
    parts = [
        "<h2>PCA</h2>",
        _table(
            [
                ("fit", pca.get(contract.R_FIT)),
                ("k", pca.get(contract.R_K)),
                ("variance explained", f"{explained:.1%}"),
                ("rows", pca.get(contract.R_ROWS)),
                ("batches covered", ", ".join(batches)),
            ]
        ),
    ]
    if report.batch and not covers:
        parts.append(
            f"<p class='missing'>The current fit does not cover batch {_e(report.batch)}.</p>"
        )
    for name, plot in report.plots.items():
        if isinstance(plot, bytes):
            data = base64.b64encode(plot).decode()
            parts.append(f"<img alt='{_e(name)}' src='data:image/png;base64,{data}'>")
        else:
            parts.append(f"<p>{_e(name)}: <code>{_e(plot)}</code></p>")
    return "".join(parts)


def _emr_section(report: BatchReport) -> str:
    rows: list[tuple[str, Any]] = []
    if report.cost is not None:
        ceiling = report.cost.get("max_cost_eur")
        rows.append(
            (
                "cost estimate",
                f"EUR {report.cost['eur']:.2f}"
                + (f" (max_cost_eur {ceiling:.2f})" if ceiling is not None else ""),
            )
        )
    if report.cluster is not None:
        cluster = report.cluster
        rows += [
            ("cluster", cluster["id"]),
            ("final state", f"{cluster['state']} {cluster['reason']}".strip()),
            ("step logs", cluster["logs"]),
        ]
    return f"<h2>EMR</h2>{_table(rows)}" if rows else ""


def render(report: BatchReport) -> str:
    """The report as one HTML page (plots inline as PNG data URIs)."""
    facts = report.facts
    head = [
        f"<h1>{_e(facts.dag_id)}: {_e(facts.run_id)}</h1>",
        f"<p>Run {_e(facts.state)}. Outputs: <code>{_e(report.output)}</code></p>",
    ]
    if report.decision is not None:
        body = f"<h2>Nothing new</h2><p class='decision'>{_e(report.decision)}</p>"
    elif report.batch is None:
        body = "<p class='missing'>No batch: the run stopped before its preflight chose one.</p>"
    else:
        body = _batch_section(report) + _pca_section(report)
    if report.findings is not None:
        problems = report.findings.missing + report.findings.wrong
        body += "<h2>Outputs</h2>" + (
            "<p>valid</p>"
            if not problems
            else "<p class='missing'>missing or wrong:</p><ul>"
            + "".join(f"<li>{_e(p)}</li>" for p in problems)
            + "</ul>"
        )
    body += f"<h2>Files</h2>{_table(list(report.uris.items()))}" if report.uris else ""
    body += _emr_section(report)
    tasks = _table(sorted(facts.tasks.items()))
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Batch report {_e(facts.run_id)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(head)}{body}<h2>Tasks</h2>{tasks}</body></html>"
    )


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1rem 1.5rem; color: #1f2933; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { text-align: left; padding: 0.2rem 0.8rem 0.2rem 0; vertical-align: top; }
th { font-weight: 600; color: #52606d; }
img { max-width: 48%; margin: 0.5rem 1% 0 0; border: 1px solid #e4e7eb; }
.missing { color: #b42318; }
code { font-size: 0.9em; }
"""
