"""serve_nb.notebook.views: widget view-models built from AppDetail snapshots (no Ray, no widgets)."""

from __future__ import annotations

import dataclasses
import json
import shlex
import xml.etree.ElementTree as ET

import pytest

from serve_nb.config import AutoscalingConfig
from serve_nb.notebook.views import (
    BADGE_COLORS,
    DashboardRow,
    DeploymentRow,
    app_view,
    badge_color,
    chart_points,
    chart_svg,
    curl_line,
    dashboard_rows,
    deployment_row,
    endpoint_url,
    filter_log_lines,
    format_response,
    format_uptime,
    log_text,
    request_summary,
    request_url,
)
from serve_nb.types import (
    AppDetail,
    ApplicationStatus,
    ApplicationStatusInfo,
    DeploymentDetail,
    DeploymentStatus,
    DeploymentStatusInfo,
    ReplicaDetail,
    RequestSummary,
    ScalingEvent,
)

SVG = "{http://www.w3.org/2000/svg}"
GREEN, AMBER, BLUE, RED, GREY = "#1a7f37", "#9a6700", "#0969da", "#cf222e", "#6e7781"
REPLICA_STROKE, ONGOING_STROKE = "#0969da", "#fb8500"


def replica(rid="r1", *, state="RUNNING", node="abcdef0123456789", pid=4242, started_at=1000.0, ongoing=0):
    return ReplicaDetail(rid, state, node, pid, started_at, ongoing, "v1")


def autoscaling_dict(**kw):
    return dataclasses.asdict(AutoscalingConfig(**{"min_replicas": 1, "max_replicas": 4, **kw}))


def app(**kw):
    base = dict(name="shop", status="RUNNING", message="", route_prefix="/shop", ingress="Shop",
                http_address="127.0.0.1:8000")
    base.update(kw)
    return AppDetail(**base)


# --------------------------------------------------------------------------- badges


@pytest.mark.parametrize(
    "status, color",
    [
        ("RUNNING", GREEN), ("HEALTHY", GREEN),
        ("DEPLOYING", AMBER), ("UPDATING", AMBER),
        ("UPSCALING", BLUE), ("DOWNSCALING", BLUE),
        ("DEPLOY_FAILED", RED), ("UNHEALTHY", RED),
        ("DELETING", GREY), ("DELETED", GREY), ("NOT_STARTED", GREY),
    ],
)
def test_badge_colors(status, color):
    assert badge_color(status) == color


def test_badge_color_unknown_status_is_grey():
    assert badge_color("SOMETHING_NEW") == GREY
    assert badge_color("") == GREY


def test_every_status_enum_value_has_a_badge():
    for status in [*ApplicationStatus, *DeploymentStatus]:
        assert status.value in BADGE_COLORS, status
        # enums are str subclasses: the enum member itself works as a key
        assert badge_color(status) == BADGE_COLORS[status.value]


def test_failure_and_success_colors_differ():
    assert badge_color("RUNNING") != badge_color("DEPLOY_FAILED")
    assert badge_color("DEPLOYING") not in (badge_color("RUNNING"), badge_color("UNHEALTHY"))


# --------------------------------------------------------------------------- format_uptime


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0s"), (0.9, "0s"), (1, "1s"), (59.99, "59s"),
        (60, "1m 00s"), (61, "1m 01s"), (125, "2m 05s"), (3599, "59m 59s"),
        (3600, "1h 00m"), (3725, "1h 02m"), (86399, "23h 59m"), (90000, "25h 00m"),
        (-5, "0s"), (-0.1, "0s"),
    ],
)
def test_format_uptime(seconds, text):
    assert format_uptime(seconds) == text


# --------------------------------------------------------------------------- endpoint_url / curl_line


def test_endpoint_url_with_prefix():
    assert endpoint_url(app(route_prefix="/shop")) == "http://127.0.0.1:8000/shop"


def test_endpoint_url_root_prefix_has_no_extra_slash_segment():
    assert endpoint_url(app(route_prefix="/")) == "http://127.0.0.1:8000"


