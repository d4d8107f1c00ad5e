"""One ``%%serve`` deploy as its widget shows it: progress while it runs, the failure kept if it fails.

The cell's thread deploys (``serve.run`` without waiting, then ``wait_for_app``), while the app's feed
(serve_nb's background thread) moves the stages on: the widget updates while the cell still runs, and its
output is never blank. A failure leaves the widget showing the user's error as their cell ("Cell In[N], line
L"), the replicas' last log lines and a Retry button; a failed first deploy is removed unless kept.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import serve_nb as serve
from serve_nb import feed
from serve_nb import api
from serve_nb.core.cell_traceback import CellSource, cell_traceback, short_error
from serve_nb.exceptions import DeployError, RayServeException
from serve_nb.notebook import deploy_progress as progress
from serve_nb.notebook.deploy_state import DeployFailure, DeployState
from serve_nb.types import ApplicationStatus

if TYPE_CHECKING:
    from serve_nb.notebook.widgets import AppWidget

#: How long a failure waits for the feed's last word on the app (its log lines) before showing what it has.
LAST_DETAIL_TIMEOUT_S = 2.0
#: How long Retry waits for the feed to carry the redeployed app before it swaps in a new widget anyway.
FRESH_DETAIL_TIMEOUT_S = 10.0
_WATCHES: dict[int, _Watch] = {}  # --no-wait deploys the feed still follows, by id(widget)


class DeployFailed(Exception):
    """The deploy failed and the widget shows why; ``summary`` is the one line the cell raises with."""

    def __init__(self, summary: str, failure: DeployFailure) -> None:
        super().__init__(summary)
        self.summary = summary
        self.failure = failure


@dataclass(frozen=True)
class DeployRequest:
    """Everything a deploy (and its Retry) needs: ``build`` binds the app anew each time."""

    app_name: str
    build: Callable[[], Any]
    route_prefix: str | None
    wait: bool
    keep_failed: bool
    locate: Callable[[str], CellSource | None]
    #: The widget Retry deploys on, given the failed one: the same while it still follows its app; a new one
    #: in its place (the magic swaps it into the cell's output) once the failed app was removed.
    widget_for_retry: Callable[[AppWidget], AppWidget] = lambda widget: widget


class _Watch:
    """The deploy's state, moved on by the cell's thread (its own steps) and the feed's (the app's detail).

    With ``settle`` (``--no-wait``: nobody waits in the cell) the watch itself ends the deploy when the app runs
    or fails, and stops following it."""

    def __init__(self, widget: AppWidget, state: DeployState, request: DeployRequest | None = None) -> None:
        self.widget = widget
        self.settle = request
        self._lock = threading.Lock()
        self.state = state
        self.last_detail: Any = None
        self.fresh = threading.Event()  # set once the feed delivered a detail of this deploy
        self._sub: Any = None
        widget.set_deploy_state(state)

    def move(self, step: Callable[[DeployState], DeployState]) -> DeployState:
        with self._lock:
            new = step(self.state)
            if new != self.state:
                self.state = new
                self.widget.set_deploy_state(new)
            return new

    def follow(self, app_name: str) -> None:
        try:
            self._sub = feed.subscribe(feed.app(app_name), self._on_detail)
        except RayServeException:
            self._sub = None

    def _on_detail(self, detail: Any) -> None:
        if detail is not None:
            self.last_detail = detail
        state = self.move(lambda s: progress.progress(s, detail))
        if detail is None or not state.since or detail.deployed_at < state.since:
            return
        self.fresh.set()
        if self.settle is not None and detail.status == ApplicationStatus.RUNNING:
            self.move(progress.finished)
            self.stop()
        elif self.settle is not None and detail.status == ApplicationStatus.DEPLOY_FAILED:
            name = self.settle.app_name
            failure = DeployFailure(cell_traceback(detail.message, self.settle.locate), progress.log_tail(detail), True,
                                    progress.failure_note(was_serving=False, kept=True, app_name=name))
            self.move(lambda s: progress.failed(s, failure))
            self.stop()

    def stop(self) -> None:
        if _WATCHES.get(id(self.widget)) is self:
            del _WATCHES[id(self.widget)]
        if self._sub is not None:
            self._sub.cancel()
            self._sub = None


def was_serving(app_name: str) -> bool:
    """Whether the app ran before this deploy: then a failed update leaves the old version serving."""
    try:
        app = serve.status().applications.get(app_name)
    except RayServeException:
        return False
    return app is not None and app.status in (ApplicationStatus.RUNNING, ApplicationStatus.UNHEALTHY)


def deploy(request: DeployRequest, widget: AppWidget,
           swap: Callable[[AppWidget], AppWidget] | None = None) -> Any:
    """Deploy ``request`` showing its stages on ``widget``; returns the handle. Raises DeployFailed (after the
    widget shows the failure and offers Retry) when the app fails to start.

    ``swap`` (Retry's): once the feed has the redeployed app, the widget to go on with (a new one, when the
    old one stopped following an app that was removed: created earlier, it would see only the removal)."""
    widget.set_retry(None)
    serving_before = was_serving(request.app_name)
    previous = _WATCHES.pop(id(widget), None)
    if previous is not None:  # a --no-wait deploy still followed: this one supersedes it
        previous.stop()
    watch = _Watch(widget, progress.initial_state(http=request.route_prefix is not None),
                   None if request.wait else request)
    try:
        handle = serve.run(request.build(), name=request.app_name, route_prefix=request.route_prefix,
                           _blocking=False)
        app = serve.status().applications.get(request.app_name)
        watch.move(lambda s: progress.shipped(s, app.last_deployed_time_s if app is not None else 0.0))
        watch.follow(request.app_name)
        if swap is not None:
            watch.fresh.wait(FRESH_DETAIL_TIMEOUT_S)
            watch.widget = swap(watch.widget)
            watch.widget.set_deploy_state(watch.state)
        if not request.wait:
            _WATCHES[id(widget)] = watch
            return handle  # the feed moves the stages on, and ends the deploy (see _Watch)
        try:
            api.wait_for_app(request.app_name, request.route_prefix)
        except DeployError as exc:
            raise _fail(request, watch, str(exc), serving_before) from None
        watch.move(progress.finished)
        return handle
    finally:
        if request.wait:
            watch.stop()


def _fail(request: DeployRequest, watch: _Watch, message: str, serving_before: bool) -> DeployFailed:
    """Show the failure on the widget, clean up what a failed first deploy left, offer Retry."""
    name = request.app_name
    app = serve.status().applications.get(name)
    error = cell_traceback(app.message if app is not None and app.message else message, request.locate)
    try:  # the controller's latest: it has the failed replicas' lines, which may postdate the watch's last value
        detail = feed.get(feed.app(name), timeout_s=LAST_DETAIL_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - the log lines are a bonus; the error is shown without them
        detail = watch.last_detail
    kept = serving_before or request.keep_failed
    watch.stop()  # the deletion below is this deploy's own doing, not progress
    if not kept:
        serve.delete(name)
    failure = DeployFailure(error, progress.log_tail(detail), kept,
                            progress.failure_note(was_serving=serving_before, kept=kept, app_name=name))
    watch.move(lambda s: progress.failed(s, failure))
    widget = watch.widget
    widget.set_retry(lambda: retry(request, widget))
    return DeployFailed(f"'{name}' failed to deploy: {short_error(error)}", failure)


def retry(request: DeployRequest, widget: AppWidget) -> None:
    """Retry's callback: the same deploy again, on a thread (a button callback runs on the kernel's main
    thread, which must not wait for the cluster); the widget shows its stages and, if it fails again, why."""

    def run() -> None:
        try:
            deploy(request, widget, swap=request.widget_for_retry)
        except DeployFailed:
            pass  # shown on the widget
        except (RayServeException, ValueError, TypeError) as exc:
            failure = DeployFailure(str(exc), (), False, "Retry could not deploy; fix the cell and run it again.")
            widget.set_deploy_state(progress.failed(widget.deploy_state or DeployState(), failure))
            widget.set_retry(lambda: retry(request, widget))

    threading.Thread(target=run, daemon=True, name=f"serve_nb-retry-{request.app_name}").start()
