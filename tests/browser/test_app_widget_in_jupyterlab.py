"""What a person sees in JupyterLab after a ``%%serve`` cell: a live widget, its + button, its request figures.

These are checked in the page's DOM (headless Chromium), not in the kernel: the kernel-side tests prove the
widget's traits are right, only a browser proves JupyterLab renders them as a widget (the widget manager is
installed and matches ipywidgets) and that a click travels back to the kernel and its effect comes back.

The tests share one deployed app (see conftest); each reads the state it starts from off the page, so they do not
depend on running in the order written.
"""

from __future__ import annotations

import shutil
from typing import Iterator

import pytest

from check_notebook import APP, DEPLOYMENT, REQUESTS_CELL, REQUESTS_SENT, SERVE_CELL
from notebook_page import (
    DeployedApp,
    app_widget,
    cell,
    column_value,
    output_text,
    run_cell,
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
