"""serve_nb.core.graph.build_graph: ingress, dependency order, handle substitution, name conflicts."""

from __future__ import annotations

from collections import namedtuple

import pytest

from serve_nb.core.graph import AppGraph, GraphError, build_graph
from serve_nb.deployment import deployment


class FakeHandle:
    def __init__(self, name: str, app: str) -> None:
        self.name = name
        self.app = app

    def __eq__(self, other):
        return isinstance(other, FakeHandle) and (self.name, self.app) == (other.name, other.app)

    def __repr__(self):
        return f"FakeHandle({self.name!r}, {self.app!r})"


class Recorder:
    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    def __call__(self, name, app):
        self.calls.append((name, app))
        return FakeHandle(name, app)


def make(name, **options):
    class _Cls:
        pass

    _Cls.__name__ = name
    return deployment(_Cls, **options)


def test_single_deployment():
    A = make("A")
    graph = build_graph(A.bind(1, k="v"), "app", Recorder())
    assert isinstance(graph, AppGraph)
    assert graph.ingress == "A"
    assert list(graph.nodes) == ["A"]
    node = graph.nodes["A"]
    assert node.deployment is A
    assert node.args == (1,)
    assert node.kwargs == {"k": "v"}
    assert node.children == []


def test_ingress_is_root_and_children_come_before_parents():
    Leaf, Mid, Root = make("Leaf"), make("Mid"), make("Root")
    leaf = Leaf.bind()
    app = Root.bind(Mid.bind(leaf), leaf)
    graph = build_graph(app, "app", Recorder())
    assert graph.ingress == "Root"
    order = list(graph.nodes)
    assert order.index("Leaf") < order.index("Mid") < order.index("Root")
    assert order[-1] == "Root"
    assert graph.nodes["Root"].children == ["Mid", "Leaf"]
    assert graph.nodes["Mid"].children == ["Leaf"]
    assert graph.nodes["Leaf"].children == []


def test_nested_applications_replaced_by_handles_from_factory():
    A, B, C, D, Root = (make(n) for n in ("A", "B", "C", "D", "Root"))
    rec = Recorder()
    app = Root.bind([A.bind(), 1], {"b": B.bind(), "n": 2}, (C.bind(), "x"), nested={"deep": [(D.bind(),)]})
    graph = build_graph(app, "my_app", rec)
    root = graph.nodes["Root"]
    assert root.args == (
        [FakeHandle("A", "my_app"), 1],
        {"b": FakeHandle("B", "my_app"), "n": 2},
        (FakeHandle("C", "my_app"), "x"),
    )
    assert isinstance(root.args[2], tuple)
    assert root.kwargs == {"nested": {"deep": [(FakeHandle("D", "my_app"),)]}}
    assert sorted(root.children) == ["A", "B", "C", "D"]
    assert sorted(rec.calls) == [("A", "my_app"), ("B", "my_app"), ("C", "my_app"), ("D", "my_app")]
    assert set(graph.nodes) == {"A", "B", "C", "D", "Root"}


def test_namedtuple_argument_keeps_its_type():
    Pair = namedtuple("Pair", "left right")
    A, Root = make("A"), make("Root")
    graph = build_graph(Root.bind(Pair(A.bind(), 3)), "app", Recorder())
    arg = graph.nodes["Root"].args[0]
    assert type(arg) is Pair
    assert arg.left == FakeHandle("A", "app")
    assert arg.right == 3


def test_original_application_arguments_not_mutated():
    A, Root = make("A"), make("Root")
    child = A.bind()
    lst = [child]
    app = Root.bind(lst)
    build_graph(app, "app", Recorder())
    assert lst[0] is child
    assert app._args[0] is lst


