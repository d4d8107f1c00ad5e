"""The live application widget: an anywidget (an ipywidgets ``DOMWidget`` with its own ES module,
``frontend/app.js``) fed by the controller's long-poll.

Updates arrive on serve_nb's background thread through the public ``serve_nb.feed`` (so they keep coming while
other cells run or the kernel idles). Each builds a plain view-model (``views``), turned into JSON for the front
end (``payload``) and into the static snapshot saved with the notebook (``snapshot``). What a person does in the
page (scale, set a count, delete, send a request, retry a deploy) comes back as a message handled by
``handle_command``; actions on the cluster run on a thread, never blocking the kernel.
"""

from __future__ import annotations

import enum
import json
import threading
import time
from typing import Any, Callable

import anywidget
import traitlets

import serve_nb as serve
from serve_nb import api, feed
from serve_nb.exceptions import RayServeException
from serve_nb.notebook import chart, payload, snapshot, views
from serve_nb.notebook.deploy_state import DeployState
from serve_nb.notebook.request_form import form_spec
from serve_nb.notebook.widget_base import (CSS, ESM, Feed, Throttle, close_tree, http_request, new_snapshot_id,
                                           show_with_snapshot, update_snapshot)

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE")
#: CSS classes a browser test (or a user's stylesheet) finds the widgets' parts by; keep these names stable.
APP_CLASS, STATUS_CLASS, NOTICE_CLASS = "serve-nb-app", "serve-nb-status", "serve-nb-notice"
SCALE_UP_CLASS, SCALE_DOWN_CLASS = "serve-nb-scale-up", "serve-nb-scale-down"
DEPLOYMENTS_CLASS, DASHBOARD_CLASS = "serve-nb-deployments", "serve-nb-dashboard"


class Command(enum.Enum):
    """What the front end asks the kernel to do (``{"cmd": <value>, ...}`` messages)."""

    SCALE = "scale"  # step: +1 / -1, on the selected deployment
    SET_REPLICAS = "set_replicas"  # deployment, replicas
    DELETE = "delete"
    REQUEST = "request"  # method, path, body
    CALL = "call"  # method, args (JSON list): through the handle, for apps without HTTP
    RETRY = "retry"
    SET_MODE = "set_mode"  # deployment, adaptive (bool), replicas | min_replicas, max_replicas, target


