"""serve_nb.core.graph.build_graph: ingress, dependency order, one deployment per bound Application, renaming
(Ray Serve's rule), unbound deployments and cycles refused. Handles replace Applications when the arguments
are pickled (tests of serialization)."""

from __future__ import annotations


import pytest

from serve_nb.core.graph import AppGraph, GraphError, build_graph, scan_containers
from serve_nb.deployment import deployment


def make(name, **options):
    class _Cls:
        pass

    _Cls.__name__ = name
    return deployment(_Cls, **options)


def test_single_deployment():
    A = make("A")
    graph = build_graph(A.bind(1, k="v"), "app")
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
    graph = build_graph(app, "app")
    assert graph.ingress == "Root"
    order = list(graph.nodes)
    assert order.index("Leaf") < order.index("Mid") < order.index("Root")
    assert order[-1] == "Root"
    assert graph.nodes["Root"].children == ["Mid", "Leaf"]
    assert graph.nodes["Mid"].children == ["Leaf"]
    assert graph.nodes["Leaf"].children == []


def test_applications_nested_in_containers_are_found_and_named():
    A, B, C, D, Root = (make(n) for n in ("A", "B", "C", "D", "Root"))
    a, b, c, d = A.bind(), B.bind(), C.bind(), D.bind()
    app = Root.bind([a, 1], {"b": b, "n": 2}, (c, "x"), nested={"deep": [(d,)]})
    graph = build_graph(app, "my_app")
    root = graph.nodes["Root"]
    assert root.args[0][0] is a, "arguments stay as bound: handles replace them when they are pickled"
    assert root.children == ["A", "B", "C", "D"]
    assert {graph.names[id(x)] for x in (a, b, c, d)} == {"A", "B", "C", "D"}
    assert graph.names[id(app)] == "Root" == graph.ingress


def test_the_default_scan_walks_lists_tuples_sets_and_dict_keys_and_values_once_each():
    A, B = make("A"), make("B")
    a, b = A.bind(), B.bind()
    assert scan_containers(([a, a], {"k": (b,)}, {a}, 3, "s")) == [a, b]
    assert scan_containers(({b: 1},)) == [b]
    assert scan_containers((A,)) == [A]


def test_a_custom_scan_finds_applications_anywhere():
    A, Root = make("A"), make("Root")
    a = A.bind()

    class Holder:
        def __init__(self, inner):
            self.inner = inner

    holder = Holder(a)
    def scan(value):  # value is (args, kwargs) of the application being visited
        args, _ = value
        return [a] if args and args[0] is holder else []

    graph = build_graph(Root.bind(holder), "app", scan=scan)
    assert graph.nodes["Root"].children == ["A"] and graph.names[id(a)] == "A"


def test_original_application_arguments_not_mutated():
    A, Root = make("A"), make("Root")
    child = A.bind()
    lst = [child]
    app = Root.bind(lst)
    build_graph(app, "app")
    assert lst[0] is child
    assert app._args[0] is lst


def test_same_application_object_referenced_twice_is_one_deployment():
    Shared, Root = make("Shared"), make("Root")
    shared = Shared.bind(5)
    graph = build_graph(Root.bind(shared, [shared], k={"s": shared}), "app")
    assert list(graph.nodes) == ["Shared", "Root"]
    assert graph.nodes["Root"].children == ["Shared"]
    assert graph.nodes["Shared"].args == (5,)
    assert graph.renamed == []


@pytest.mark.parametrize("second", [(1,), (2,)], ids=["equal arguments", "other arguments"])
def test_each_binding_is_a_deployment_and_a_repeated_name_gets_a_suffix(second):
    Shared, Root = make("Shared"), make("Root")
    first, other = Shared.bind(1), Shared.bind(*second)
    graph = build_graph(Root.bind(first, other, Shared.bind(3)), "app")
    assert list(graph.nodes) == ["Shared", "Shared_1", "Shared_2", "Root"]
    assert (graph.names[id(first)], graph.names[id(other)]) == ("Shared", "Shared_1")
    assert graph.nodes["Root"].children == ["Shared", "Shared_1", "Shared_2"]
    assert graph.renamed == [("Shared", "Shared_1"), ("Shared", "Shared_2")]


def test_different_deployments_with_one_name_are_renamed_too():
    first, second = make("Model"), make("Model")
    graph = build_graph(make("Root").bind(first.bind(), second.bind()), "myapp")
    assert graph.nodes["Model"].deployment is first and graph.nodes["Model_1"].deployment is second


def test_the_ingress_is_named_last_so_a_child_keeps_the_plain_name():
    Root, other = make("Root"), make("Root")
    graph = build_graph(Root.bind(other.bind()), "app")
    assert graph.ingress == "Root_1" and graph.nodes["Root"].deployment is other


def test_options_renamed_copy_is_a_separate_deployment():
    A, Root = make("A"), make("Root")
    graph = build_graph(Root.bind(A.bind(), A.options(name="A2").bind()), "app")
    assert set(graph.nodes) == {"A", "A2", "Root"}
    assert graph.nodes["A2"].deployment.func_or_class is A.func_or_class


def test_unbound_deployment_as_argument_is_graph_error():
    A, Root = make("A"), make("Root")
    with pytest.raises(GraphError, match=r"'A'.*without \.bind\(\)"):
        build_graph(Root.bind(A), "app")
    with pytest.raises(GraphError, match="'A'"):
        build_graph(Root.bind(cfg={"dep": [A]}), "app")


def test_cycle_is_graph_error():
    A = make("A")
    app = A.bind()
    app._args = (app,)  # cannot be built through bind(); guard against it anyway
    with pytest.raises(GraphError, match="cycle"):
        build_graph(app, "app")


@pytest.mark.parametrize("value", [None, 1, "A", object()])
def test_non_application_input_is_type_error(value):
    with pytest.raises(TypeError, match="Expected an Application"):
        build_graph(value, "app")


def test_deployment_input_is_type_error_suggesting_bind():
    A = make("A")
    with pytest.raises(TypeError, match=r"Call \.bind\(\) on the deployment first"):
        build_graph(A, "app")
