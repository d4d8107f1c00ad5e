"""What the app widget's controls act on, and what a deleted app's widget still shows: the view-model alone
(``serve_nb.notebook.views``), no Ray, no widgets."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import pytest

from serve_nb.config import AutoscalingConfig
from serve_nb.notebook.views import NO_AUTOSCALING, app_view, autoscaling_note, deleted_view, node_cell
from serve_nb.types import AppDetail, DeploymentDetail, ReplicaDetail, ScalingEvent

SVG = "{http://www.w3.org/2000/svg}"
AUTO = dataclasses.asdict(AutoscalingConfig(min_replicas=1, max_replicas=4))


def detail(*deployments: DeploymentDetail, ingress: str = "Ingress", status: str = "RUNNING",
           history: tuple[tuple[float, int, float], ...] = ()) -> AppDetail:
    return AppDetail("shop", status, "", "/shop", ingress, "127.0.0.1:8000", deployments, history, ("a log line",))


def fixed(name: str) -> DeploymentDetail:
    return DeploymentDetail(name, "HEALTHY", "", 1, 1)


def autoscaled(name: str) -> DeploymentDetail:
    return DeploymentDetail(name, "HEALTHY", "", 2, 2, autoscaling=AUTO, last_decision="steady at 2",
                            events=(ScalingEvent(50.0, 1, 2, "3 ongoing"),))


# --------------------------------------------------------------------------- what + and − act on


def test_the_only_deployment_is_the_scale_target_without_picking_it():
    view = app_view(detail(fixed("Model"), ingress="Model"), 100.0)
    assert view.scale_options == ("Model",)
    assert view.scale_choice() == "Model"
    assert view.scale_choice(None) == "Model"  # the dropdown's empty value picks it too


def test_with_several_deployments_the_ingress_is_the_scale_target():
    view = app_view(detail(fixed("Model"), fixed("Ingress"), fixed("Tokenizer")), 100.0)
    assert view.scale_options == ("Model", "Ingress", "Tokenizer")
    assert view.scale_choice() == "Ingress"


def test_the_users_pick_stays_the_scale_target_while_it_can_be_scaled():
    view = app_view(detail(fixed("Model"), fixed("Ingress")), 100.0)
    assert view.scale_choice("Model") == "Model"
    assert view.scale_choice("Gone") == "Ingress"  # a pick that no longer exists falls back


def test_an_autoscaling_ingress_leaves_the_first_fixed_size_deployment_as_the_scale_target():
    view = app_view(detail(autoscaled("Ingress"), fixed("Model"), fixed("Other")), 100.0)
    assert view.scale_options == ("Model", "Other")
    assert view.scale_choice() == "Model"


def test_when_every_deployment_autoscales_nothing_is_a_scale_target():
    view = app_view(detail(autoscaled("Ingress")), 100.0)
    assert view.scale_options == () and view.scale_choice() is None
    assert view.controls_enabled  # delete and send still work


@pytest.mark.parametrize("status, enabled", [("RUNNING", True), ("DEPLOYING", True), ("DEPLOY_FAILED", True),
                                             ("DELETING", False)])
def test_an_app_being_deleted_offers_no_controls(status, enabled):
    view = app_view(detail(fixed("Ingress"), status=status), 100.0)
    assert view.controls_enabled is enabled
    assert (view.scale_choice() == "Ingress") is enabled


# --------------------------------------------------------------------------- a deleted app


def test_a_deleted_app_says_it_was_deleted_and_when_and_offers_no_controls(utc):
    live = app_view(detail(fixed("Ingress")), 100.0)
    gone = deleted_view(live, "shop", 3723.0)
    assert gone.status == "DELETED" and gone.deleted_at == 3723.0
    assert gone.message == "The application was deleted at 01:02:03."
    assert not gone.controls_enabled and gone.scale_options == () and gone.scale_choice("Ingress") is None
    assert gone.url is None and gone.curl is None and gone.deployments == () and gone.replicas == ()
    assert deleted_view(live, "shop", 3723.0, "shut down").message == "The application was shut down at 01:02:03."


def test_a_deleted_apps_chart_keeps_its_history_and_drops_to_zero_at_deletion():
    history = ((10.0, 1, 0.0), (60.0, 3, 5.0))
    live = app_view(detail(fixed("Ingress"), history=history), 100.0)
    gone = deleted_view(live, "shop", 200.0)
    assert gone.history == history + ((200.0, 0, 0.0),)
    assert len(ET.fromstring(gone.chart_svg).findall(f"{SVG}polyline")) == 2  # still drawn, not wiped
    assert ">5<" in gone.chart_svg  # the y scale still reaches the busiest moment


def test_a_deleted_app_that_autoscaled_keeps_its_autoscaling_panel_and_logs():
    live = app_view(detail(autoscaled("Ingress")), 100.0)
    gone = deleted_view(live, "shop", 200.0)
    assert gone.autoscaling == live.autoscaling
    assert gone.autoscaling[0].last_decision == "steady at 2"
    assert autoscaling_note(gone) == "As it was when the application was deleted."
    assert NO_AUTOSCALING not in autoscaling_note(gone)
    assert gone.log_lines == ("a log line",)


def test_only_a_live_app_without_autoscaling_says_none_of_its_deployments_autoscales():
    live = app_view(detail(fixed("Ingress")), 100.0)
    assert autoscaling_note(live) == NO_AUTOSCALING
    assert autoscaling_note(app_view(detail(autoscaled("Ingress")), 100.0)) == ""
    assert autoscaling_note(deleted_view(live, "shop", 200.0)) == ""  # nothing autoscaled: nothing to claim


def test_an_app_deleted_before_its_first_detail_is_still_shown_deleted():
    gone = deleted_view(None, "shop", 200.0)
    assert gone.name == "shop" and gone.status == "DELETED" and not gone.controls_enabled
    assert ET.fromstring(gone.chart_svg).findall(f"{SVG}polyline") == []


# --------------------------------------------------------------------------- where a replica runs


@pytest.mark.parametrize("node_ip, shown", [("10.0.3.7", "10.0.3.7"), ("", "abcdef01"), ("127.0.0.1", "abcdef01"),
                                            ("::1", "abcdef01"), ("worker-3.local", "worker-3.local")])
def test_the_node_column_shows_the_nodes_address_else_a_short_id(node_ip, shown):
    replica = ReplicaDetail("r1", "RUNNING", "abcdef0123456789", 7, 0.0, 0, "v1", node_ip=node_ip)
    assert node_cell(replica) == shown


def test_replica_uptime_is_a_start_time_that_does_not_go_stale(utc):
    replica = ReplicaDetail("r1", "RUNNING", "abcdef0123456789", 7, 3723.0, 0, "v1")
    shown = {app_view(detail(dataclasses.replace(fixed("Ingress"), replicas=(replica,))), now).replicas[0].uptime
             for now in (3800.0, 5000.0, 80000.0)}
    assert shown == {"since 01:02:03"}
    later = app_view(detail(dataclasses.replace(fixed("Ingress"), replicas=(replica,))), 3723.0 + 2 * 86400)
    assert later.replicas[0].uptime == "since Jan 01 01:02:03"  # a day on: the date too
