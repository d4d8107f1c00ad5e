"""serve_nb.core.snapshots.SnapshotStore: versioned values for the long-poll."""

from __future__ import annotations

from serve_nb.core.snapshots import SnapshotStore, Update, app_key, replicas_key


def test_set_new_key_is_a_change_and_readable():
    store = SnapshotStore("e1")
    assert store.set("k", {"a": 1}) is True
    assert store.get("k") == {"a": 1}
    assert store.keys() == ["k"]


def test_set_equal_value_is_not_a_change():
    store = SnapshotStore("e1")
    store.set("k", {"a": [1, 2]})
    before = store.updates_since({"k": None})["k"].version
    assert store.set("k", {"a": [1, 2]}) is False  # equal, though a different object
    assert store.updates_since({"k": ("e1", before)}) == {}
    assert store.updates_since({"k": None})["k"].version == before


def test_set_different_value_bumps_version():
    store = SnapshotStore("e1")
    store.set("k", 1)
    v1 = store.updates_since({"k": None})["k"].version
    assert store.set("k", 2) is True
    update = store.updates_since({"k": ("e1", v1)})["k"]
    assert update == Update("e1", update.version, 2)
    assert update.version > v1


def test_versions_increase_across_keys():
    store = SnapshotStore("e1")
    store.set("a", 1)
    store.set("b", 1)
    store.set("a", 2)
    ups = store.updates_since({"a": None, "b": None})
    assert ups["b"].version < ups["a"].version


def test_updates_since_only_returns_newer_and_known_keys():
    store = SnapshotStore("e1")
    store.set("a", 1)
    store.set("b", 1)
    va = store.updates_since({"a": None})["a"].version
    vb = store.updates_since({"b": None})["b"].version
    store.set("b", 2)
    ups = store.updates_since({"a": ("e1", va), "b": ("e1", vb), "missing": None})
    assert set(ups) == {"b"}
    assert ups["b"].value == 2
    assert ups["b"].epoch == "e1"
    # a listener that has never seen a key gets it; one that is ahead gets nothing
    assert set(store.updates_since({"a": None})) == {"a"}
    assert store.updates_since({"a": ("e1", va + 100)}) == {}


def test_keys_not_asked_for_are_not_returned():
    store = SnapshotStore("e1")
    store.set("a", 1)
    store.set("b", 2)
    assert set(store.updates_since({"a": None})) == {"a"}
    assert store.updates_since({}) == {}


def test_epoch_mismatch_returns_everything_asked_for():
    store = SnapshotStore("new-epoch")
    store.set("a", 1)
    store.set("b", 2)
    current = {k: u.version for k, u in store.updates_since({"a": None, "b": None}).items()}
    # versions as high or higher than ours, but from an earlier controller incarnation
    known = {"a": ("old-epoch", current["a"]), "b": ("old-epoch", current["b"] + 50)}
    ups = store.updates_since(known)
    assert set(ups) == {"a", "b"}
    assert ups["a"] == Update("new-epoch", current["a"], 1)
    assert ups["b"] == Update("new-epoch", current["b"], 2)


def test_delete_publishes_none_and_hides_key():
    store = SnapshotStore("e1")
    store.set("a", 1)
    v1 = store.updates_since({"a": None})["a"].version
    assert store.delete("a") is True
    assert store.get("a") is None
    assert store.keys() == []
    update = store.updates_since({"a": ("e1", v1)})["a"]
    assert update.value is None and update.version > v1


def test_delete_twice_or_missing_is_not_a_change():
    store = SnapshotStore("e1")
    assert store.delete("never") is False
    assert store.updates_since({"never": None}) == {}
    store.set("a", 1)
    store.delete("a")
    v = store.updates_since({"a": None})["a"].version
    assert store.delete("a") is False
    assert store.updates_since({"a": ("e1", v)}) == {}


def test_set_after_delete_is_a_change():
    store = SnapshotStore("e1")
    store.set("a", 1)
    store.delete("a")
    v = store.updates_since({"a": None})["a"].version
    assert store.set("a", 1) is True
    assert store.updates_since({"a": ("e1", v)})["a"].value == 1
    assert store.keys() == ["a"]


def test_key_helpers():
    assert replicas_key("app", "Model") == "replicas:app#Model"
    assert app_key("app") == "app:app"
