"""Live ipywidgets: an application widget and a dashboard, fed by the controller's long-poll.

Updates arrive on serve_nb's background thread through the public ``serve_nb.feed`` (so they keep
coming while other cells run or the kernel idles). Each update builds a plain view-model
(``serve_nb.notebook.views``) and copies into traits only the parts that changed. Buttons act
through the public API (``serve.scale_deployment``, ``serve.delete``) or, for the request panel,
plain HTTP to the app's endpoint, always on a thread: they never block the kernel waiting for the
cluster.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable

import ipywidgets as widgets

import serve_nb as serve
from serve_nb import feed
from serve_nb.exceptions import RayServeException
from serve_nb.notebook import views
from serve_nb.notebook.deploy_progress import state_html
from serve_nb.notebook.deploy_state import DeployState

_CSS = "font-family: var(--jp-code-font-family, monospace); font-size: 12px;"
HTTP_METHODS = ("GET", "POST", "PUT", "DELETE")
REQUEST_TIMEOUT_S = 60.0  # the request panel gives up after this long
#: CSS classes a browser test (or a user's stylesheet) finds the widgets' parts by; keep these names stable.
APP_CLASS, STATUS_CLASS, NOTICE_CLASS = "serve-nb-app", "serve-nb-status", "serve-nb-notice"
SCALE_UP_CLASS, SCALE_DOWN_CLASS = "serve-nb-scale-up", "serve-nb-scale-down"
DEPLOYMENTS_CLASS, DASHBOARD_CLASS = "serve-nb-deployments", "serve-nb-dashboard"


def _full_width(**kwargs: Any) -> widgets.Layout:
    """A layout as wide as its box and no wider: ipywidgets adds a 2px side margin to each widget, so a plain
    ``width: 100%`` sticks out by 4px and puts a horizontal scrollbar under the whole output."""
    return widgets.Layout(width="100%", margin="2px 0px", **kwargs)


def _root_layout() -> widgets.Layout:
    """The outer box: the output's width, clipping rather than scrolling what a table makes too wide."""
    return widgets.Layout(width="100%", overflow="hidden")


def close_tree(root: widgets.Widget) -> None:
    """Close every widget model ``root`` holds (children, layouts, styles, at any depth), but not ``root`` itself:
    its own ``close`` calls this first. ``Widget.close`` closes one model only: closing a box alone leaves its
    whole tree live, in the kernel and in the front end, and each re-run of a cell would leak it again. Closing
    twice is harmless."""
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


def _badge(text: str, color: str) -> str:
    return (f'<span style="background:{color};color:white;border-radius:10px;padding:1px 8px;'
            f'font-size:11px;font-weight:600">{views.escape(text)}</span>')