def test_endpoint_url_nested_prefix():
    assert endpoint_url(app(route_prefix="/a/b", http_address="10.0.0.5:9000")) == "http://10.0.0.5:9000/a/b"


def test_endpoint_url_none_without_http():
    assert endpoint_url(app(route_prefix=None)) is None


def test_endpoint_url_none_without_proxy_address():
    assert endpoint_url(app(http_address=None)) is None


@pytest.mark.parametrize(
    "endpoint, path, url",
    [
        ("http://h:8000/shop", "", "http://h:8000/shop"),
        ("http://h:8000/shop", "items/1", "http://h:8000/shop/items/1"),
        ("http://h:8000/shop", "/items/1?x=1", "http://h:8000/shop/items/1?x=1"),
        ("http://h:8000", "/a", "http://h:8000/a"),  # root prefix: no double slash
        ("http://h:8000/shop/", "a", "http://h:8000/shop/a"),
        ("http://h:8000/shop", "   ", "http://h:8000/shop"),  # blank path: the endpoint itself
        ("http://h:8000/shop", "?q=1", "http://h:8000/shop?q=1"),  # a bare query: no slash before it
        ("http://h:8000/shop", "#top", "http://h:8000/shop#top"),
        ("http://h:8000", "?q=1", "http://h:8000/?q=1"),  # the root path keeps its one slash
    ],
)
def test_request_url_joins_the_panels_path_to_the_endpoint(endpoint, path, url):
    assert request_url(endpoint, path) == url


def test_curl_line_get():
    assert curl_line("http://127.0.0.1:8000/shop") == "curl -s -X GET http://127.0.0.1:8000/shop"


def test_curl_line_quotes_shell_metacharacters_in_url():
    line = curl_line("http://h:8000/a?x=1&y=2")
    assert "'http://h:8000/a?x=1&y=2'" in line
    assert shlex.split(line) == ["curl", "-s", "-X", "GET", "http://h:8000/a?x=1&y=2"]


def test_curl_line_post_with_json_body_round_trips_through_a_shell():
    body = '{"text": "it\'s $HOME & `x`"}'
    line = curl_line("http://h:8000/echo", "POST", body)
    assert shlex.split(line) == [
        "curl", "-s", "-X", "POST", "http://h:8000/echo",
        "-H", "content-type: application/json", "-d", body,
    ]


def test_curl_line_empty_body_adds_no_data_flags():
    line = curl_line("http://h/x", "POST", "")
    assert "-d" not in shlex.split(line)
    assert "content-type" not in line


# --------------------------------------------------------------------------- deployment_row


def test_deployment_row_fields():
    dep = DeploymentDetail("Shop", "UPSCALING", "scaling up\nsecond line", target=3, running=1)
    row = deployment_row(dep)
    assert row.name == "Shop"
    assert row.status == "UPSCALING"
    assert row.color == BLUE
    assert (row.running, row.target) == (1, 3)  # numbers, for the +/- buttons
    assert row.replicas == "1 / 3"
    assert row.message == "scaling up"  # only the first line
    assert row.autoscaling is False


def test_deployment_row_display_text_follows_its_numbers():
    row = DeploymentRow("A", "HEALTHY", GREEN, running=2, target=12, message="", autoscaling=False)
    assert row.replicas == "2 / 12"
    assert dataclasses.replace(row, target=13).replicas == "2 / 13"


def test_deployment_row_empty_message_and_autoscaling_flag():
    row = deployment_row(DeploymentDetail("A", "HEALTHY", "", 1, 1, autoscaling=autoscaling_dict()))
    assert row.message == ""
    assert row.autoscaling is True


# --------------------------------------------------------------------------- app_view


def test_app_view_none_gives_deleted_view():
    view = app_view(None, 123.0, "gone")
    assert view.name == "gone"
    assert view.status == "DELETED"
    assert view.color == GREY
    assert "deleted" in view.message.lower()
    assert view.url is None and view.curl is None
    assert view.deployments == () and view.replicas == () and view.autoscaling == ()
    assert view.logs == ""
    root = ET.fromstring(view.chart_svg)  # still a valid, empty chart
    assert root.findall(f"{SVG}polyline") == []


