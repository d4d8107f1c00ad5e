"""Driving a notebook in JupyterLab through the page, as a person would, and reading the app widget's DOM.

Cells run by selecting them and clicking the notebook toolbar's Run button (the Ctrl+Enter shortcut did not
reach JupyterLab from headless Chromium here); a cell has finished when its prompt shows an execution
count (``[3]:``; ``[*]:`` while queued or running, ``[ ]:`` before). Every wait is a page condition with a
bounded timeout (``wait_for``/``wait_for_function``/``expect``), never a sleep.

Widget elements are found by the serve_nb CSS classes when the widgets carry them (``serve-nb-app``,
``serve-nb-scale-up``), else by structure and text (the outer ``.widget-vbox`` of the cell's output, the
button whose text is "+", the table whose header names "running"), so the checks hold across a widget
restyle that keeps what a person sees.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

    from lab_server import LabServer

KERNEL_IDLE_TIMEOUT_MS = 60_000
RUN_BUTTON = '.jp-NotebookPanel-toolbar [data-command="notebook:run-cell-and-select-next"]'

# The rows of the widget's deployments table (the table whose header has a "running" column), each as
# {header: cell text}; null while the table is not there yet.
_READ_DEPLOYMENT_ROWS = """
(root) => {
  for (const table of root.querySelectorAll('table')) {
    const rows = [...table.querySelectorAll('tr')];
    if (rows.length === 0) continue;
    const head = [...rows[0].children].map((c) => c.textContent.trim());
    if (!head.some((h) => h.startsWith('running'))) continue;
    return rows.slice(1).map((r) => Object.fromEntries(
      [...r.children].map((c, i) => [head[i] || String(i), c.textContent.trim()])));
  }
  return null;
}
"""

# True once the row of `deployment` has, in the first column whose header starts with `column`, a value
# matching `pattern` and different from `unlike` (when given).
_ROW_MATCHES = f"""
({{root, deployment, column, pattern, unlike}}) => {{
  const rows = ({_READ_DEPLOYMENT_ROWS})(root);
  if (!rows) return false;
  const row = rows.find((r) => r.deployment === deployment);
  if (!row) return false;
  const key = Object.keys(row).find((k) => k.startsWith(column));
  if (key === undefined) return false;
  const value = row[key];
  return new RegExp(pattern).test(value) && (unlike === null || value !== unlike);
}}
"""


def open_notebook(page: Page, url: str) -> None:
    """Open a notebook and wait until its cells are shown and its kernel is idle."""
    page.goto(url)
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=KERNEL_IDLE_TIMEOUT_MS)
    # The status bar's kernel item goes "No Kernel | Initializing", "Connecting", then "Idle" once the kernel
    # answers; a Run clicked before that is lost (the toolbar's execution indicator says "idle" from the start).
    from playwright.sync_api import expect

    expect(page.locator("#jp-main-statusbar")).to_contain_text(re.compile(r"\|\s*Idle"), timeout=KERNEL_IDLE_TIMEOUT_MS)


def cell(page: Page, index: int) -> Locator:
    return page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(index)


def run_cell(page: Page, index: int, timeout_ms: float) -> Locator:
    """Run one code cell through the page and wait for it to finish; the cell's locator.

    Raises AssertionError with the cell's output when it ended in a Python error, so a failing kernel-side
    step reads as what went wrong in the notebook.
    """
    target = cell(page, index)
    target.locator(".jp-InputPrompt").first.click()
    page.locator(RUN_BUTTON).first.click()
    prompt = target.locator(".jp-InputArea .jp-InputPrompt").first
    page.wait_for_function(
        "(el) => /^\\[\\d+\\]:?$/.test(el.textContent.trim())", arg=prompt.element_handle(), timeout=timeout_ms,
        polling=100)
    errors = target.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    error_text = " ".join(errors.all_inner_texts())
    if "Traceback" in error_text or "Error:" in error_text:
        raise AssertionError(f"cell {index} failed in the kernel:\n{output_text(target)}")
    return target


def output_text(target: Locator) -> str:
    """Everything a cell's output area shows as text."""
    return "\n".join(target.locator(".jp-OutputArea").all_inner_texts())


