"""``serve_nb.widgets.Dashboard()`` and ``AppWidget(name)``: live views of what is deployed."""

from serve_nb.notebook.widgets import AppWidget, Dashboard

__all__ = ["AppWidget", "Dashboard"]