def test_app_view_basic_fields():
    detail = app(status="DEPLOYING", message="starting 2 replicas")
    view = app_view(detail, 2000.0)
    assert view.name == "shop"
    assert view.status == "DEPLOYING"
    assert view.color == AMBER
    assert view.message == "starting 2 replicas"
    assert view.url == "http://127.0.0.1:8000/shop"
    assert view.curl == "curl -s -X GET http://127.0.0.1:8000/shop"


@pytest.mark.parametrize(
    "status, shown",
    [("DEPLOY_FAILED", True), ("UNHEALTHY", True), ("RUNNING", False), ("DEPLOYING", False)],
)
def test_app_view_failure_is_the_message_only_when_the_app_fails(status, shown):
    view = app_view(app(status=status, message="boom: weights not found"), 0.0)
    assert view.failure == ("boom: weights not found" if shown else "")


def test_app_view_without_http_has_no_url_or_curl():
    view = app_view(app(route_prefix=None), 0.0)
    assert view.url is None
    assert view.curl is None


def test_app_view_name_argument_is_ignored_when_detail_present():
    assert app_view(app(name="real"), 0.0, "other").name == "real"


def test_app_view_replica_rows_across_deployments(utc):
    detail = app(deployments=(
        DeploymentDetail("Ingress", "HEALTHY", "", 1, 1, replicas=(replica("i1", started_at=1000.0, ongoing=2),)),
        DeploymentDetail("Model", "UPDATING", "", 2, 1, replicas=(
            replica("m1", state="RUNNING", node="ffff0000eeee1111", pid=7, started_at=1900.0),
            replica("m2", state="STARTING", pid=0, started_at=1995.0),
        )),
    ))
    view = app_view(detail, 2000.0)
    assert [(r.deployment, r.replica_id) for r in view.replicas] == [("Ingress", "i1"), ("Model", "m1"), ("Model", "m2")]
    i1, m1, m2 = view.replicas
    assert i1.node == "abcdef01"  # shortened to 8 characters
    assert m1.node == "ffff0000"
    assert i1.pid == "4242"
    assert m2.pid == ""  # no pid yet
    assert i1.ongoing == 2
    assert i1.uptime == "since 00:16:40"  # a start time (UTC here), which stays true between updates
    assert m1.uptime == "since 00:31:40"
    assert m2.uptime == "since 00:33:15"
    assert m2.state == "STARTING"
    assert [(d.name, d.replicas, d.color) for d in view.deployments] == [("Ingress", "1 / 1", GREEN),
                                                                          ("Model", "1 / 2", AMBER)]


def test_app_view_autoscaling_panel_only_for_autoscaling_deployments():
    auto = autoscaling_dict(min_replicas=0, max_replicas=5, target_ongoing_requests=1.5,
                            upscale_delay_s=10.0, downscale_delay_s=120.0)
    detail = app(deployments=(
        DeploymentDetail("Fixed", "HEALTHY", "", 2, 2),
        DeploymentDetail("Auto", "HEALTHY", "", 1, 1, autoscaling=auto, last_decision="steady at 1"),
    ))
    view = app_view(detail, 0.0)
    assert len(view.autoscaling) == 1
    panel = view.autoscaling[0]
    assert panel.deployment == "Auto"
    assert panel.settings == "min 0, max 5, target 1.5 ongoing/replica; delays up 10s, down 120s"
    assert panel.last_decision == "steady at 1"
    assert panel.events == ()


def test_app_view_autoscaling_no_decision_yet():
    detail = app(deployments=(DeploymentDetail("Auto", "HEALTHY", "", 1, 1, autoscaling=autoscaling_dict()),))
    assert app_view(detail, 0.0).autoscaling[0].last_decision == "no decision yet"


