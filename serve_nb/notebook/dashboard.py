"""The dashboard: every application, one row each; a row expands to that application's live view.

One anywidget for the whole dashboard: an expanded row's application widget lives in the kernel (it follows
its app's feed and handles its commands) but is drawn by the dashboard's own front end from that widget's
data, so no nested widget views have to be created or closed in the page.
"""

from __future__ import annotations

import threading
from typing import Any

import anywidget
import traitlets

from serve_nb import feed
from serve_nb.notebook import payload, snapshot, views
from serve_nb.notebook.app_widget import DASHBOARD_CLASS, AppWidget
from serve_nb.notebook.widget_base import (CSS, ESM, Feed, Throttle, close_tree, new_snapshot_id,
                                           show_with_snapshot, update_snapshot)

#: The app widget's traits the dashboard shows for an expanded row.
MIRRORED = ("data", "deploy", "form", "notice", "answer", "logs", "scale_target", "log_filter")


class Dashboard(anywidget.AnyWidget):
    """Every application, one row each; a row expands to its application widget."""

    _esm = ESM
    _css = CSS
    kind = traitlets.Unicode("dashboard").tag(sync=True)
    running = traitlets.Bool(True).tag(sync=True)
    rows = traitlets.List().tag(sync=True)  # payload.dashboard_payload
    expanded = traitlets.List().tag(sync=True)  # names of the open rows (the page toggles them)
    details = traitlets.Dict().tag(sync=True)  # name -> the mirrored traits of its application widget
    snapshot_id = traitlets.Unicode("").tag(sync=True)
    connection = traitlets.Unicode("").tag(sync=True)  # "" while the controller answers, else what to say

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class(DASHBOARD_CLASS)
        self._lock = threading.Lock()
        self._names: list[str] = []
        self._last: list[views.DashboardRow] | None = None
        self._details: dict[str, AppWidget] = {}
        self.snapshot_id = new_snapshot_id()
        self._snapshot_shown = False
        self._snapshot = Throttle(lambda html: update_snapshot(self.snapshot_id, html))
        self.observe(lambda change: self._on_expanded(change["new"]), names="expanded")
        self.on_msg(self._on_msg)
        self._feed = Feed(feed.STATUS, self._on_status)
        self.running = self._feed.active
        self._controller = Feed.controller(lambda state: setattr(self, "connection", state))

    def __repr__(self) -> str:
        return f"Dashboard(apps={getattr(self, '_names', [])!r})"

    @property
    def app_names(self) -> list[str]:
        return list(self._names)

    def _on_status(self, status: Any) -> None:
        rows = views.dashboard_rows(status.applications if status is not None else {})
        with self._lock:
            if rows == self._last:
                return
            self._last = rows
            self._names = [r.name for r in rows]
            for name in list(self._details):
                if name not in self._names:
                    self._details.pop(name).close()
            self.rows = payload.dashboard_payload(rows)
            self.details = {n: d for n, d in self.details.items() if n in self._names}
            if any(n not in self._names for n in self.expanded):
                self.expanded = [n for n in self.expanded if n in self._names]
            if self._snapshot_shown:
                self._snapshot(snapshot.dashboard_snapshot(rows, self.snapshot_id))

    def _on_expanded(self, names: list[str]) -> None:
        for name in names:
            if name in self._names and name not in self._details:
                detail = self._details[name] = AppWidget(name)
                detail.observe(lambda _, n=name: self._mirror(n), names=list(MIRRORED))
                self._mirror(name)

    def _mirror(self, name: str) -> None:
        detail = self._details.get(name)
        if detail is not None:
            self.details = {**self.details, name: {t: getattr(detail, t) for t in MIRRORED}}

    def expand(self, name: str) -> AppWidget:
        """Open a row (as a click would) and return its application widget."""
        if name not in self._names:
            raise KeyError(f"No application {name!r} in the dashboard; it shows: {', '.join(self._names) or 'none'}.")
        if name not in self.expanded:
            self.expanded = [*self.expanded, name]
        return self._details[name]

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """A command from an expanded row goes to that row's application widget."""
        if isinstance(content, dict):
            detail = self._details.get(str(content.get("app", "")))
            if detail is not None:
                if content.get("cmd") == "set":  # a synced value of the row (log filter, selected deployment)
                    if content.get("name") in ("log_filter", "scale_target"):
                        setattr(detail, content["name"], str(content.get("value", "")))
                else:
                    detail.handle_command(content)

    def _ipython_display_(self, **kwargs: Any) -> None:
        # A new snapshot display id for each showing: a re-run cell shows the same widget again, and an id
        # reused across the clear of its outputs names outputs that are gone (nbclient fails on them).
        self.snapshot_id = new_snapshot_id()
        show_with_snapshot(self, snapshot.dashboard_snapshot(self._last or [], self.snapshot_id), self.snapshot_id,
                           "<i>serve_nb dashboard</i>")
        self._snapshot_shown = True

    def close(self) -> None:
        """Stop following the feed and close every application widget it opened, and its own models."""
        self._feed.cancel()
        self._controller.cancel()
        self._snapshot.stop()
        for detail in self._details.values():
            detail.close()
        self._details.clear()
        close_tree(self)
        super().close()
