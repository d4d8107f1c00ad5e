"""The controller's pure decisions: targets on redeploy, the load window, history points, proxy placement."""

from __future__ import annotations

import pytest

from serve_nb.config import AutoscalingConfig, DeploymentConfig, ProxyLocation
from serve_nb.core.policy import HISTORY_EVERY_S, LoadWindow, history_point_due, proxy_nodes, redeploy_target
from serve_nb.core.resources import HEAD_NODE_RESOURCE, NodeInfo

AUTO = AutoscalingConfig(min_replicas=2, initial_replicas=3, max_replicas=5)


def fixed(n: int) -> DeploymentConfig:
    return DeploymentConfig(num_replicas=n)


def auto(config: AutoscalingConfig = AUTO) -> DeploymentConfig:
    return DeploymentConfig(num_replicas=None, autoscaling_config=config)


def test_a_fixed_size_is_taken_as_given():
    assert redeploy_target(fixed(2), fixed(4), current=2) == 4
    assert redeploy_target(auto(), fixed(1), current=5) == 1


def test_switching_to_autoscaling_starts_from_its_initial_count():
    assert redeploy_target(fixed(1), auto(), current=1) == 3


@pytest.mark.parametrize("current, expected", [(4, 4), (1, 2), (9, 5)])
def test_an_autoscaling_deployment_keeps_its_size_within_the_new_bounds(current, expected):
    assert redeploy_target(auto(), auto(), current=current) == expected


def test_the_load_window_averages_samples_within_the_look_back_period():
    window = LoadWindow()
    assert window.add(0.0, 4.0, look_back_s=10.0) == 4.0
    assert window.add(5.0, 2.0, look_back_s=10.0) == 3.0
    assert window.add(12.0, 6.0, look_back_s=10.0) == 4.0, "the sample at 0 s has left the window"


def test_a_history_point_when_numbers_change_or_every_few_seconds():
    assert history_point_due(None, 1, 0.0, 10.0)
    last = (10.0, 1, 0.0)
    assert not history_point_due(last, 1, 0.0, 10.0 + HISTORY_EVERY_S - 0.1)
    assert history_point_due(last, 1, 0.0, 10.0 + HISTORY_EVERY_S)
    assert history_point_due(last, 2, 0.0, 10.1)
    assert history_point_due(last, 1, 3.0, 10.1)


def test_proxies_go_on_every_node_the_head_only_or_nowhere():
    nodes = [NodeInfo("h", {HEAD_NODE_RESOURCE: 1.0}), NodeInfo("w", {"CPU": 1.0})]
    assert proxy_nodes(ProxyLocation.EveryNode, nodes) == ["h", "w"]
    assert proxy_nodes(ProxyLocation.HeadOnly, nodes) == ["h"]
    assert proxy_nodes(ProxyLocation.NoServer, nodes) == []
