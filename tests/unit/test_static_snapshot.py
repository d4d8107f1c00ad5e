"""The static HTML a widget leaves in a saved notebook: status, endpoint, tables, chart with axes, the deploy's
progress or failure; every user-given text escaped (pure, no widgets)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from serve_nb.notebook.deploy_state import DeployFailure, DeployState, StageState
from serve_nb.notebook.snapshot import SNAPSHOT_ATTR, app_snapshot, dashboard_snapshot, deploy_state_html
from serve_nb.notebook.views import DashboardRow, app_view, deleted_view
from serve_nb.types import AppDetail, DeploymentDetail, ReplicaDetail

SVG = "{http://www.w3.org/2000/svg}"


def detail(name: str = "shop") -> AppDetail:
    replica = ReplicaDetail("r1", "RUNNING", "abcdef0123456789", 7, 90.0, 2, "v1", node_ip="10.0.0.5")
    return AppDetail(name, "RUNNING", "", "/shop", "Model", "127.0.0.1:8000",
                     (DeploymentDetail("Model", "HEALTHY", "", 2, 2, replicas=(replica,)),),
                     ((10.0, 1, 0.0), (60.0, 2, 5.0)))


def svg_of(html: str) -> ET.Element:
    return ET.fromstring(re.search(r"<svg.*</svg>", html, re.S).group(0))


def test_the_snapshot_shows_status_endpoint_tables_and_a_chart_with_both_axes():
    html = app_snapshot(app_view(detail(), 100.0), "shop", 100.0, snapshot_id="snap-1")
    assert f'{SNAPSHOT_ATTR}="snap-1"' in html
    assert ">RUNNING<" in html and 'href="http://127.0.0.1:8000/shop"' in html
    assert ">Model</td>" in html and "2 / 2" in html and "10.0.0.5" in html
    svg = svg_of(html)
    classes = {t.get("class") for t in svg.iter(f"{SVG}text")}
    assert {"axis-left", "axis-right", "axis-time"} <= classes
    assert len(svg.findall(f"{SVG}polyline")) == 2


def test_user_text_is_escaped():
    bad = "<script>alert(1)</script>"
    html = app_snapshot(app_view(detail(bad), 100.0), bad, 100.0)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<script>" not in dashboard_snapshot([DashboardRow(bad, "RUNNING", "#1a7f37", "/", "1 / 1", (bad,))])


def test_a_deleted_apps_snapshot_says_so_and_keeps_its_chart():
    gone = deleted_view(app_view(detail(), 100.0), "shop", 200.0)
    html = app_snapshot(gone, "shop", 200.0)
    assert ">DELETED<" in html and "The application was deleted at" in html
    assert len(svg_of(html).findall(f"{SVG}polyline")) == 2


def test_before_any_update_the_snapshot_names_the_app_and_the_deploy_progress():
    state = DeployState().with_stage("code shipped", StageState.DONE).with_stage("replicas starting",
                                                                               StageState.ACTIVE, "1/2")
    html = app_snapshot(None, "shop", 0.0, deploy=state)
    assert "<b>shop</b>" in html and "✓ code shipped" in html and "◐ replicas starting 1/2" in html


def test_a_failed_deploy_shows_the_error_as_given_and_the_replicas_last_lines():
    failure = DeployFailure('Cell In[3], line 4\n    raise ValueError("<bad>")\nValueError: <bad>',
                            ("ERROR replica died",))
    html = deploy_state_html(DeployState((), failure))
    assert "Cell In[3], line 4" in html and "ValueError: &lt;bad&gt;" in html and "ERROR replica died" in html
    assert deploy_state_html(None) == "" and deploy_state_html(DeployState()) == ""


def test_the_dashboard_snapshot_lists_each_app_or_says_there_are_none():
    rows = [DashboardRow("shop", "RUNNING", "#1a7f37", "/shop", "1 / 1 replicas", ("Model: idle",))]
    html = dashboard_snapshot(rows, "d1")
    assert "shop" in html and "1 / 1 replicas" in html and "Model: idle" in html
    assert "No applications." in dashboard_snapshot([])


def test_a_failed_deploy_shows_its_cell_pointing_error_once_not_the_apps_raw_traceback_and_says_what_is_left():
    raw = 'Traceback (most recent call last):\n  File "/tmp/ipykernel_1/123.py", line 4\nValueError: bad'
    failed = AppDetail("shop", "DEPLOY_FAILED", raw, "/shop", "Model", "127.0.0.1:8000",
                       (DeploymentDetail("Model", "UNHEALTHY", raw, 0, 1),), ())
    failure = DeployFailure("Cell In[3], line 4\nValueError: bad", (), kept=True,
                            note="The version before keeps serving.")
    html = app_snapshot(app_view(failed, 100.0), "shop", 100.0, deploy=DeployState((), failure))
    assert "Cell In[3], line 4" in html and "The version before keeps serving." in html
    assert "ipykernel_1/123.py" not in html.split("<table")[0], "the header does not repeat the raw traceback"
    assert "ipykernel_1/123.py" in app_snapshot(app_view(failed, 100.0), "shop", 100.0), "without a deploy shown, it does"