def _table(headers: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<i>none</i>"
    head = "".join(f'<th style="text-align:left;padding:2px 10px 2px 0">{h}</th>' for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td style="padding:1px 10px 1px 0">{c}</td>' for c in row) + "</tr>" for row in rows
    )
    # A table wider than the output scrolls on its own, rather than the whole widget under it.
    return (f'<div style="overflow-x:auto"><table style="border-collapse:collapse;{_CSS}"><tr>{head}</tr>{body}'
            f'</table></div>')


def _http_request(method: str, url: str, body: str) -> tuple[int, bytes, str]:
    """Send the request panel's request as any HTTP client would: (status, body, content type).

    Plain HTTP on purpose: the panel shows what the endpoint answers, through the proxy, exactly
    as ``curl`` would. An HTTP error status is an answer, not a failure; OSError means no answer.
    """
    request = urllib.request.Request(url, data=body.encode() if body else None, method=method,
                                     headers={"content-type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as resp:
            return resp.status, resp.read(), resp.headers.get("content-type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("content-type", "")


class _Feed:
    """A widget's subscription to one feed key; callbacks land on the background thread.

    Inactive (rather than raising) when serve_nb is not running, so a widget can still be shown.
    """

    def __init__(self, key: str, callback: Callable[[Any], None]) -> None:
        try:
            self._sub: Any = feed.subscribe(key, callback)
        except RayServeException:
            self._sub = None

    @property
    def active(self) -> bool:
        return self._sub is not None

    def cancel(self) -> None:
        if self._sub is not None:
            self._sub.cancel()
            self._sub = None


class AppWidget(widgets.VBox):
    """One application: status, endpoint, deployments (with their live request figures), replicas,
    autoscaling, requests, logs (filterable by request id)."""

    def __init__(self, app_name: str, handle: Any = None, *, ingress: Any = None, **kwargs: Any) -> None:
        self.app_name = app_name
        self.handle = handle
        self.ingress = ingress  # the deployed Deployment, class or function (for a request form from its signature)
        self._deploy_state: DeployState | None = None
        self._deploy = widgets.HTML()  # the deploy's stages, or its failure (see set_deploy_state)
        self._retry = widgets.Button(description="Retry", icon="redo", layout=widgets.Layout(display="none"))
        self._retry_callback: Callable[[], None] | None = None
        self._retry.on_click(lambda _: self._retry_callback() if self._retry_callback is not None else None)
        self._view: views.AppView | None = None
        self._lock = threading.Lock()
        self._header = widgets.HTML()
        self._header.add_class(STATUS_CLASS)
        self._curl = widgets.Text(description="curl", layout=_full_width())
        self._deployments = widgets.HTML()
        self._deployments.add_class(DEPLOYMENTS_CLASS)
        self._replicas = widgets.HTML()
        self._autoscaling = widgets.HTML()
        self._chart = widgets.HTML()
        self._logs = widgets.Textarea(layout=_full_width(height="180px"), disabled=True)
        self._log_filter = widgets.Text(description="request id", placeholder="show only this request's lines",
                                        layout=widgets.Layout(width="420px"))
        self._log_filter.observe(lambda _: self._show_logs(), names="value")
        # Filled from the first detail (``_show_controls``); until then there is nothing to act on.
        self._scale_target = widgets.Dropdown(description="scale", layout=widgets.Layout(width="220px"),
                                              disabled=True)
        self._minus = widgets.Button(description="−", layout=widgets.Layout(width="36px"),
                                     tooltip="one replica fewer", disabled=True)
        self._plus = widgets.Button(description="+", layout=widgets.Layout(width="36px"),
                                    tooltip="one replica more", disabled=True)
        self._minus.add_class(SCALE_DOWN_CLASS)
        self._plus.add_class(SCALE_UP_CLASS)
        self._minus.on_click(lambda _: self._scale(-1))
        self._plus.on_click(lambda _: self._scale(+1))
        self._delete = widgets.Button(description="Delete app", button_style="danger", icon="trash", disabled=True)
        self._confirm = widgets.HBox([], layout=widgets.Layout(display="none"))
        self._delete.on_click(lambda _: self._ask_delete())
        self._notice = widgets.HTML()
        self._notice.add_class(NOTICE_CLASS)
        self._method = widgets.Dropdown(options=list(HTTP_METHODS), value=HTTP_METHODS[0],
                                        layout=widgets.Layout(width="90px"))
        self._path = widgets.Text(placeholder="/sub/path?x=1", layout=widgets.Layout(width="260px"))
        self._body = widgets.Textarea(placeholder='JSON body, e.g. {"text": "hello"}', layout=_full_width(height="60px"))
        self._send_button = widgets.Button(description="Send", button_style="primary", icon="paper-plane", disabled=True)
        self._send_button.on_click(lambda _: self._send_request())
        self._answer = widgets.Textarea(layout=_full_width(height="120px"), disabled=True)
        tabs = widgets.Tab(children=[
            widgets.VBox([self._deployments, self._replicas]),
            widgets.VBox([self._autoscaling, self._chart]),
            widgets.VBox([widgets.HBox([self._method, self._path, self._send_button]), self._body, self._answer]),
            widgets.VBox([self._log_filter, self._logs]),
        ])
        for i, title in enumerate(["Replicas", "Autoscaling", "Request", "Logs"]):
            tabs.set_title(i, title)
        controls = widgets.HBox([self._scale_target, self._minus, self._plus, self._retry, self._delete,
                                 self._confirm])
        kwargs.setdefault("layout", _root_layout())
        super().__init__([self._header, self._deploy, self._curl, tabs, controls, self._notice], **kwargs)
        self.add_class(APP_CLASS)
        self._feed = _Feed(feed.app(app_name), self._on_detail)
        if not self._feed.active:
            self._header.value = f"<b>{views.escape(app_name)}</b> — serve_nb is not running."

    # -- feed ---------------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        """Whether the widget still follows the controller (False once closed, replaced or deleted)."""
        return self._feed.active

    def _on_detail(self, detail: Any) -> None:
        if detail is None:  # deleted: nothing more will come
            self.show_gone("deleted")
            return
        view = views.app_view(detail, time.time(), self.app_name)
        with self._lock:
            self._render(view)

    def show_gone(self, what: str = "deleted") -> None:
        """The app is gone (``what``: "deleted", or "shut down" with the rest of Serve): say so and when, disable
        its controls, keep its chart, autoscaling panel and logs for reading, and stop following the feed."""
        self._feed.cancel()
        with self._lock:
            if self._view is not None and self._view.deleted_at is not None:
                return  # already shown as gone: keep the first time it was
            self._render(views.deleted_view(self._view, self.app_name, time.time(), what))

    def _render(self, view: views.AppView) -> None:
        old = self._view
        self._view = view

        def changed(attr: str) -> bool:
            return old is None or getattr(old, attr) != getattr(view, attr)

        if any(changed(a) for a in ("name", "status", "color", "url", "message")):
            self._header.value = _header_html(view)
        if changed("curl"):
            self._curl.value = view.curl or "(no HTTP route: call it through the handle)"
        if changed("deployments"):
            batching = any(d.batches for d in view.deployments)
            self._deployments.value = _table(
                ["deployment", "status", "running / target", views.REQUESTS_HEADER, *(["batching"] if batching else []),
                 ""],
                [[views.escape(d.name), _badge(d.status, d.color), d.replicas, views.escape(d.requests),
                  *([views.escape(d.batches)] if batching else []), views.escape(d.message)] for d in view.deployments],
            )
        if changed("replicas"):
            models = any(r.models for r in view.replicas)
            self._replicas.value = _table(
                ["deployment", "replica", "state", "node", "pid", "ongoing", "up", *(["models"] if models else [])],
                [[views.escape(r.deployment), r.replica_id, r.state, r.node, r.pid, str(r.ongoing), r.uptime,
                  *([views.escape(r.models)] if models else [])]
                 for r in view.replicas],
            )
        if changed("autoscaling") or changed("deleted_at"):
            note = views.autoscaling_note(view)
            parts = [f"<i>{views.escape(note)}</i><br>"] if note else []
            for a in view.autoscaling:
                events = "".join(f"<li>{views.escape(e)}</li>" for e in a.events)
                parts.append(f"<b>{views.escape(a.deployment)}</b>: {views.escape(a.settings)}<br>"
                             f"latest decision: <i>{views.escape(a.last_decision)}</i><ul>{events}</ul>")
            self._autoscaling.value = "".join(parts)
        if changed("chart_svg"):
            self._chart.value = view.chart_svg
        if changed("log_lines"):
            self._logs.value = views.log_text(view.log_lines, self._log_filter.value)
        self._show_controls(view)

    def _show_controls(self, view: views.AppView) -> None:
        """Point the scale dropdown at a deployment (the user's pick while it still can be scaled, else the
        ingress, else the first), and enable only what can act: nothing once the app is gone or going."""
        options = view.scale_options
        choice = view.scale_choice(self._scale_target.value)  # before new options can reset the user's pick
        if tuple(self._scale_target.options) != options:
            self._scale_target.options = options
        if self._scale_target.value != choice:
            self._scale_target.value = choice
        self._scale_target.disabled = self._minus.disabled = self._plus.disabled = choice is None
        self._delete.disabled = self._send_button.disabled = not view.controls_enabled
        if not view.controls_enabled:
            self._hide_confirm()

    def _show_logs(self) -> None:
        """The filter changed (on the kernel's thread): show the kept lines again through it."""
        with self._lock:
            lines = self._view.log_lines if self._view is not None else ()
            self._logs.value = views.log_text(lines, self._log_filter.value)

    @property
    def view(self) -> views.AppView | None:
        return self._view

    # -- the deploy as it happens (set by the %%serve magic, from any thread) ----------------

    @property
    def deploy_state(self) -> DeployState | None:
        return self._deploy_state

    def set_deploy_state(self, state: DeployState | None) -> None:
        """Show a deploy's stages, or its failure (None: no deploy to show)."""
        self._deploy_state = state
        self._deploy.value = state_html(state) if state is not None else ""

    def set_retry(self, callback: Callable[[], None] | None) -> None:
        """Offer a Retry button that calls ``callback`` (None hides it)."""
        self._retry_callback = callback
        self._retry.layout.display = "none" if callback is None else "inline-flex"

    # -- buttons (run on the kernel's main thread when idle; never wait for the cluster there) --

    def _scale(self, step: int) -> None:
        view = self._view
        name = view.scale_choice(self._scale_target.value) if view is not None else None
        row = next((d for d in view.deployments if d.name == name), None) if view is not None else None
        if row is None:  # the buttons are disabled then; a click that raced a deletion lands here
            self._notice.value = "<i>Nothing to scale: the app is gone or every deployment autoscales.</i>"
            return
        target = row.target + step
        if target < 1:
            self._notice.value = "<i>A fixed-size deployment keeps at least one replica; delete the app instead.</i>"
            return

        def run() -> None:
            try:
                serve.scale_deployment(self.app_name, name, target)
            except (ValueError, RayServeException) as exc:
                self._notice.value = views.escape(str(exc))
            else:
                self._notice.value = f"Scaling {views.escape(name)} to {target}."

        threading.Thread(target=run, daemon=True).start()

    def _ask_delete(self) -> None:
        yes = widgets.Button(description=f"Delete '{self.app_name}'", button_style="danger")
        no = widgets.Button(description="Cancel")
        yes.on_click(lambda _: self._do_delete())
        no.on_click(lambda _: self._hide_confirm())
        self._confirm.children = [widgets.HTML("Really delete?"), yes, no]
        self._confirm.layout.display = "flex"

    def _hide_confirm(self) -> None:
        old = self._confirm.children
        self._confirm.layout.display = "none"
        self._confirm.children = []
        for widget in old:  # made anew each time the dialog opens: close them, or they stay live
            close_tree(widget)
            widget.close()

    def _do_delete(self) -> None:
        self._hide_confirm()
        threading.Thread(target=lambda: serve.delete(self.app_name, _blocking=False), daemon=True).start()

    def _send_request(self) -> None:
        view = self._view
        if view is None or view.url is None:
            self._answer.value = "This application has no HTTP route; call it with widget.handle.remote(...)."
            return
        url = views.request_url(view.url, self._path.value)
        body = self._body.value.strip()
        if body:
            try:
                json.loads(body)
            except ValueError as exc:
                self._answer.value = f"The body is not valid JSON: {exc}"
                return
        method = self._method.value

        def run() -> None:
            start = time.perf_counter()
            try:
                status, data, ctype = _http_request(method, url, body)
            except OSError as err:
                self._answer.value = f"Request failed: {err}"
                return
            answer = views.format_response(status, data, time.perf_counter() - start, ctype)
            self._answer.value = f"{method} {url}\n{answer}"

        self._answer.value = f"{method} {url} ..."
        threading.Thread(target=run, daemon=True).start()

    def close(self) -> None:
        """Stop following the feed and close the whole widget tree (see ``close_tree``)."""
        self._feed.cancel()
        self._hide_confirm()
        close_tree(self)
        super().close()


def _header_html(view: views.AppView) -> str:
    """Name, status badge and endpoint link; then the error of a failing app, or when the app went away."""
    link = f' · <a href="{views.escape(view.url)}" target="_blank">{views.escape(view.url)}</a>' if view.url else ""
    shown = view.failure or (view.message if view.deleted_at is not None else "")
    msg = (f'<pre style="white-space:pre-wrap;color:{views.badge_color(view.status)};{_CSS}">'
           f'{views.escape(shown)}</pre>' if shown else "")
    return f"<b>{views.escape(view.name)}</b> {_badge(view.status, view.color)}{link}{msg}"


class Dashboard(widgets.VBox):
    """Every application, one row each; a row expands to its application widget."""

    def __init__(self, **kwargs: Any) -> None:
        self._rows: dict[str, widgets.VBox] = {}
        self._details: dict[str, AppWidget] = {}
        self._title = widgets.HTML("<b>serve_nb applications</b>")
        self._list = widgets.VBox()
        self._empty = widgets.HTML("<i>No applications.</i>")
        kwargs.setdefault("layout", _root_layout())
        super().__init__([self._title, self._list], **kwargs)
        self.add_class(DASHBOARD_CLASS)
        self._lock = threading.Lock()
        self._last: list[views.DashboardRow] | None = None
        self._feed = _Feed(feed.STATUS, self._on_status)
        if not self._feed.active:
            self._title.value = "<b>serve_nb</b> is not running: deploy with %%serve or serve.run()."

    @property
    def app_names(self) -> list[str]:
        return list(self._rows)

    def _on_status(self, status: Any) -> None:
        rows = views.dashboard_rows(status.applications if status is not None else {})
        with self._lock:
            if rows == self._last:
                return
            self._last = rows
            names = [r.name for r in rows]
            for name in list(self._rows):
                if name not in names:
                    row = self._rows.pop(name)
                    detail = self._details.pop(name, None)
                    if detail is not None:
                        detail.close()
                    close_tree(row)
                    row.close()
            for data in rows:
                row = self._rows.get(data.name)
                if row is None:
                    row = self._rows[data.name] = self._make_row(data.name)
                traffic = "".join(f'<br><span style="color:#57606a;{_CSS}">{views.escape(line)}</span>'
                                  for line in data.requests)
                row.children[0].children[1].value = (
                    f"<b>{views.escape(data.name)}</b> {_badge(data.status, data.color)} "
                    f"{views.escape(data.route_prefix)} · {data.replicas}{traffic}"
                )
            self._list.children = [self._rows[n] for n in names]
            if not names:
                self._list.children = [self._empty]

    def _make_row(self, name: str) -> widgets.VBox:
        toggle = widgets.ToggleButton(value=False, icon="chevron-right", layout=widgets.Layout(width="36px"),
                                      tooltip="show the application widget")
        summary = widgets.HTML()
        holder = widgets.VBox()

        def on_toggle(change: dict) -> None:
            if change["new"]:
                toggle.icon = "chevron-down"
                if name not in self._details:
                    self._details[name] = AppWidget(name)
                holder.children = [self._details[name]]
            else:
                toggle.icon = "chevron-right"
                holder.children = []

        toggle.observe(on_toggle, names="value")
        return widgets.VBox([widgets.HBox([toggle, summary]), holder])

    def expand(self, name: str) -> AppWidget:
        """Open a row (as a click would) and return its application widget."""
        self._rows[name].children[0].children[0].value = True
        return self._details[name]

    def close(self) -> None:
        """Stop following the feed and close every row and application widget, shown or not."""
        self._feed.cancel()
        for detail in self._details.values():
            detail.close()
        close_tree(self._empty)  # shown only while there are no apps: maybe not in the tree now
        self._empty.close()
        close_tree(self)
        super().close()