def test_app_view_autoscaling_events_newest_first_last_five(utc):
    events = tuple(ScalingEvent(time=100.0 * i, from_replicas=i, to_replicas=i + 1, reason=f"r{i}") for i in range(1, 8))
    detail = app(deployments=(DeploymentDetail("Auto", "UPSCALING", "", 8, 7, autoscaling=autoscaling_dict(),
                                               events=events),))
    shown = app_view(detail, 800.0).autoscaling[0].events
    assert shown == (
        "00:11:40: 7 → 8 (r7)",
        "00:10:00: 6 → 7 (r6)",
        "00:08:20: 5 → 6 (r5)",
        "00:06:40: 4 → 5 (r4)",
        "00:05:00: 3 → 4 (r3)",
    )


def test_app_view_logs_keep_last_sixty_lines():
    logs = tuple(f"line {i}" for i in range(100))
    text = app_view(app(logs=logs), 0.0).logs
    lines = text.split("\n")
    assert len(lines) == 60
    assert lines[0] == "line 40" and lines[-1] == "line 99"


def test_app_view_chart_uses_history():
    view = app_view(app(history=((900.0, 1, 0.0), (950.0, 2, 3.0))), 1000.0)
    root = ET.fromstring(view.chart_svg)
    assert len(root.findall(f"{SVG}polyline")) == 2
    assert view.chart_svg == chart_svg(((900.0, 1, 0.0), (950.0, 2, 3.0)), 1000.0)


# --------------------------------------------------------------------------- chart_points


def test_chart_points_empty_history():
    assert chart_points([], 100.0) == ([], [], 1.0)


def test_chart_points_step_shape_and_last_value_extended_to_now():
    # window 300 over width 360: 1.2 px per second; height 90, top = 4
    history = [(0.0, 1, 0.0), (100.0, 2, 4.0), (250.0, 3, 2.0)]
    replicas, ongoing, top = chart_points(history, 300.0)
    assert top == 4
    assert replicas == [
        (0.0, 67.5),
        (120.0, 67.5), (120.0, 45.0),  # hold 1 until t=100, then step to 2
        (300.0, 45.0), (300.0, 22.5),  # hold 2 until t=250, then step to 3
        (360.0, 22.5),  # 3 extended to now
    ]
    assert ongoing == [
        (0.0, 90.0),
        (120.0, 90.0), (120.0, 0.0),
        (300.0, 0.0), (300.0, 45.0),
        (360.0, 45.0),
    ]


def test_chart_points_every_segment_is_horizontal_or_vertical():
    history = [(10.0, 1, 0.5), (40.0, 3, 2.5), (41.0, 2, 7.0), (200.0, 5, 1.0)]
    for series in chart_points(history, 250.0)[:2]:
        for (x0, y0), (x1, y1) in zip(series, series[1:]):
            assert x0 == x1 or y0 == y1
            assert x1 >= x0  # time never goes backwards


def test_chart_points_shared_y_scale_is_the_max_of_both_series():
    replicas, ongoing, top = chart_points([(0.0, 2, 8.0)], 10.0)
    assert top == 8
    assert replicas[0][1] == 90.0 - 2 / 8 * 90.0
    assert ongoing[0][1] == 0.0  # the max sits on the top edge

    replicas, ongoing, top = chart_points([(0.0, 6, 3.0)], 10.0)
    assert top == 6
    assert replicas[0][1] == 0.0
    assert ongoing[0][1] == 45.0


def test_chart_points_top_is_at_least_one():
    replicas, ongoing, top = chart_points([(0.0, 0, 0.0), (5.0, 0, 0.5)], 10.0)
    assert top == 1.0
    assert ongoing[-1][1] == 45.0


def test_chart_points_clips_to_window_and_carries_earlier_value_in():
    # window [700, 1000]; the point at 600 is outside, but its value holds at the window start
    history = [(100.0, 9, 9.0), (600.0, 2, 1.0), (850.0, 4, 0.0)]
    replicas, ongoing, top = chart_points(history, 1000.0, window_s=300.0)
    assert top == 4  # the 9 from t=100 is out of view and does not set the scale
    assert replicas == [(0.0, 45.0), (180.0, 45.0), (180.0, 0.0), (360.0, 0.0)]
    assert ongoing == [(0.0, 67.5), (180.0, 67.5), (180.0, 90.0), (360.0, 90.0)]
    assert all(0.0 <= x <= 360.0 for x, _ in replicas + ongoing)


