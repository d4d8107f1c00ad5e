"""``serve_nb.widgets.Dashboard()`` and ``AppWidget(name)``: live views of what is deployed;
``widget_for(name)``: the widget a ``%%serve`` cell showed for an application."""

from serve_nb.notebook.magic import widget_for
from serve_nb.notebook.widgets import AppWidget, Dashboard

__all__ = ["AppWidget", "Dashboard", "widget_for"]
