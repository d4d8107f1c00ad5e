"""What a person sees in JupyterLab after a ``%%serve`` cell: a live widget, its + button, its request figures.

These are checked in the page's DOM (headless Chromium), not in the kernel: the kernel-side tests prove the
widget's traits are right, only a browser proves JupyterLab renders them as a widget (the widget manager is
installed and matches ipywidgets) and that a click travels back to the kernel and its effect comes back.

The tests share one deployed app (see conftest); each reads the state it starts from off the page, so they do not
depend on running in the order written.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from check_notebook import (APP, DEPLOYMENT, NOTEBOOK, REOPENED, REQUESTS_CELL, REQUESTS_SENT, RESUME_CONTROLLER_CELL,
                            SERVE_CELL, STOP_CONTROLLER_CELL)
from notebook_page import (
    DeployedApp,
    app_widget,
    cell,
    chart_line,
    column_value,
    open_notebook,
    output_text,
    replica_count_box,
    run_cell,
    save_notebook,
    save_screenshot,
    scale_target_select,
    scale_up_button,
    wait_for_deployment_cell,
)

WIDGET_TIMEOUT_MS = 30_000
SETTLED_TIMEOUT_MS = 5_000  # for what the same feed update that filled the table also sets
SCALE_TIMEOUT_MS = 90_000
FIGURES_TIMEOUT_MS = 30_000  # replicas report every 0.25 s, the controller publishes whole seconds
README_SCREENSHOT = "serve_nb_widget"
UNREACHABLE_TIMEOUT_MS = 15_000  # the widget probes the controller every 2 s and gives a probe 3 s


@pytest.fixture
def app(deployed: DeployedApp, request: pytest.FixtureRequest) -> Iterator[DeployedApp]:
    """The deployed app; a screenshot of the whole page when the test failed, to see what it showed."""
    yield deployed
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        save_screenshot(deployed.page, deployed.screenshots, f"{request.node.name}_failed")


def test_serve_cell_output_is_a_rendered_widget_showing_the_app_and_its_status(app: DeployedApp) -> None:
    """Without JupyterLab's widget manager (or with one that does not match ipywidgets) the cell shows a text
    repr; only the page tells."""
    from playwright.sync_api import expect

    serve_cell = cell(app.page, SERVE_CELL)
    widget = app_widget(serve_cell)

    widget.wait_for(state="visible", timeout=WIDGET_TIMEOUT_MS)
    expect(widget).to_contain_text(APP, timeout=WIDGET_TIMEOUT_MS)
    expect(widget).to_contain_text("RUNNING", timeout=WIDGET_TIMEOUT_MS)
    assert "AppWidget(" not in output_text(serve_cell), "the cell shows the widget's text repr, not the widget"
    assert "Error displaying widget" not in output_text(serve_cell)
    save_screenshot(widget, app.screenshots, "widget_rendered")
    save_screenshot(app.page, app.screenshots, "page_after_serve_cell")


def test_scale_dropdown_shows_the_apps_deployment_selected_so_plus_acts_at_once(app: DeployedApp) -> None:
    """A person sees one deployment and clicks +: nothing may be left to choose first. (ipywidgets 8 leaves a
    Dropdown whose options are set after creation with no selection; the page showed it empty, and + did nothing,
    before the widget chose the deployment itself.)"""
    from playwright.sync_api import expect

    widget = app_widget(cell(app.page, SERVE_CELL))
    wait_for_deployment_cell(app.page, widget, DEPLOYMENT, "running", r"^(\d+) / \1$", WIDGET_TIMEOUT_MS)

    expect(scale_target_select(widget)).to_have_value(DEPLOYMENT, timeout=SETTLED_TIMEOUT_MS)


def test_plus_button_adds_a_replica_and_the_page_shows_the_new_count(app: DeployedApp) -> None:
    """The click goes from the page to the kernel (a comm message), the kernel scales through the controller,
    and the new count comes back to the page through the feed: the whole loop a person relies on."""
    widget = app_widget(cell(app.page, SERVE_CELL))
    # Settled first ("n / n"): the + button scales from the target the widget shows.
    settled = wait_for_deployment_cell(app.page, widget, DEPLOYMENT, "running", r"^(\d+) / \1$", WIDGET_TIMEOUT_MS)
    replicas = int(settled.split(" / ")[0])

    scale_up_button(widget).click()  # no deployment picked first: the app has only one

    wanted = f"{replicas + 1} / {replicas + 1}"
    shown = wait_for_deployment_cell(app.page, widget, DEPLOYMENT, "running", f"^{wanted}$", SCALE_TIMEOUT_MS)
    assert shown == wanted
    save_screenshot(widget, app.screenshots, "widget_after_scale_up")


def test_requests_sent_from_a_later_cell_change_the_widgets_request_figures(app: DeployedApp) -> None:
    """The figures come from the replicas' reports through the controller's feed on a background thread; the
    page must show them change without the ``%%serve`` cell being run again."""
    widget = app_widget(cell(app.page, SERVE_CELL))
    wait_for_deployment_cell(app.page, widget, DEPLOYMENT, "running", r"^(\d+) / \1$", WIDGET_TIMEOUT_MS)
    before = column_value(widget, DEPLOYMENT, "requests")
    assert before is not None, "the deployments table has no requests column"

    sender = run_cell(app.page, REQUESTS_CELL, 60_000)
    assert f"sent {REQUESTS_SENT} requests" in output_text(sender)

    after = wait_for_deployment_cell(app.page, widget, DEPLOYMENT, "requests", r"\d req/s", FIGURES_TIMEOUT_MS,
                                     unlike=before)
    assert after != before
    shot = save_screenshot(widget, app.screenshots, README_SCREENSHOT)
    for directory in app.readme_screenshot_dirs()[1:]:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, directory / shot.name)


def test_the_widget_has_no_horizontal_scrollbar_and_the_curl_box_wraps(app: DeployedApp) -> None:
    """The output area must not scroll sideways under the widget, and the curl line stays inside it."""
    widget = app_widget(cell(app.page, SERVE_CELL))
    widget.locator(".serve-nb-curl").wait_for(timeout=WIDGET_TIMEOUT_MS)
    sizes = widget.evaluate("""(el) => {
        const out = el.closest('.jp-OutputArea-output') || el;
        const curl = el.querySelector('.serve-nb-curl');
        return {out: [out.scrollWidth, out.clientWidth], curl: curl.getBoundingClientRect().right,
                edge: el.getBoundingClientRect().right};
    }""")
    assert sizes["out"][0] <= sizes["out"][1], f"the output scrolls sideways: {sizes}"
    assert sizes["curl"] <= sizes["edge"] + 1, f"the curl box runs off the widget: {sizes}"


def test_the_replica_count_box_sets_the_count_and_the_page_shows_it(app: DeployedApp) -> None:
    widget = app_widget(cell(app.page, SERVE_CELL))
    settled = wait_for_deployment_cell(app.page, widget, DEPLOYMENT, "running", r"^(\d+) / \1$", WIDGET_TIMEOUT_MS)
    wanted = 1 if int(settled.split(" / ")[0]) > 1 else 2
    box, set_button = replica_count_box(widget, DEPLOYMENT)
    box.fill(str(wanted))
    set_button.click()
    shown = wait_for_deployment_cell(app.page, widget, DEPLOYMENT, "running", f"^{wanted} / {wanted}$",
                                     SCALE_TIMEOUT_MS)
    assert shown == f"{wanted} / {wanted}"


def test_the_chart_shows_the_load_of_requests_on_its_own_axis_and_hover_reads_values(app: DeployedApp) -> None:
    """Requests sent from a later cell raise the load line above its baseline (the chart follows the feed), the
    right axis is labelled, and the pointer over the chart reads the values under it."""
    page = app.page
    widget = app_widget(cell(page, SERVE_CELL))
    widget.locator(".serve-nb-chart").wait_for(timeout=WIDGET_TIMEOUT_MS)
    before = chart_line(widget, "load")
    run_cell(page, REQUESTS_CELL, 60_000)
    page.wait_for_function(
        """(el) => {
            const line = el.querySelector('.serve-nb-chart polyline.serve-nb-load');
            if (!line) return false;
            const ys = line.getAttribute('points').trim().split(/\\s+/).map((p) => +p.split(',')[1]);
            return Math.min(...ys) < Math.max(...ys);
        }""", arg=widget.element_handle(), timeout=FIGURES_TIMEOUT_MS, polling=200)
    assert chart_line(widget, "load") != before
    assert widget.locator(".serve-nb-chart text.axis-right").count() >= 2
    assert widget.locator(".serve-nb-chart text.axis-left").count() >= 2
    chart = widget.locator(".serve-nb-chart").first
    box = chart.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
    hover = widget.locator(".serve-nb-hover").first
    from playwright.sync_api import expect

    expect(hover).to_contain_text(re.compile(r"replicas \d+ · ongoing requests \d"), timeout=SETTLED_TIMEOUT_MS)
    save_screenshot(widget, app.screenshots, "widget_chart_hover")


def test_the_request_form_sends_a_request_and_shows_the_answer(app: DeployedApp) -> None:
    from playwright.sync_api import expect

    widget = app_widget(cell(app.page, SERVE_CELL))
    widget.locator("summary", has_text="Send a request").click()
    widget.locator("button.serve-nb-send").click()
    answer = widget.locator(".serve-nb-answer")
    expect(answer).to_contain_text("200 in", timeout=FIGURES_TIMEOUT_MS)
    expect(answer).to_contain_text("hello from the browser test")
    assert f"/{APP}/\n" not in answer.inner_text() and f"/{APP}/ " not in answer.inner_text()  # no stray slash


def test_the_manual_adaptive_switch_turns_autoscaling_on_and_off(app: DeployedApp) -> None:
    """Adaptive with min/max/target hands the deployment to the autoscaler (+ and − then have nothing to act on);
    Manual with a count gives it a fixed size again (and + back)."""
    from playwright.sync_api import expect

    widget = app_widget(cell(app.page, SERVE_CELL))
    wait_for_deployment_cell(app.page, widget, DEPLOYMENT, "running", r"^(\d+) / \1$", WIDGET_TIMEOUT_MS)
    row = widget.locator(".serve-nb-deployments tr").filter(has_text=DEPLOYMENT)
    mode = row.locator("select.serve-nb-mode")
    mode.focus()
    mode.select_option("adaptive")
    # Leaving the table redraws it from the feed (which still says manual): the picked mode must survive that.
    mode.evaluate("el => { el.dataset.drawnBefore = '1'; }")
    widget.locator(".serve-nb-chart-head b").click()
    expect(row.locator("select.serve-nb-mode:not([data-drawn-before])")).to_have_count(1, timeout=SETTLED_TIMEOUT_MS)
    expect(mode).to_have_value("adaptive")
    expect(row.locator("input.serve-nb-min")).to_be_visible()
    row.locator("input.serve-nb-min").fill("1")
    row.locator("input.serve-nb-max").fill("3")
    row.locator("input.serve-nb-target").fill("2")
    row.locator("button.serve-nb-apply-autoscaling").click()
    notice = widget.locator(".serve-nb-notice")
    expect(notice).to_contain_text(f"{DEPLOYMENT} now autoscales (1–3 replicas).", timeout=SCALE_TIMEOUT_MS)
    expect(scale_up_button(widget)).to_be_disabled(timeout=FIGURES_TIMEOUT_MS)
    expect(row.locator("select.serve-nb-mode")).to_have_value("adaptive")
    save_screenshot(widget, app.screenshots, "widget_adaptive")

    row.locator("select.serve-nb-mode").select_option("manual")
    row.locator("input.serve-nb-replica-count").fill("1")
    row.locator("button.serve-nb-set-replicas").click()
    expect(notice).to_contain_text(f"{DEPLOYMENT} now has a fixed size of 1.", timeout=SCALE_TIMEOUT_MS)
    expect(scale_up_button(widget)).to_be_enabled(timeout=FIGURES_TIMEOUT_MS)
    wait_for_deployment_cell(app.page, widget, DEPLOYMENT, "running", "^1 / 1$", SCALE_TIMEOUT_MS)


def test_a_controller_that_stops_answering_is_said_over_the_last_state_and_the_notice_goes_when_it_answers(
        app: DeployedApp) -> None:
    from playwright.sync_api import expect

    widget = app_widget(cell(app.page, SERVE_CELL))
    wait_for_deployment_cell(app.page, widget, DEPLOYMENT, "running", r"^(\d+) / \1$", WIDGET_TIMEOUT_MS)
    notice = widget.locator(".serve-nb-unreachable")
    assert notice.count() == 0
    run_cell(app.page, STOP_CONTROLLER_CELL, 30_000)
    try:
        expect(notice).to_contain_text("controller unreachable, retrying", timeout=UNREACHABLE_TIMEOUT_MS)
        expect(widget.locator(".serve-nb-deployments")).to_contain_text(DEPLOYMENT)  # the last state stays shown
        save_screenshot(widget, app.screenshots, "widget_controller_unreachable")
    finally:
        run_cell(app.page, RESUME_CONTROLLER_CELL, 30_000)
    expect(notice).to_have_count(0, timeout=UNREACHABLE_TIMEOUT_MS)


def test_the_saved_notebook_reopened_without_its_widgets_shows_the_static_snapshot(app: DeployedApp) -> None:
    """JupyterLab cannot draw a widget whose model is gone ("model not found"); the snapshot next to it shows the
    last state: status and the chart as inline SVG."""
    from playwright.sync_api import expect

    widget = app_widget(cell(app.page, SERVE_CELL))
    wait_for_deployment_cell(app.page, widget, DEPLOYMENT, "running", r"^(\d+) / \1$", WIDGET_TIMEOUT_MS)
    saved = app.lab.root_dir / NOTEBOOK
    deadline = time.monotonic() + 30
    save_notebook(app.page)
    while "RUNNING" not in _snapshot_text(saved) and time.monotonic() < deadline:
        time.sleep(0.2)  # polling the file for a bounded time: the condition is "saved with the snapshot"
    assert "RUNNING" in _snapshot_text(saved), "the saved notebook carries no snapshot of the running app"
    shutil.copyfile(saved, app.lab.root_dir / REOPENED)

    browser = app.page.context.browser
    assert browser is not None
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        # "reset": a fresh workspace, so only the reopened copy opens (not the live notebook's tab again); its
        # new kernel has none of the widget models the saved outputs name.
        open_notebook(page, app.lab.notebook_url(REOPENED) + "&reset")
        expect(page.locator(".jp-NotebookPanel")).to_have_count(1)
        expect(page.locator(".lm-TabBar-tab.jp-mod-current")).to_contain_text(REOPENED)
        output = cell(page, SERVE_CELL).locator(".jp-OutputArea")
        snap = output.locator("[data-serve-nb-snapshot]").first
        expect(snap).to_be_visible(timeout=WIDGET_TIMEOUT_MS)
        expect(snap).to_contain_text("RUNNING")
        expect(snap.locator("svg polyline")).to_have_count(2)
        expect(snap.locator("svg text.axis-right").first).to_be_visible()
        assert output.locator(".serve-nb-root").count() == 0  # no live widget there: the snapshot is what shows
        save_screenshot(page, app.screenshots, "reopened_notebook_snapshot")
    finally:
        page.close()


def _snapshot_text(path: Path) -> str:
    """The snapshot outputs of the saved notebook's ``%%serve`` cell ("" before it is saved)."""
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    outputs = nb["cells"][SERVE_CELL].get("outputs", [])
    return "".join("".join(o.get("data", {}).get("text/html", "")) for o in outputs
                   if "data-serve-nb-snapshot" in "".join(o.get("data", {}).get("text/html", "")))