def test_chart_points_only_old_history_draws_a_flat_line_across_the_window():
    replicas, ongoing, top = chart_points([(0.0, 3, 1.0)], 10_000.0)
    assert top == 3
    assert replicas == [(0.0, 0.0), (360.0, 0.0)]
    assert ongoing == [(0.0, 60.0), (360.0, 60.0)]


def test_chart_points_custom_size():
    replicas, _, _ = chart_points([(50.0, 1, 0.0)], 100.0, window_s=100.0, width=200.0, height=50.0)
    assert replicas == [(100.0, 0.0), (200.0, 0.0)]


# --------------------------------------------------------------------------- chart_svg


def _polylines(svg: str) -> dict[str, list[tuple[float, float]]]:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    out = {}
    for line in root.findall(f"{SVG}polyline"):
        out[line.get("stroke")] = [tuple(float(v) for v in pair.split(",")) for pair in line.get("points").split()]
    return out


def test_chart_svg_is_valid_xml_with_two_polylines_matching_chart_points():
    history = [(0.0, 1, 0.0), (100.0, 2, 3.0), (250.0, 2, 1.0)]
    svg = chart_svg(history, 300.0)
    root = ET.fromstring(svg)
    assert len(root.findall(f"{SVG}polyline")) == 2
    lines = _polylines(svg)
    replicas, ongoing, top = chart_points(history, 300.0)
    assert lines[REPLICA_STROKE] == replicas
    assert lines[ONGOING_STROKE] == ongoing
    texts = [t.text for t in root.findall(f"{SVG}text")]
    assert f"{top:g}" in texts  # y-axis label shows the shared scale
    assert "replicas" in texts and "ongoing requests" in texts
    assert "last 5 min" in texts


def test_chart_svg_window_label():
    root = ET.fromstring(chart_svg([(0.0, 1, 1.0)], 60.0, window_s=60.0))
    assert "last 1 min" in [t.text for t in root.findall(f"{SVG}text")]


def test_chart_svg_empty_history_is_valid_without_polylines():
    root = ET.fromstring(chart_svg([], 0.0))
    assert root.findall(f"{SVG}polyline") == []
    assert root.find(f"{SVG}rect") is not None


def test_chart_svg_fractional_scale_label():
    root = ET.fromstring(chart_svg([(0.0, 1, 2.5)], 1.0))
    assert root.findall(f"{SVG}text")[0].text == "2.5"


# --------------------------------------------------------------------------- dashboard_rows


def test_dashboard_rows_sorted_with_summaries():
    apps = {
        "zeta": ApplicationStatusInfo("zeta", ApplicationStatus.DEPLOY_FAILED, route_prefix=None, deployments={
            "Z": DeploymentStatusInfo("Z", DeploymentStatus.DEPLOY_FAILED, replica_states={}, target_replicas=2),
        }),
        "alpha": ApplicationStatusInfo("alpha", ApplicationStatus.RUNNING, route_prefix="/alpha", deployments={
            "A": DeploymentStatusInfo("A", DeploymentStatus.HEALTHY, replica_states={"RUNNING": 2}, target_replicas=2),
            "B": DeploymentStatusInfo("B", DeploymentStatus.UPSCALING,
                                      replica_states={"RUNNING": 1, "STARTING": 2}, target_replicas=3),
        }),
    }
    assert dashboard_rows(apps) == [
        DashboardRow("alpha", "RUNNING", GREEN, "/alpha", "3 / 5 replicas", ("A: idle", "B: idle")),
        DashboardRow("zeta", "DEPLOY_FAILED", RED, "(no HTTP)", "0 / 2 replicas", ("Z: idle",)),
    ]
    assert [(r.name, r.route_prefix) for r in dashboard_rows(apps)] == [("alpha", "/alpha"), ("zeta", "(no HTTP)")]


