"""Feed keys stay plain strings on the wire; code tells them apart by parsing, not by prefix matching."""

from __future__ import annotations

import pytest

from serve_nb import feed
from serve_nb.core.snapshots import ROUTES_KEY, STATUS_KEY, FeedKey, FeedKeyKind, app_key, parse_key, replicas_key


def test_the_wire_format_is_unchanged():
    assert (ROUTES_KEY, STATUS_KEY) == ("routes", "status")
    assert replicas_key("app", "Model") == "replicas:app#Model"
    assert app_key("app") == "app:app"
    assert (feed.ROUTES, feed.STATUS, feed.replicas("a", "b"), feed.app("a")) == ("routes", "status", "replicas:a#b", "app:a")


@pytest.mark.parametrize("key, parsed", [
    (ROUTES_KEY, FeedKey(FeedKeyKind.ROUTES)),
    (STATUS_KEY, FeedKey(FeedKeyKind.STATUS)),
    (replicas_key("my app", "Model"), FeedKey(FeedKeyKind.REPLICAS, "my app", "Model")),
    (app_key("app:with:colons"), FeedKey(FeedKeyKind.APP, "app:with:colons")),
])
def test_every_key_parses_back_to_what_built_it(key, parsed):
    assert parse_key(key) == parsed


@pytest.mark.parametrize("key", ["", "replicas:no-deployment", "other:thing"])
def test_unknown_keys_parse_to_none(key):
    assert parse_key(key) is None