class AppWidget(anywidget.AnyWidget):
    """One application: status, endpoint, deployments (with their live request figures), replicas, the
    autoscaling chart, a request form and logs (filterable by request id).

    ``ingress`` (optional): the application's ingress deployment, class or function, as the ``%%serve`` magic
    knows it; the request form is generated from its signature (see ``request_form``).
    """

    _esm = ESM
    _css = CSS
    data = traitlets.Dict().tag(sync=True)  # payload.app_payload: everything the page draws
    deploy = traitlets.Dict().tag(sync=True)  # payload.deploy_payload: the deploy as it happens
    form = traitlets.Dict().tag(sync=True)  # request_form.form_spec
    notice = traitlets.Unicode("").tag(sync=True)  # the answer to the last control used
    answer = traitlets.Unicode("").tag(sync=True)  # the request form's last answer
    logs = traitlets.Unicode("").tag(sync=True)  # the Logs tab, filtered by ``log_filter``
    log_filter = traitlets.Unicode("").tag(sync=True)
    scale_target = traitlets.Unicode("").tag(sync=True)  # the deployment + and − act on ("": none can)
    snapshot_id = traitlets.Unicode("").tag(sync=True)
    can_retry = traitlets.Bool(False).tag(sync=True)
    connection = traitlets.Unicode("").tag(sync=True)  # "" while the controller answers, else what to say

    def __init__(self, app_name: str, handle: Any = None, ingress: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app_name = app_name
        self.handle = handle
        self.ingress = ingress
        self.add_class(APP_CLASS)
        self._view: views.AppView | None = None
        self._events: tuple[chart.ChartEvent, ...] = ()
        self._configs: dict[str, dict] = {}
        self._dashboard_url: str | None = None  # looked up with the first update (Ray is running then)
        self._deploy_state: DeployState | None = None
        self._retry: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self.snapshot_id = new_snapshot_id()
        self._snapshot_shown = False
        self._snapshot = Throttle(lambda html: update_snapshot(self.snapshot_id, html))
        self.form = _form(ingress, has_http=True)
        self.logs = views.log_text(())
        self.observe(lambda _: self._show_logs(), names="log_filter")
        self.on_msg(self._on_msg)
        self._feed = Feed(feed.app(app_name), self._on_detail)
        self._controller = Feed.controller(self._on_controller)

    def __repr__(self) -> str:
        return f"AppWidget({getattr(self, 'app_name', '')!r})"  # a text-only front end's view: stable

    @property
    def listening(self) -> bool:
        """Whether the widget still follows the controller (False once closed, replaced or deleted)."""
        return self._feed.active

    @property
    def view(self) -> views.AppView | None:
        return self._view

    @property
    def deploy_state(self) -> DeployState | None:
        """The last deploy state given to ``set_deploy_state`` (None: no deploy shown)."""
        return self._deploy_state

    # -- what the feed and the magic tell it ---------------------------------------------------------------

    def _on_detail(self, detail: Any) -> None:
        if detail is None:  # deleted: nothing more will come
            self.show_gone("deleted")
            return
        now = time.time()
        view = views.app_view(detail, now, self.app_name)
        with self._lock:
            seen = payload.status_event(self._view.status if self._view is not None else None, view.status, now)
            self._events = payload.merge_events(self._events, [*payload.scaling_events(detail),
                                                               *([seen] if seen else [])])
            self._configs = {d.name: d.autoscaling for d in detail.deployments if d.autoscaling is not None}
            if self._view is None:
                self._dashboard_url = _ray_dashboard_url()
            had_http = self._view is not None and self._view.url is not None
            if view.url is None and (self._view is None or had_http) and not self.form.get("handle"):
                self.form = _form(self.ingress, has_http=False)
            self._render(view, now)

    def _on_controller(self, state: str) -> None:
        """The controller stopped or started answering: the page says so over the last state it showed."""
        self.connection = state

    def show_gone(self, what: str = "deleted") -> None:
        """The app is gone (``what``: "deleted", or "shut down" with the rest of Serve): say so and when, disable
        its controls, keep its chart, autoscaling panel and logs for reading, and stop following the feed."""
        self._feed.cancel()
        self._controller.cancel()
        self.connection = ""
        with self._lock:
            if self._view is not None and self._view.deleted_at is not None:
                return  # already shown as gone: keep the first time it was
            now = time.time()
            self._render(views.deleted_view(self._view, self.app_name, now, what), now)
        self._snapshot.flush()

    def set_deploy_state(self, state: DeployState | None) -> None:
        """Show a deploy's progress (its stage lines) or its failure (error, the replicas' last log lines, and
        Retry / Delete); None hides it. Called by the ``%%serve`` magic as the deploy goes."""
        with self._lock:
            self._deploy_state = state
            self.deploy = payload.deploy_payload(state)
            self._publish_snapshot(time.time())

    def set_retry(self, callback: Callable[[], None] | None) -> None:
        """What the Retry button of a failed deploy calls (None: no Retry button)."""
        self._retry = callback
        self.can_retry = callback is not None

    def _render(self, view: views.AppView, now: float) -> None:
        self._view = view
        self.data = payload.app_payload(view, now, self._events, self._configs, self._dashboard_url)
        if self.logs != (text := views.log_text(view.log_lines, self.log_filter)):
            self.logs = text
        choice = view.scale_choice(self.scale_target or None)
        self.scale_target = choice or ""
        self._publish_snapshot(now)

    def _publish_snapshot(self, now: float) -> None:
        if self._snapshot_shown:
            self._snapshot(self.snapshot_html(now))

    def snapshot_html(self, now: float | None = None) -> str:
        """The static HTML of the widget's last state (what a saved notebook shows without a kernel)."""
        return snapshot.app_snapshot(self._view, self.app_name, time.time() if now is None else now,
                                     self._events, self._deploy_state, self.snapshot_id)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)  # anywidget: (data, metadata)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        return {**(data or {}), "text/html": self.snapshot_html()}, metadata

    def _ipython_display_(self, **kwargs: Any) -> None:
        # A new snapshot display id for each showing: a re-run cell shows the same widget again, and an id
        # reused across the clear of its outputs names outputs that are gone (nbclient fails on them).
        self.snapshot_id = new_snapshot_id()
        show_with_snapshot(self, self.snapshot_html(), self.snapshot_id,
                           f"<i>serve_nb application widget for {views.escape(self.app_name)}</i>")
        self._snapshot_shown = True

    def _show_logs(self) -> None:
        """The filter changed: show the kept lines again through it."""
        with self._lock:
            lines = self._view.log_lines if self._view is not None else ()
            self.logs = views.log_text(lines, self.log_filter)

    # -- what the page asks for (on the kernel's main thread when idle; never wait for the cluster there) --

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict):
            self.handle_command(content)

    def handle_command(self, content: dict[str, Any]) -> None:
        """Act on one message from the page; a malformed one becomes the notice, never an exception."""
        try:
            command = Command(content.get("cmd"))
        except ValueError:
            self.notice = f"Unknown command {content.get('cmd')!r}."
            return
        if command is Command.SCALE:
            self.scale(int(content.get("step", 0)))
        elif command is Command.SET_REPLICAS:
            self.set_replicas(str(content.get("deployment", "")), content.get("replicas"))
        elif command is Command.DELETE:
            self.delete()
        elif command is Command.REQUEST:
            self.send_request(str(content.get("method", "GET")), str(content.get("path", "")),
                              str(content.get("body", "")))
        elif command is Command.CALL:
            self.call_handle(str(content.get("method", "__call__")), str(content.get("args", "")))
        elif command is Command.RETRY:
            self.retry()
        elif command is Command.SET_MODE:
            self.set_mode(str(content.get("deployment", "")), bool(content.get("adaptive")), content)

    def scale(self, step: int) -> None:
        """+ / −: one replica more or fewer on the selected deployment (the only one, or the ingress)."""
        view = self._view
        name = view.scale_choice(self.scale_target or None) if view is not None else None
        row = next((d for d in view.deployments if d.name == name), None) if view is not None else None
        if row is None:  # the buttons are disabled then; a click that raced a deletion lands here
            self.notice = "Nothing to scale: the app is gone or every deployment autoscales."
            return
        self.set_replicas(row.name, row.target + step)

    def set_replicas(self, deployment: str, replicas: Any) -> None:
        """The replica count box: a fixed size for ``deployment``; a bad count is said, not sent."""
        if isinstance(replicas, str) and replicas.strip().isdigit():
            replicas = int(replicas)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            self.notice = (f"A fixed-size deployment keeps at least one replica (got {replicas!r}); "
                           "delete the app instead.")
            return
        view = self._view
        if view is None or deployment not in view.scale_options:
            self.notice = f"{deployment!r} cannot be scaled by hand here (gone, or it autoscales)."
            return

        def run() -> None:
            try:
                serve.scale_deployment(self.app_name, deployment, replicas)
            except (ValueError, RayServeException) as exc:
                self.notice = str(exc)
            else:
                self.notice = f"Scaling {deployment} to {replicas}."

        threading.Thread(target=run, daemon=True).start()

    def set_mode(self, deployment: str, adaptive: bool, settings: dict[str, Any]) -> None:
        """The Manual/Adaptive switch: autoscale ``deployment`` within min/max at a target of ongoing requests per
        replica, or give it a fixed size (``replicas``). Bad values are said here; the controller checks the rest."""
        view = self._view
        if view is None or not view.controls_enabled or deployment not in {d.name for d in view.deployments}:
            self.notice = f"{deployment!r} cannot be changed here (gone, or not part of this app)."
            return
        try:
            if adaptive:
                auto: dict[str, Any] | None = {
                    **self._configs.get(deployment, {}),
                    "min_replicas": int(settings["min_replicas"]), "max_replicas": int(settings["max_replicas"]),
                    "target_ongoing_requests": float(settings["target_ongoing_requests"])}
                replicas = None
            else:
                auto, replicas = None, int(settings["replicas"])
        except (KeyError, TypeError, ValueError) as exc:
            self.notice = (f"Adaptive needs whole min and max replicas and a target of ongoing requests; manual needs "
                           f"a whole replica count ({type(exc).__name__}: {exc}).")
            return

        def run() -> None:
            try:
                serve.set_autoscaling(self.app_name, deployment, auto, replicas)
            except (ValueError, RayServeException) as exc:
                self.notice = str(exc)
            else:
                self.notice = (f"{deployment} now autoscales ({auto['min_replicas']}–{auto['max_replicas']} replicas)."
                               if auto is not None else f"{deployment} now has a fixed size of {replicas}.")

        threading.Thread(target=run, daemon=True).start()

    def delete(self) -> None:
        """Delete the application (the page asked and confirmed)."""
        if self._view is not None and not self._view.controls_enabled:
            self.notice = "The application is already gone."
            return
        self.notice = f"Deleting {self.app_name}…"
        threading.Thread(target=lambda: serve.delete(self.app_name, _blocking=False), daemon=True).start()

    def retry(self) -> None:
        """Run the failed deploy again, as ``set_retry`` said how."""
        if self._retry is None:
            self.notice = "Nothing to retry: re-run the cell."
            return
        try:
            self._retry()
        except Exception as exc:  # the user's own code failed again: the deploy state shows it, say it too
            self.notice = f"Retry failed: {exc}"

    def send_request(self, method: str, path: str, body: str) -> None:
        """The request form: ``method`` on the endpoint plus ``path``, with a JSON ``body``; the answer shows."""
        view = self._view
        if view is None or view.url is None:
            self.answer = "This application has no HTTP route; use the handle-call form."
            return
        if method not in HTTP_METHODS:
            self.answer = f"Unknown method {method!r}: use one of {', '.join(HTTP_METHODS)}."
            return
        url = views.request_url(view.url, path)
        body = body.strip()
        if body:
            try:
                json.loads(body)
            except ValueError as exc:
                self.answer = f"The body is not valid JSON: {exc}"
                return

        def run() -> None:
            start = time.perf_counter()
            try:
                status, data, ctype = http_request(method, url, body)
            except OSError as err:
                self.answer = f"Request failed: {err}"
                return
            self.answer = f"{method} {url}\n{views.format_response(status, data, time.perf_counter() - start, ctype)}"

        self.answer = f"{method} {url} ..."
        threading.Thread(target=run, daemon=True).start()

    def call_handle(self, method: str, args: str) -> None:
        """The handle-call form (apps without HTTP): ``handle.<method>.remote(*args)`` with JSON ``args``."""
        if self.handle is None:
            self.answer = "No handle: this widget was not made by %%serve; use serve.get_app_handle(name)."
            return
        try:
            parsed = json.loads(args) if args.strip() else []
        except ValueError as exc:
            self.answer = f"The arguments are not valid JSON: {exc}"
            return
        call_args = parsed if isinstance(parsed, list) else [parsed]
        handle = self.handle.options(method_name=method) if method and method != "__call__" else self.handle

        def run() -> None:
            start = time.perf_counter()
            try:
                result = handle.remote(*call_args).result()
            except Exception as exc:  # the user's method raised: that is its answer
                self.answer = f"{method} raised {type(exc).__name__}: {exc}"
                return
            self.answer = f"{method} in {(time.perf_counter() - start) * 1000:.1f} ms\n{result!r}"

        self.answer = f"calling {method} ..."
        threading.Thread(target=run, daemon=True).start()

    def close(self) -> None:
        """Stop following the feed and close the whole model tree (the layout included)."""
        self._feed.cancel()
        self._controller.cancel()
        self._snapshot.stop()
        close_tree(self)
        super().close()


def _form(ingress: Any, has_http: bool) -> dict[str, Any]:
    """The request form for ``ingress``; the generic one if its signature cannot be read (a form is a help, never
    a reason for the widget to fail)."""
    try:
        return form_spec(ingress, has_http)
    except Exception:
        return form_spec(None, has_http)


def _ray_dashboard_url() -> str | None:
    """Ray's dashboard link for the header; None (no link) when there is none or it cannot be found."""
    try:
        return api.ray_dashboard_url()
    except Exception:  # never let a link break the widget
        return None