def test_dashboard_rows_status_is_a_plain_string():
    rows = dashboard_rows({"a": ApplicationStatusInfo("a", ApplicationStatus.DEPLOYING, route_prefix="/")})
    status = rows[0][1]
    assert type(status) is str and status == "DEPLOYING"
    assert rows[0][2] == AMBER
    assert rows[0][3] == "/"
    assert rows[0][4] == "0 / 0 replicas"


def test_dashboard_rows_empty():
    assert dashboard_rows({}) == []


# --------------------------------------------------------------------------- format_response


def test_format_response_pretty_prints_json():
    out = format_response(200, b'{"a":[1,2],"b":{"c":null}}', 0.01234, "application/json")
    head, _, body = out.partition("\n")
    assert head == "200 in 12.3 ms"
    assert body == json.dumps({"a": [1, 2], "b": {"c": None}}, indent=2)
    assert "\n  " in body  # indented


def test_format_response_json_with_charset_parameter():
    out = format_response(201, b'[1]', 0.5, "application/json; charset=utf-8")
    assert out == "201 in 500.0 ms\n[\n  1\n]"


def test_format_response_invalid_json_is_shown_as_is():
    out = format_response(500, b"{not json", 0.001, "application/json")
    assert out == "500 in 1.0 ms\n{not json"


def test_format_response_plain_text_not_reformatted():
    out = format_response(200, b'{"a":1}', 0.002, "text/plain")
    assert out == '200 in 2.0 ms\n{"a":1}'


def test_format_response_invalid_utf8_is_replaced_not_raised():
    out = format_response(200, b"ok \xff\xfe", 0.0, "text/plain")
    assert out == "200 in 0.0 ms\nok \ufffd\ufffd"


def test_format_response_truncates_long_bodies_with_byte_count():
    body = b"x" * 12_000
    out = format_response(200, body, 0.0, "text/plain")
    head, _, text = out.partition("\n")
    assert head == "200 in 0.0 ms"
    assert text.startswith("x" * 5000)
    assert text == "x" * 5000 + "\n... (12000 bytes)"


def test_format_response_exactly_5000_chars_not_truncated():
    out = format_response(200, b"y" * 5000, 0.0)
    assert out == "200 in 0.0 ms\n" + "y" * 5000


def test_format_response_truncates_pretty_json_too():
    body = json.dumps(list(range(3000))).encode()
    text = format_response(200, body, 0.0, "application/json").partition("\n")[2]
    assert text.endswith(f"\n... ({len(body)} bytes)")
    assert len(text) == 5000 + len(f"\n... ({len(body)} bytes)")


def test_format_response_keeps_non_ascii_text_readable():
    out = format_response(200, '{"greeting": "café ☕"}'.encode(), 0.0, "application/json")
    assert '"greeting": "café ☕"' in out


def test_app_view_shows_each_replicas_models_and_each_deployments_recent_batches():
    holder = dataclasses.replace(replica("m1"), models=("fr", "de", "es", "it", "pt", "nl"))
    detail = app(deployments=(
        DeploymentDetail("Model", "HEALTHY", "", 2, 2, replicas=(holder, replica("m2")), batch_sizes=(8, 16, 3)),
        DeploymentDetail("Plain", "HEALTHY", "", 1, 1, replicas=(replica("p1"),)),
    ))
    view = app_view(detail, 2000.0)
    assert [r.models for r in view.replicas] == ["fr, de, es, it (+2 more)", "", ""]
    assert [d.batches for d in view.deployments] == ["3 batches: mean size 9.0, largest 16, last 3", ""]


# --------------------------------------------------------------------------- live request figures


def figures(**kw):
    base = dict(count=120, requests_per_s=2.0, p50_ms=3.456, p99_ms=151.2, errors=3, error_rate=0.025, window_s=60.0)
    base.update(kw)
    return RequestSummary(**base)


