"""fruits_local in Airflow's UI, in a real browser: Playwright for Python driving Debian's Chromium.

On the deployed stack of this folder, after the REST tests (file order): log in through the
login page, trigger from the form, see a bad batch id refused, open each run's "Batch report"
tab, and backfill two days from the same modal. What the UI shows is compared with what the
run wrote (its featurize report). A failing step keeps a screenshot and names it.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Browser, Frame, Page, expect

from fruits_jobs import contract
from tests.running_airflow.conftest import (
    CLASSES,
    DAG,
    SCREENSHOTS,
    UI_S,
    featurize_report,
    kept_on_failure,
    land,
    plot_widths,
    report_frame,
    row,
    signed_in,
)

REPORT_SCREENSHOT = SCREENSHOTS / "batch-report.png"
"""The tab as the form test last saw it (README's ``docs/batch-report.png`` is a copy)."""


@pytest.fixture(scope="module")
def page(browser: Browser, deployed, scheduled) -> Iterator[Page]:
    """A page logged in through the login page, as a user does (the DAG is unpaused)."""
    with signed_in(browser, deployed.stack) as page:
        yield page


def open_trigger_form(page: Page, url: str) -> None:
    """The DAG's page, then its Trigger button: the modal with the form."""
    page.goto(f"{url}/dags/{DAG}")
    page.get_by_test_id("trigger-dag-button").click()
    expect(page.get_by_test_id("trigger-dag-submit")).to_be_visible(timeout=UI_S)


def fill_param(page: Page, name: str, value: str) -> None:
    """Type ``value`` into the form's field of Param ``name`` (its input is ``element_<name>``)."""
    field = page.locator(f"input[name='element_{name}']")
    field.fill(value)
    field.press("Tab")  # a number field takes its value when it loses the focus


def assert_report_shows(frame: Frame, featurize: dict) -> None:
    """The tab's counts are the featurize report's, it names each quarantined file, plots load."""
    for label, key in (
        ("photos in", contract.R_INPUT),
        ("featurized", contract.R_FEATURIZED),
        ("quarantined", contract.R_QUARANTINED),
        ("already featurized", contract.R_SKIPPED),
    ):
        assert row(frame, label) == str(featurize[key]), label
    items = frame.locator("ul.quarantine li").all_inner_texts()
    expected = [
        f"{x[contract.PATH]}: {x[contract.REASON]}" for x in featurize[contract.R_QUARANTINE_SAMPLE]
    ]
    assert items == expected
    widths = plot_widths(frame)
    assert len(widths) == 2 and all(w > 0 for w in widths), widths


def test_a_bad_batch_id_in_the_form_is_refused_and_starts_no_run(page, deployed):
    before = len(deployed.runs(DAG))
    with kept_on_failure(page, "bad-batch-id"):
        open_trigger_form(page, deployed.stack.url)
        fill_param(page, "batch_id", "a/b")
        page.get_by_test_id("trigger-dag-submit").click()
        expect(page.get_by_text("Failed to Trigger Dag").first).to_be_visible(timeout=UI_S)
    assert len(deployed.runs(DAG)) == before


def test_the_form_triggers_a_run_whose_batch_report_tab_shows_it(page, deployed, tmp_path):
    day = time.strftime("%Y-%m-%d", time.gmtime())
    landing = deployed.landing / day  # the form's image source: today's landing folder
    land(landing, CLASSES[2:4], 8, 2)  # photos no run has landed yet
    (landing / CLASSES[2] / "cut-short.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    before = {r["dag_run_id"] for r in deployed.runs(DAG)}
    started = time.monotonic()
    with kept_on_failure(page, "form-trigger"):
        open_trigger_form(page, deployed.stack.url)
        fill_param(page, "batch_id", "from-the-ui")
        fill_param(page, "k", "3")
        page.get_by_test_id("trigger-dag-submit").click()
        for _ in range(30):
            new = [r for r in deployed.runs(DAG) if r["dag_run_id"] not in before]
            if new:
                break
            time.sleep(1)
    (run,) = new
    run = deployed.wait(DAG, run["dag_run_id"])
    assert run["state"] == "success", deployed.explain(DAG, run["dag_run_id"])
    assert run["conf"]["batch_id"] == "from-the-ui" and run["conf"]["k"] == 3
    featurize = featurize_report(deployed, "from-the-ui")
    assert featurize[contract.R_QUARANTINED] == 1
    with kept_on_failure(page, "form-report"):
        frame = report_frame(page, deployed.stack.url, DAG, run["dag_run_id"])
        assert_report_shows(frame, featurize)
        assert "cut-short.jpg" in frame.locator("ul.quarantine").inner_text()
        assert row(frame, "k") == "3"
    print(f"trigger to report in the browser: {time.monotonic() - started:.1f} s")
    REPORT_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(REPORT_SCREENSHOT))


def backfill_from_the_modal(page: Page, url: str, first: str, last: str) -> None:
    """The Trigger modal's Backfill choice, from ``first`` to ``last`` (days), then Run."""
    open_trigger_form(page, url)
    page.locator("label:has-text('Backfill')").first.click()
    for n, day in enumerate((first, last)):  # From, To: each a popover with a date and a time
        page.get_by_test_id("datetime-input").nth(n).click()
        page.locator("input[placeholder='YYYY/MM/DD']:visible").fill(day.replace("-", "/"))
        time_field = page.locator("input[placeholder='HH:mm']:visible")
        time_field.fill("00:00")
        page.keyboard.press("Escape")
        expect(time_field).to_have_count(0)  # the popover closed
    expect(page.get_by_text(re.compile(r"2 runs will be triggered"))).to_be_visible(timeout=UI_S)
    with page.expect_response(
        lambda r: r.url.endswith("/backfills") and r.request.method == "POST", timeout=UI_S
    ) as created:
        page.get_by_role("button", name="Run Backfill").click()
    assert created.value.ok, created.value.text()


def test_a_backfill_from_the_modal_featurizes_each_day_and_reports_each_run(page, deployed):
    days = ["2026-10-01", "2026-10-02"]
    first = land(deployed.landing / days[0], CLASSES[4:6], 0, 3)
    second = land(deployed.landing / days[1], CLASSES[4:6], 3, 2)
    broken = deployed.landing / days[0] / CLASSES[4] / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 cut short")
    with kept_on_failure(page, "backfill-modal"):
        backfill_from_the_modal(page, deployed.stack.url, *days)
    (backfill,) = deployed.api("GET", "/api/v2/backfills", params={"dag_id": DAG}).json()[
        "backfills"
    ]
    runs = []
    for _ in range(60):
        runs = [r for r in deployed.runs(DAG) if r["run_type"] == "backfill"]
        if len(runs) == 2:
            break
        time.sleep(2)
    assert len(runs) == 2, runs
    ended = sorted(
        (deployed.wait(DAG, r["dag_run_id"]) for r in runs), key=lambda r: r["logical_date"]
    )
    assert [r["state"] for r in ended] == ["success", "success"], [
        deployed.explain(DAG, r["dag_run_id"]) for r in ended
    ]
    assert [r["logical_date"][:10] for r in ended] == days
    day1, day2 = (featurize_report(deployed, day) for day in days)
    assert (day1[contract.R_FEATURIZED], day1[contract.R_QUARANTINED]) == (first, 1)
    assert day2[contract.R_FEATURIZED] == second  # only the second day's new images
    assert day2[contract.R_SKIPPED] == day2[contract.R_DISCOVERED] - second
    pca = deployed.xcom(DAG, ended[1]["dag_run_id"], "validate_outputs")
    assert pca["pca"]["rows"] == pca["feature_rows"] >= first + second  # PCA over all batches
    csv_folder = deployed.root / "outputs" / contract.fit_key(contract.PCA_CSV, pca["pca"]["fit"])
    (csv_file,) = csv_folder.glob("*.csv")
    assert len(csv_file.read_text().splitlines()) == 1 + pca["pca"]["rows"]
    for run, report in zip(ended, (day1, day2), strict=True):  # each run on its own tab
        with kept_on_failure(page, f"backfill-report-{run['logical_date'][:10]}"):
            assert_report_shows(
                report_frame(page, deployed.stack.url, DAG, run["dag_run_id"]), report
            )
    for _ in range(30):  # the scheduler closes the backfill once its runs have ended
        if deployed.api("GET", f"/api/v2/backfills/{backfill['id']}").json()["completed_at"]:
            break
        time.sleep(2)
    else:
        raise AssertionError(f"backfill {backfill['id']} not completed after its runs ended")


def report_page(dag_id: str, run_id: str) -> str:
    """The path of a run's batch report (the plugin's app, mounted by the api-server)."""
    return f"/fruits/report/{dag_id}/{quote(run_id, safe='')}"


def test_the_report_route_serves_every_run_and_only_to_a_user(deployed, scheduled):
    """The route behind the tab, over REST: the runs above, a refused user, ids that are paths."""
    (plugin,) = [
        p
        for p in deployed.api("GET", "/api/v2/plugins").json()["plugins"]
        if p["name"] == "fruits_batch_report"
    ]
    (view,) = plugin["external_views"]
    assert (view["name"], view["destination"]) == ("Batch report", "dag_run")
    assert view["href"] == "fruits/report/{DAG_ID}/{RUN_ID}"
    runs = deployed.runs(DAG)
    day1 = next(
        r for r in runs if r["run_type"] == "backfill" and r["logical_date"][:10] == "2026-10-01"
    )
    page = deployed.api("GET", report_page(DAG, day1["dag_run_id"]))
    assert page.status_code == 200, page.text
    featurize = featurize_report(deployed, "2026-10-01")
    for label, key in (
        ("photos in", contract.R_INPUT),
        ("featurized", contract.R_FEATURIZED),
        ("quarantined", contract.R_QUARANTINED),
        ("already featurized", contract.R_SKIPPED),
    ):
        assert f"<tr><th>{label}</th><td>{featurize[key]}</td></tr>" in page.text, label
    (broken,) = featurize[contract.R_QUARANTINE_SAMPLE]
    assert broken[contract.PATH].endswith("/broken.jpg"), broken
    shown = f"{html.escape(broken[contract.PATH])}</code>: {html.escape(broken[contract.REASON])}"
    assert shown in page.text
    assert page.text.count("data:image/png;base64,") == 2
    task = f"/api/v2/dags/{DAG}/dagRuns/{day1['dag_run_id']}/taskInstances/validate_outputs"
    links = deployed.api("GET", f"{task}/links").json()
    assert links["extra_links"] == {"Outputs": f"file://{deployed.root / 'outputs'}/"}, links
    # The scheduled day re-run with nothing new: the decision, as plan_work logged it.
    run_id = scheduled[0]["dag_run_id"]
    work = deployed.xcom(DAG, run_id, "plan_work")
    page = deployed.api("GET", report_page(DAG, run_id)).text
    assert not work["anything"] and "<h2>Nothing new</h2>" in page
    assert html.escape(work["reason"]) in page
    # A run that failed in its preflight: what it did, not an error page.
    failed = next(r for r in runs if r["state"] == "failed")
    page = deployed.api("GET", report_page(DAG, failed["dag_run_id"]))
    assert page.status_code == 200 and "No batch" in page.text
    assert "<tr><th>preflight</th><td>failed</td></tr>" in page.text
    # Anonymous: 401. Ids that name no run, or try to name a path: 404, nothing read.
    anonymous = httpx.get(deployed.stack.url + report_page(DAG, day1["dag_run_id"]), timeout=30)
    assert anonymous.status_code == 401, anonymous.text
    for path in (
        report_page(DAG, ".."),
        report_page(DAG, "%2e%2e"),
        f"/fruits/report/{DAG}/%2e%2e%2f%2e%2e",
        report_page("example_dag", day1["dag_run_id"]),
    ):
        assert deployed.api("GET", path).status_code == 404, path
