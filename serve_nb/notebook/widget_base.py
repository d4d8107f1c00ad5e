"""What both live widgets share: the feed subscription, closing a widget's whole model tree, the front end's
files, the snapshot output next to each widget, and the plain-HTTP request the request form sends."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
import uuid
import weakref
from pathlib import Path
from typing import Any, Callable

import ipywidgets as widgets

from serve_nb import feed
from serve_nb.exceptions import ControllerUnreachableError, RayServeException

FRONTEND = Path(__file__).resolve().parent / "frontend"
#: The ES module and stylesheet, read once (plain strings, not anywidget's file watchers, which would keep
#: every widget ever made alive through their change signal).
ESM = (FRONTEND / "app.js").read_text(encoding="utf-8")
CSS = (FRONTEND / "app.css").read_text(encoding="utf-8")
REQUEST_TIMEOUT_S = 60.0  # the request form gives up after this long
#: The saved snapshot is refreshed at most this often (each refresh is one message to the front end).
SNAPSHOT_INTERVAL_S = 2.0


def close_tree(root: widgets.Widget) -> None:
    """Close every widget model ``root`` holds (children, layouts, styles, at any depth), but not ``root`` itself:
    its own ``close`` calls this first. ``Widget.close`` closes one model only; a layout left open would stay
    live in the kernel and in the front end, and each re-run of a cell would leak it again. Closing twice is
    harmless."""
    seen: set[int] = {id(root)}
    stack: list[widgets.Widget] = [root]
    found: list[widgets.Widget] = []
    while stack:
        widget = stack.pop()
        for name in widget.keys:
            value = getattr(widget, name, None)
            for item in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(item, widgets.Widget) and id(item) not in seen:
                    seen.add(id(item))
                    found.append(item)
                    stack.append(item)
    for widget in found:
        widget.close()


def http_request(method: str, url: str, body: str) -> tuple[int, bytes, str]:
    """Send the request form's request as any HTTP client would: (status, body, content type).

    Plain HTTP on purpose: the form shows what the endpoint answers, through the proxy, exactly as ``curl``
    would. An HTTP error status is an answer, not a failure; OSError means no answer.
    """
    request = urllib.request.Request(url, data=body.encode() if body else None, method=method,
                                     headers={"content-type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as resp:
            return resp.status, resp.read(), resp.headers.get("content-type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("content-type", "")


class Feed:
    """A widget's subscription to one feed key; callbacks land on the background thread.

    Inactive (rather than raising) when serve_nb is not running, so a widget can still be shown.
    """

    def __init__(self, key: str, callback: Callable[[Any], None]) -> None:
        self._sub: Any = _subscribed(lambda: feed.subscribe(key, callback))

    @classmethod
    def controller(cls, callback: Callable[[str], None]) -> "Feed":
        """Follow whether the controller answers: ``callback`` gets "" while it does, else
        ``ControllerUnreachableError.STATE`` (what a view shows, keeping its last state)."""
        watch = cls.__new__(cls)
        watch._sub = _subscribed(lambda: feed.watch_controller(
            lambda reachable: callback("" if reachable else ControllerUnreachableError.STATE)))
        return watch

    @property
    def active(self) -> bool:
        return self._sub is not None

    def cancel(self) -> None:
        if self._sub is not None:
            self._sub.cancel()
            self._sub = None


def _subscribed(subscribe: Callable[[], Any]) -> Any:
    try:
        return subscribe()
    except RayServeException:
        return None


class Throttle:
    """Calls ``send`` with the latest value at most once per ``interval_s``: at once when the last call is old
    enough, else once the interval has passed (with whatever value is latest then). Used for the snapshot, which
    changes with every feed update but need only be fresh within seconds."""

    def __init__(self, send: Callable[[str], None], interval_s: float = SNAPSHOT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic,
                 schedule: Callable[[float, Callable[[], None]], Any] | None = None) -> None:
        self._send = send
        self._interval = interval_s
        self._clock = clock
        self._schedule = schedule or _timer
        self._lock = threading.Lock()
        self._last: float | None = None
        self._pending: str | None = None
        self._scheduled = False
        self._stopped = False

    def __call__(self, value: str) -> None:
        with self._lock:
            if self._stopped:
                return
            now = self._clock()
            if self._scheduled:
                self._pending = value
                return
            if self._last is None or now - self._last >= self._interval:
                self._last = now
                send_now = True
            else:
                self._pending, self._scheduled, send_now = value, True, False
                self._schedule(self._interval - (now - self._last), self._flush)
        if send_now:
            self._send(value)

    def _flush(self) -> None:
        with self._lock:
            value, self._pending, self._scheduled = self._pending, None, False
            if value is None or self._stopped:
                return
            self._last = self._clock()
        self._send(value)

    def flush(self) -> None:
        """Send what is pending now (a final state must not wait)."""
        self._flush()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True


def _timer(delay_s: float, action: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(delay_s, action)
    timer.daemon = True
    timer.start()
    return timer


def new_snapshot_id() -> str:
    return f"serve-nb-snapshot-{uuid.uuid4().hex[:12]}"


def show_with_snapshot(widget: widgets.DOMWidget, snapshot_html: str, snapshot_id: str, note: str) -> None:
    """Display ``widget`` and, as the next output, its snapshot (display id ``snapshot_id``, so it can be
    refreshed in place with ``update_snapshot``).

    Why two outputs: JupyterLab shows "Error displaying widget: model not found" for a widget output whose
    model is gone (a saved notebook reopened), never its ``text/html`` alternative; and refreshing the widget's
    own output would re-create its live view. The live front end hides the snapshot output next to it; where no
    live widget runs (reopened notebook, GitHub, nbviewer) the snapshot is what shows. The widget's own output
    carries a one-line ``text/html`` (``note``) so such viewers do not show the snapshot twice."""
    from IPython.display import display

    bundle = widget._repr_mimebundle_()
    data = dict(bundle[0] if isinstance(bundle, tuple) else bundle or {})
    data["text/html"] = note
    display(data, raw=True)
    display({"text/html": snapshot_html}, raw=True, display_id=snapshot_id)
    throttle = getattr(widget, "_snapshot", None)
    if isinstance(throttle, Throttle):
        CELL_SNAPSHOTS.bind(throttle)


class _CellSnapshots:
    """Stops a cell's snapshot refreshes when that cell runs again.

    Re-running a cell clears its outputs at once, while its old widget lives on until the new deploy replaces
    it; a refresh of the old snapshot in that gap names an output that is gone (nbclient then fails with an
    IndexError). IPython's ``pre_run_cell`` says which cell starts (``info.cell_id``). Some runners (nbclient,
    nbval) send no cell id: then any cell may be a re-run, so a widget's snapshot is refreshed only until the
    next cell starts (JupyterLab sends cell ids: there it stays fresh until its own cell runs again)."""

    def __init__(self) -> None:
        self.current: str | None = None
        self._bound: dict[str | None, list[weakref.ref[Throttle]]] = {}
        self._shell: Any = None

    def bind(self, throttle: Throttle) -> None:
        """Tie ``throttle`` to the cell running now (the one displaying its widget)."""
        self._hook()
        self._bound.setdefault(self.current, []).append(weakref.ref(throttle))

    def _hook(self) -> None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython is a dependency
            return
        shell = get_ipython()
        if shell is not None and shell is not self._shell:
            self._shell = shell
            shell.events.register("pre_run_cell", self.pre_run_cell)
            self.current = None

    def pre_run_cell(self, info: Any) -> None:
        self.current = getattr(info, "cell_id", None)
        stale = self._bound.pop(self.current, []) + (self._bound.pop(None, []) if self.current is None else [])
        for ref in stale:
            throttle = ref()
            if throttle is not None:
                throttle.stop()


CELL_SNAPSHOTS = _CellSnapshots()


def update_snapshot(snapshot_id: str, snapshot_html: str) -> None:
    from IPython.display import update_display

    update_display({"text/html": snapshot_html}, raw=True, display_id=snapshot_id)