def test_same_application_object_referenced_twice_is_one_deployment():
    Shared, Root = make("Shared"), make("Root")
    shared = Shared.bind(5)
    rec = Recorder()
    graph = build_graph(Root.bind(shared, [shared], k={"s": shared}), "app", rec)
    assert list(graph.nodes) == ["Shared", "Root"]
    assert graph.nodes["Root"].children == ["Shared"]
    assert graph.nodes["Shared"].args == (5,)
    root = graph.nodes["Root"]
    assert root.args == (FakeHandle("Shared", "app"), [FakeHandle("Shared", "app")])
    assert root.kwargs == {"k": {"s": FakeHandle("Shared", "app")}}


def test_equal_bindings_of_same_deployment_are_one_deployment():
    Shared, Root = make("Shared"), make("Root")
    graph = build_graph(Root.bind(Shared.bind(1, a=2), Shared.bind(1, a=2)), "app", Recorder())
    assert list(graph.nodes) == ["Shared", "Root"]
    assert graph.nodes["Root"].children == ["Shared"]


def test_same_deployment_bound_with_different_args_is_a_conflict():
    Shared, Root = make("Shared"), make("Root")
    with pytest.raises(GraphError, match="'Shared'"):
        build_graph(Root.bind(Shared.bind(1), Shared.bind(2)), "app", Recorder())


def test_two_different_deployments_with_same_name_is_graph_error():
    first, second = make("Model"), make("Model")
    Root = make("Root")
    with pytest.raises(GraphError) as info:
        build_graph(Root.bind(first.bind(), second.bind()), "myapp", Recorder())
    msg = str(info.value)
    assert "'Model'" in msg and "'myapp'" in msg and ".options(name=" in msg


def test_options_copy_with_same_name_conflicts_with_original():
    A, Root = make("A"), make("Root")
    with pytest.raises(GraphError, match="'A'"):
        build_graph(Root.bind(A.bind(), A.options(num_replicas=2).bind()), "app", Recorder())


def test_options_renamed_copy_is_a_separate_deployment():
    A, Root = make("A"), make("Root")
    graph = build_graph(Root.bind(A.bind(), A.options(name="A2").bind()), "app", Recorder())
    assert set(graph.nodes) == {"A", "A2", "Root"}
    assert graph.nodes["A2"].deployment.func_or_class is A.func_or_class


def test_child_with_same_name_as_ingress_is_graph_error():
    Root = make("Root")
    other = make("Root")
    with pytest.raises(GraphError, match="'Root'"):
        build_graph(Root.bind(other.bind()), "app", Recorder())


def test_unbound_deployment_as_argument_is_graph_error():
    A, Root = make("A"), make("Root")
    with pytest.raises(GraphError, match=r"'A'.*without \.bind\(\)"):
        build_graph(Root.bind(A), "app", Recorder())
    with pytest.raises(GraphError, match="'A'"):
        build_graph(Root.bind(cfg={"dep": [A]}), "app", Recorder())


def test_cycle_is_graph_error():
    A = make("A")
    app = A.bind()
    app._args = (app,)  # cannot be built through bind(); guard against it anyway
    with pytest.raises(GraphError, match="cycle"):
        build_graph(app, "app", Recorder())


def test_arguments_whose_equality_raises_are_treated_as_different():
    class Weird:
        def __eq__(self, other):
            raise RuntimeError("no comparisons")

    Shared, Root = make("Shared"), make("Root")
    with pytest.raises(GraphError, match="'Shared'"):
        build_graph(Root.bind(Shared.bind(Weird()), Shared.bind(Weird())), "app", Recorder())


@pytest.mark.parametrize("value", [None, 1, "A", object()])
def test_non_application_input_is_type_error(value):
    with pytest.raises(TypeError, match="Expected an Application"):
        build_graph(value, "app", Recorder())


def test_deployment_input_is_type_error_suggesting_bind():
    A = make("A")
    with pytest.raises(TypeError, match=r"Call \.bind\(\) on the deployment first"):
        build_graph(A, "app", Recorder())


def test_factory_not_called_when_no_nested_applications():
    rec = Recorder()
    build_graph(make("A").bind([1, 2], {"x": (3,)}), "app", rec)
    assert rec.calls == []
