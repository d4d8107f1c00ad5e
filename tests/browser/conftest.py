"""End-to-end browser tests: JupyterLab, headless Chromium (Playwright) and a kernel running ``%%serve``.

One JupyterLab, one kernel and one Ray serve the whole module: starting them is most of the run time on a
small machine, and each test checks a different thing on the same live widget (rendering, the + button,
live request figures), tolerant of the order they run in. The module's teardown runs the notebook's last
cell (``serve.shutdown(); ray.shutdown()``), stops the kernels and JupyterLab by PID, removes the temporary
dirs, and then fails if any process it started is still alive or a raylet was left behind.

Isolation from other Rays: the kernel calls ``ray.init(address="local")`` (a fresh Ray of its own, never one
found through RAY_ADDRESS or a `ray start` record) and serves HTTP on a free port, so the suite works with or
without another Ray on the machine; ``make test`` still runs it in a pytest process of its own, after the
session Ray of the integration tests has stopped, so the two never compete for the machine's two cores.

Skipped, with the reason, only where Playwright or JupyterLab is not importable or no Chromium is found.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Generator, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab_server import LabServer, free_port, raylet_pids, start_lab, stop_lab  # noqa: E402
from check_notebook import NOTEBOOK, SERVE_CELL, SETUP_CELL, SHUTDOWN_CELL, write_notebook  # noqa: E402
from notebook_page import DeployedApp, open_notebook, run_cell, save_screenshot  # noqa: E402

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
RAY_ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")
RAY_START_TIMEOUT_MS = 120_000
DEPLOY_TIMEOUT_MS = 120_000
LEFTOVER_TIMEOUT_S = 30.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--browser-screenshots", metavar="DIR", default=None,
                     help="where the browser tests save their screenshots (default: pytest's temporary dir)")


def find_chromium() -> tuple[str | None, str]:
    """Chromium to drive, or None and why not: $SERVE_NB_CHROMIUM if set (only it), else Debian's
    /usr/bin/chromium or a Chromium/Chrome on PATH."""
    chosen = os.environ.get("SERVE_NB_CHROMIUM")
    if chosen:
        found = shutil.which(chosen)
        return found, f"SERVE_NB_CHROMIUM={chosen} is not an executable"
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found, ""
    return None, ("no Chromium found: install Debian's `chromium` (apt-get install chromium) or set "
                  "SERVE_NB_CHROMIUM to a Chromium/Chrome binary")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item, so a fixture can tell a failed test (to screenshot it)."""
    report: pytest.TestReport = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Chromium's path; skips the browser tests (with what is missing) where they cannot run."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install 'serve_nb[dev]')")
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed (pip install 'serve_nb[dev]')")
    path, why_not = find_chromium()
    if path is None:
        pytest.skip(why_not)
    return path


@pytest.fixture(scope="session")
def screenshot_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``--browser-screenshots DIR`` if given, else a folder under pytest's temporary dir (never the repo)."""
    given = request.config.getoption("--browser-screenshots", default=None)
    if given:
        path = Path(given).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("browser-screenshots")


@pytest.fixture(scope="module")
def deployed(chromium_path: str, screenshot_dir: Path) -> Iterator[DeployedApp]:
    """JupyterLab with the test notebook open in headless Chromium, Ray started and the app deployed through
    the page; afterwards everything stopped, and the machine checked for leftovers."""
    from playwright.sync_api import sync_playwright

    raylets_before = raylet_pids()
    address_file_before = RAY_ADDRESS_FILE.exists()
    work = Path(tempfile.mkdtemp(prefix="serve-nb-browser-"))
    leftovers: list[str] = []
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        root = work / "root"
        root.mkdir()
        write_notebook(root / NOTEBOOK, free_port())
        lab = start_lab(root, work / "jupyter")
        stack.callback(lambda: leftovers.extend(stop_lab(lab)))
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True)
        stack.callback(browser.close)
        page = browser.new_page(viewport={"width": 1280, "height": 1000}, device_scale_factor=2)
        open_notebook(page, lab.notebook_url(NOTEBOOK))
        stack.callback(lambda: shut_ray_down(page, lab, screenshot_dir))
        try:
            run_cell(page, SETUP_CELL, RAY_START_TIMEOUT_MS)
            run_cell(page, SERVE_CELL, DEPLOY_TIMEOUT_MS)
        except Exception:
            save_screenshot(page, screenshot_dir, "setup_failed")
            raise
        yield DeployedApp(page, lab, screenshot_dir)
    assert_nothing_left(leftovers, raylets_before, address_file_before)
    assert not work.exists(), f"temporary dir {work} was not removed"


def shut_ray_down(page: Page, lab: LabServer, screenshots: Path) -> None:
    """Run the notebook's last cell (serve.shutdown(); ray.shutdown()), noting the kernel's processes first
    so the leak check covers the Ray the kernel started even if the cell fails."""
    lab.note_descendants()
    try:
        run_cell(page, SHUTDOWN_CELL, 60_000)
    except Exception:  # the kernel is shut down next anyway; leftovers are then killed and reported
        save_screenshot(page, screenshots, "shutdown_cell_failed")


def assert_nothing_left(killed: list[str], raylets_before: set[int], address_file_before: bool) -> None:
    """Fail if stopping JupyterLab had to kill anything, or if a raylet (or Ray's address record) outlived the
    test that was not there before it. Ray's processes can take a moment to exit after ray.shutdown()."""
    deadline = time.monotonic() + LEFTOVER_TIMEOUT_S
    while (new_raylets := raylet_pids() - raylets_before) and time.monotonic() < deadline:
        time.sleep(0.2)  # polling for a bounded time: the condition is "no new raylet"
    assert not killed, f"processes of the kernel outlived its shutdown and were killed: {killed}"
    assert not new_raylets, f"Ray processes left behind: {sorted(new_raylets)}"
    assert address_file_before or not RAY_ADDRESS_FILE.exists(), f"{RAY_ADDRESS_FILE} was left behind"