def test_request_summary_reads_rate_estimated_percentiles_and_errors():
    assert request_summary(figures()) == "2.00 req/s · p50 ~3.5 ms · p99 ~151 ms · 3 errors (2.5%)"


def test_request_summary_of_a_busy_slow_deployment_without_errors():
    assert request_summary(figures(requests_per_s=1234.5, p50_ms=45.0, p99_ms=12_500.0, errors=0, error_rate=0.0)) == (
        "1234 req/s · p50 ~45 ms · p99 ~12 s · no errors")


def test_a_deployment_that_served_nothing_in_the_window_reads_idle():
    assert request_summary(None) == "idle"


def test_app_view_shows_each_deployments_live_figures():
    detail = app(deployments=(
        DeploymentDetail("Busy", "HEALTHY", "", 1, 1, requests=figures(errors=0, error_rate=0.0)),
        DeploymentDetail("Quiet", "HEALTHY", "", 1, 1),
    ))
    assert [d.requests for d in app_view(detail, 0.0).deployments] == [
        "2.00 req/s · p50 ~3.5 ms · p99 ~151 ms · no errors", "idle"]


def test_dashboard_rows_name_each_deployments_figures():
    apps = {"shop": ApplicationStatusInfo("shop", ApplicationStatus.RUNNING, route_prefix="/shop", deployments={
        "Front": DeploymentStatusInfo("Front", DeploymentStatus.HEALTHY, requests=figures(requests_per_s=12.34)),
        "Model": DeploymentStatusInfo("Model", DeploymentStatus.HEALTHY),
    })}
    [row] = dashboard_rows(apps)
    assert row.requests == ("Front: 12.3 req/s · p50 ~3.5 ms · p99 ~151 ms · 3 errors (2.5%)", "Model: idle")


# --------------------------------------------------------------------------- the Logs tab's request-id filter

LOG = (
    "12:00:01 Model/ab12cd | INFO 2025-01-01 12:00:01,001 Model ab12cd 7f3a-req-1 -- loading",
    "12:00:01 Model/ab12cd | INFO 2025-01-01 12:00:01,002 Model ab12cd -- a print from __init__",
    "12:00:02 Model/ef34gh | ERROR 2025-01-01 12:00:02,003 Model ef34gh 9c1e-req-2 -- failed:\nTraceback ...",
    "12:00:02 Model/ab12cd | INFO 2025-01-01 12:00:02,004 Model ab12cd 7f3a-req-1 -- CALL __call__ OK 3.1ms",
)


def test_the_request_id_filter_keeps_only_that_requests_lines():
    assert filter_log_lines(LOG, "7f3a-req-1") == [LOG[0], LOG[3]]


def test_a_matching_records_continuation_lines_stay_with_it():
    assert filter_log_lines(LOG, " 9c1e-req-2 ") == [LOG[2]]
    assert "Traceback" in log_text(LOG, "9c1e-req-2")


def test_an_empty_filter_shows_every_line():
    assert filter_log_lines(LOG, "") == list(LOG)
    assert filter_log_lines(LOG, "   ") == list(LOG)


def test_the_filter_looks_through_every_kept_line_before_keeping_the_last_sixty():
    lines = [f"INFO t Model r1 {'wanted' if i % 2 else 'other'}-{i} -- line {i}" for i in range(200)]
    shown = log_text(lines, "wanted").split("\n")
    assert len(shown) == 60
    assert shown[0].endswith("line 81") and shown[-1].endswith("line 199")


def test_the_log_pane_says_when_no_kept_line_carries_the_request_id():
    assert log_text(LOG, "nope") == "(none of the last 4 lines carries request id 'nope')"


def test_the_log_pane_says_when_replicas_wrote_nothing_yet():
    assert log_text((), "") == "(no replica output yet)"
    assert log_text((), "7f3a") == "(no replica output yet)"


def test_app_view_keeps_every_line_the_controller_sent_for_the_filter():
    logs = tuple(f"line {i}" for i in range(100))
    view = app_view(app(logs=logs), 0.0)
    assert view.log_lines == logs
