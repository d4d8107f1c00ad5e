"""Live widgets: ``AppWidget`` (one application) and ``Dashboard`` (every application), anywidgets fed by the
controller's long-poll. This module gathers them; see ``app_widget``, ``dashboard`` and ``widget_base``."""

from serve_nb.notebook.app_widget import (APP_CLASS, DASHBOARD_CLASS, DEPLOYMENTS_CLASS, HTTP_METHODS,
                                          NOTICE_CLASS, SCALE_DOWN_CLASS, SCALE_UP_CLASS, STATUS_CLASS, AppWidget,
                                          Command)
from serve_nb.notebook.dashboard import Dashboard
from serve_nb.notebook.widget_base import Feed, close_tree

__all__ = ["APP_CLASS", "DASHBOARD_CLASS", "DEPLOYMENTS_CLASS", "HTTP_METHODS", "NOTICE_CLASS", "SCALE_DOWN_CLASS",
           "SCALE_UP_CLASS", "STATUS_CLASS", "AppWidget", "Command", "Dashboard", "Feed", "close_tree"]
