"""Re-running a ``%%serve`` cell in JupyterLab, and a failing one, as the page shows them.

The kernel-side tests prove the magic keeps one widget per cell and fills its deploy state; only the page shows
whether JupyterLab renders that same widget again (the same widget model, re-shown in the output JupyterLab
clears when a cell runs) and whether a failed deploy's error reaches the widget on screen. Uses the suite's
``deployed`` app (conftest): the first test re-runs its ``%%serve`` cell as it is, the second replaces the
cell's code with a constructor that raises and runs it again.
"""

from __future__ import annotations

import pytest

from check_notebook import APP, DEPLOYMENT, SERVE_CELL
from notebook_page import DeployedApp, app_widget, cell, run_cell, save_screenshot

WIDGET_TIMEOUT_MS = 30_000
RERUN_TIMEOUT_MS = 120_000
FAILED_TIMEOUT_MS = 120_000
MAX_BLANK_MS = 1_000  # JupyterLab's clear until the widget is shown again (a re-deploy takes seconds)

@pytest.fixture
def app(deployed: DeployedApp, request: pytest.FixtureRequest):
    yield deployed
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        save_screenshot(deployed.page, deployed.screenshots, f"{request.node.name}_failed")


def test_rerunning_the_cell_shows_the_same_widget_with_its_stages_done(app: DeployedApp) -> None:
    from playwright.sync_api import expect

    page = app.page
    serve_cell = cell(page, SERVE_CELL)
    widget = app_widget(serve_cell)
    widget.wait_for(state="visible", timeout=WIDGET_TIMEOUT_MS)
    expect(widget).to_contain_text("routing switched", timeout=WIDGET_TIMEOUT_MS)
    # While the cell runs again, the output must always hold the widget (never the blank output a closed and
    # re-created widget left): sample it from the page itself, every animation frame, until the run ends.
    page.evaluate("""(index) => {
      const cellEl = document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')[index];
      window.__serveNbSamples = [];
      const sample = () => {
        const w = cellEl.querySelector('.jp-OutputArea-output .serve-nb-app, .jp-OutputArea-output .widget-vbox');
        window.__serveNbSamples.push([performance.now(),
          w ? (w.innerText.includes('replicas starting') ? 'stages' : 'widget') : 'none']);
        if (!window.__serveNbStop) requestAnimationFrame(sample);
      };
      window.__serveNbStop = false;
      requestAnimationFrame(sample);
    }""", SERVE_CELL)
    run_cell(page, SERVE_CELL, RERUN_TIMEOUT_MS)
    samples: list[str] = page.evaluate("() => { window.__serveNbStop = true; return window.__serveNbSamples; }")
    widget = app_widget(serve_cell)
    expect(widget).to_contain_text("✓ routing switched", timeout=WIDGET_TIMEOUT_MS)
    expect(widget).to_contain_text("RUNNING", timeout=WIDGET_TIMEOUT_MS)
    assert serve_cell.locator(".serve-nb-app").count() == 1, "the re-run added a second widget"
    kinds = [kind for _, kind in samples]
    assert "stages" in kinds, f"the re-run never showed the widget's stages: {kinds}"
    # JupyterLab clears a cell's output as the cell starts, so its element is a new one (the widget model is the
    # same: the kernel-side tests check that); the widget must be back at once, and stay, rather than leave the
    # output blank for the whole deploy as a widget created after the deploy did (6-9 s).
    blank = [t for t, kind in samples if kind == "none"]
    stretches = sum(1 for i, kind in enumerate(kinds) if kind == "none" and (i == 0 or kinds[i - 1] != "none"))
    assert stretches <= 1, f"the output went blank more than once during the re-run: {kinds}"
    assert not blank or blank[-1] - blank[0] < MAX_BLANK_MS, f"blank for {blank[-1] - blank[0]:.0f} ms: {kinds}"
    save_screenshot(widget, app.screenshots, "rerun_same_widget")


def test_a_failing_cell_shows_its_error_in_the_widget(app: DeployedApp) -> None:
    from playwright.sync_api import expect

    page = app.page
    serve_cell = cell(page, SERVE_CELL)
    broken = (f"%%serve --name {APP} --num-replicas 1\n"
              f"class {DEPLOYMENT}:\n"
              "    def __init__(self):\n"
              "        raise RuntimeError('no weights in the browser test')\n")
    editor = serve_cell.locator(".cm-content").first
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(broken)
    with pytest.raises(AssertionError, match="failed to deploy"):  # the cell raises a short UsageError
        run_cell(page, SERVE_CELL, FAILED_TIMEOUT_MS)
    widget = app_widget(serve_cell)
    expect(widget).to_contain_text("Cell In[", timeout=WIDGET_TIMEOUT_MS)
    prompt = serve_cell.locator(".jp-InputArea .jp-InputPrompt").first.inner_text().strip()  # "[N]:"
    expect(widget).to_contain_text(f"Cell In{prompt.rstrip(':')}, line 3", timeout=WIDGET_TIMEOUT_MS)
    expect(widget).to_contain_text("RuntimeError: no weights in the browser test", timeout=WIDGET_TIMEOUT_MS)
    expect(widget).to_contain_text("keeps serving", timeout=WIDGET_TIMEOUT_MS)  # greeter ran before: still serves
    raised = serve_cell.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    raised_text = " ".join(raised.all_inner_texts())
    assert "failed to deploy" in raised_text and "Traceback" not in raised_text  # the cell's own error: one line
    save_screenshot(widget, app.screenshots, "failed_deploy_in_widget")