def app_widget(target: Locator) -> Locator:
    """The application widget a ``%%serve`` cell shows: its outermost widget box."""
    outputs = target.locator(".jp-OutputArea-output")
    return outputs.locator(".serve-nb-app").or_(outputs.locator(".jupyter-widgets.widget-vbox")).first


def scale_up_button(widget: Locator) -> Locator:
    return widget.locator(".serve-nb-scale-up").or_(widget.get_by_role("button", name="+", exact=True)).first


def scale_target_select(widget: Locator) -> Locator:
    """The ``<select>`` of the widget's "scale" dropdown (which deployment + and − act on)."""
    return widget.locator("select.serve-nb-scale-target").first


def replica_count_box(widget: Locator, deployment: str) -> tuple[Locator, Locator]:
    """The number box and its "set" button in ``deployment``'s row of the deployments table."""
    row = widget.locator(".serve-nb-deployments tr").filter(has=widget.page.get_by_text(deployment, exact=True))
    return row.locator("input.serve-nb-replica-count").first, row.locator("button.serve-nb-set-replicas").first


def chart_line(widget: Locator, series: str) -> str:
    """The ``points`` of the chart's step line for ``series`` ("load" or "replicas"); "" while not drawn."""
    line = widget.locator(f".serve-nb-chart polyline.serve-nb-{series}")
    return line.first.get_attribute("points") or "" if line.count() else ""


def save_notebook(page: Page) -> None:
    """Save the open notebook through the toolbar's Save button (the caller waits for the file's content)."""
    page.locator('.jp-NotebookPanel-toolbar [data-command="docmanager:save"]').first.click()


def deployment_rows(widget: Locator) -> list[dict[str, str]] | None:
    """The deployments table as the page shows it now: one {header: text} per deployment."""
    rows: list[dict[str, str]] | None = widget.evaluate(_READ_DEPLOYMENT_ROWS)
    return rows


def wait_for_deployment_cell(page: Page, widget: Locator, deployment: str, column: str, pattern: str,
                             timeout_ms: float, unlike: str | None = None) -> str:
    """Wait until the page's deployments table shows, for ``deployment``, a ``column`` value matching
    ``pattern`` (and other than ``unlike``); that value. On timeout, an AssertionError with the table as it
    was, so the failure says what the page showed instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    args: dict[str, Any] = {"root": widget.element_handle(), "deployment": deployment, "column": column,
                            "pattern": pattern, "unlike": unlike}
    try:
        page.wait_for_function(_ROW_MATCHES, arg=args, timeout=timeout_ms, polling=100)
    except PlaywrightTimeout:
        raise AssertionError(
            f"within {timeout_ms / 1000:g} s the page never showed {deployment}'s {column!r} matching {pattern!r}"
            f"{f' (other than {unlike!r})' if unlike is not None else ''}; the table showed: "
            f"{deployment_rows(widget)}") from None
    value = column_value(widget, deployment, column)
    assert value is not None
    return value


def column_value(widget: Locator, deployment: str, column: str) -> str | None:
    """``deployment``'s value in the first column whose header starts with ``column`` (None if not shown)."""
    for row in deployment_rows(widget) or []:
        if row.get("deployment") == deployment:
            return next((v for k, v in row.items() if k.startswith(column)), None)
    return None


def save_screenshot(target: Page | Locator, directory: Path, name: str) -> Path:
    """Save a PNG of the page or of one element; its path."""
    path = directory / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"
    target.screenshot(path=str(path))
    return path


@dataclass
class DeployedApp:
    """The notebook open in Chromium, its ``%%serve`` cell run: what each test drives and inspects."""

    page: Page
    lab: LabServer
    screenshots: Path

    def readme_screenshot_dirs(self) -> list[Path]:
        """Where the README's widget screenshot goes: the screenshot folder, and $SERVE_NB_SCREENSHOT_DIR."""
        extra = os.environ.get("SERVE_NB_SCREENSHOT_DIR")
        return [self.screenshots, *([Path(extra)] if extra else [])]
