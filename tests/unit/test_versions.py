"""serve_nb.core.versions: structural code hashes that survive notebook re-runs, and the other versions."""

from __future__ import annotations

import pickle
import textwrap

import pytest

from serve_nb.config import DeploymentConfig
from serve_nb.core.versions import args_version, code_version, config_version, json_version, replica_version

CELL = textwrap.dedent(
    '''
    import math

    SCALE = 2
    LIMIT = 3

    def helper(x):
        return x * 3

    def outer(x):
        return helper(x) + 1

    class Base:
        def greet(self):
            return "hi"

    class Model(Base):
        factor = 5

        def __init__(self, k=1):
            super().__init__()
            self.k = k

        def __call__(self, x):
            # a comment
            total = helper(x) * SCALE + self.k
            return total + [i for i in range(LIMIT)][0] + math.floor(0.5)

        def chained(self, x):
            return outer(x)

        @property
        def prop(self):
            return "p"

        @staticmethod
        def static():
            return "s"

        @classmethod
        def klass(cls):
            return "c"
    '''
)


def run_cell(source: str, name: str = "Model"):
    """Run ``source`` as a fresh notebook cell would (a new namespace named __main__) and return ``name``."""
    namespace = {"__name__": "__main__"}
    exec(compile(source, "<ipython-input>", "exec"), namespace)
    return namespace[name]


def changed(old: str, new: str) -> str:
    assert CELL.count(old) == 1, f"{old!r} must occur exactly once in CELL"
    return CELL.replace(old, new)


# --------------------------------------------------------------------------- code_version


def test_identical_classes_from_separate_runs_have_equal_versions():
    first, second = run_cell(CELL), run_cell(CELL)
    assert first is not second
    assert code_version(first) == code_version(second)


def test_code_version_is_short_hex():
    version = code_version(run_cell(CELL))
    assert len(version) == 16
    int(version, 16)


def test_line_number_shift_does_not_change_version():
    shifted = "\n\n\n\n# a new first line\n\n" + CELL
    assert code_version(run_cell(shifted)) == code_version(run_cell(CELL))


def test_blank_lines_and_comments_inside_a_method_do_not_change_version():
    edited = changed("        # a comment\n", "\n\n        # another comment\n        # more\n")
    assert code_version(run_cell(edited)) == code_version(run_cell(CELL))


def test_different_filename_does_not_change_version():
    ns = {"__name__": "__main__"}
    exec(compile(CELL, "<another-cell-id>", "exec"), ns)
    assert code_version(ns["Model"]) == code_version(run_cell(CELL))


@pytest.mark.parametrize(
    "old, new",
    [
        pytest.param("+ self.k\n", "- self.k\n", id="method-body"),
        pytest.param("factor = 5", "factor = 6", id="class-constant"),
        pytest.param("def __init__(self, k=1)", "def __init__(self, k=2)", id="default-arg"),
        pytest.param("return x * 3", "return x * 4", id="global-helper-body"),
        pytest.param("SCALE = 2", "SCALE = 3", id="global-constant"),
        pytest.param("LIMIT = 3", "LIMIT = 4", id="global-constant-in-comprehension"),
        pytest.param("return helper(x) + 1", "return helper(x) + 2", id="transitive-helper"),
        pytest.param('return "hi"', 'return "hello"', id="base-class-method"),
        pytest.param('return "p"', 'return "q"', id="property"),
        pytest.param('return "s"', 'return "t"', id="staticmethod"),
        pytest.param('return "c"', 'return "d"', id="classmethod"),
        pytest.param("import math", "import cmath as math", id="imported-module"),
        pytest.param("total = helper(x)", "result = helper(x)", id="local-variable-name"),
    ],
)
def test_code_change_changes_version(old, new):
    assert code_version(run_cell(changed(old, new))) != code_version(run_cell(CELL))


def test_adding_a_method_changes_version():
    edited = changed("    @property\n", "    def extra(self):\n        return 0\n\n    @property\n")
    assert code_version(run_cell(edited)) != code_version(run_cell(CELL))


def test_global_changed_after_definition_changes_version():
    """A constant re-assigned in a later cell is seen: globals are read when hashing, not at class creation."""
    ns = {"__name__": "__main__"}
    exec(compile(CELL, "<cell>", "exec"), ns)
    before = code_version(ns["Model"])
    ns["SCALE"] = 10
    assert code_version(ns["Model"]) != before
    ns["SCALE"] = 2
    assert code_version(ns["Model"]) == before


def test_unreferenced_global_does_not_change_version():
    edited = CELL + "\nUNUSED = 123\n\ndef unrelated():\n    return 1\n"
    assert code_version(run_cell(edited)) == code_version(run_cell(CELL))


def test_functions_from_separate_runs_have_equal_versions():
    src = "RATE = 0.5\n\ndef handler(request, scale=2):\n    return request * scale * RATE\n"
    assert code_version(run_cell(src, "handler")) == code_version(run_cell(src, "handler"))
    assert code_version(run_cell("\n\n" + src, "handler")) == code_version(run_cell(src, "handler"))
    assert code_version(run_cell(src.replace("scale=2", "scale=3"), "handler")) != code_version(
        run_cell(src, "handler")
    )
    assert code_version(run_cell(src.replace("RATE = 0.5", "RATE = 0.6"), "handler")) != code_version(
        run_cell(src, "handler")
    )
    assert code_version(run_cell(src.replace("* RATE", "+ RATE"), "handler")) != code_version(
        run_cell(src, "handler")
    )


def test_closure_value_changes_version():
    src = "def make(n):\n    def f(x):\n        return x + n\n    return f\nf = make(1)\ng = make(1)\nh = make(2)\n"
    ns = {"__name__": "__main__"}
    exec(src, ns)
    assert code_version(ns["f"]) == code_version(ns["g"])
    assert code_version(ns["f"]) != code_version(ns["h"])


def test_dataclass_field_default_changes_version():
    src = "from dataclasses import dataclass\n\n@dataclass\nclass Model:\n    x: int = 1\n"
    assert code_version(run_cell(src)) == code_version(run_cell(src))
    assert code_version(run_cell(src.replace("= 1", "= 2"))) != code_version(run_cell(src))


def test_opaque_global_uses_serializer_when_given():
    src = "from decimal import Decimal\nRATE = Decimal('{}')\n\ndef f(x):\n    return x * RATE\n"
    one, same, other = (run_cell(src.format(v), "f") for v in ("1.5", "1.5", "2.5"))
    assert code_version(one, pickle.dumps) == code_version(same, pickle.dumps)
    assert code_version(one, pickle.dumps) != code_version(other, pickle.dumps)


def test_self_referencing_helper_terminates_and_is_stable():
    src = "def fact(n):\n    return 1 if n <= 1 else n * fact(n - 1)\n"
    assert code_version(run_cell(src, "fact")) == code_version(run_cell(src, "fact"))


# --------------------------------------------------------------------------- args_version


def test_args_version_equal_for_equal_arguments_built_separately():
    a = args_version((1, [2, 3], {"k": "v"}), {"x": 1.5}, pickle.dumps)
    b = args_version((1, [2, 3], {"k": "v"}), {"x": 1.5}, pickle.dumps)
    assert a == b
    assert len(a) == 16


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((2, [2, 3], {"k": "v"}), {"x": 1.5}),
        ((1, [2, 4], {"k": "v"}), {"x": 1.5}),
        ((1, [2, 3], {"k": "w"}), {"x": 1.5}),
        ((1, [2, 3], {"k": "v"}), {"x": 2.5}),
        ((1, [2, 3], {"k": "v"}), {"y": 1.5}),
        ((1, [2, 3], {"k": "v"}), {}),
        ((1, (2, 3), {"k": "v"}), {"x": 1.5}),
        ((True, [2, 3], {"k": "v"}), {"x": 1.5}),
    ],
)
def test_args_version_changes_with_arguments(args, kwargs):
    base = args_version((1, [2, 3], {"k": "v"}), {"x": 1.5}, pickle.dumps)
    assert args_version(args, kwargs, pickle.dumps) != base


def test_args_version_positional_vs_keyword_differ():
    assert args_version((1,), {}, pickle.dumps) != args_version((), {"a": 1}, pickle.dumps)


def test_args_version_kwargs_order_independent():
    assert args_version((), {"a": 1, "b": 2}, pickle.dumps) == args_version((), {"b": 2, "a": 1}, pickle.dumps)


def test_args_version_uses_serializer_for_opaque_objects():
    class Handle:
        def __init__(self, name):
            self.name = name

    def serialize(obj):
        return obj.name.encode() if isinstance(obj, Handle) else pickle.dumps(obj)

    assert args_version((Handle("A"),), {}, serialize) == args_version((Handle("A"),), {}, serialize)
    assert args_version((Handle("A"),), {}, serialize) != args_version((Handle("B"),), {}, serialize)


# --------------------------------------------------------------------------- json_version


def test_json_version_key_order_independent_and_value_sensitive():
    assert json_version({"a": 1, "b": [1, 2]}) == json_version({"b": [1, 2], "a": 1})
    assert json_version({"a": 1}) != json_version({"a": 2})
    assert json_version({"a": [1, 2]}) != json_version({"a": [2, 1]})
    assert json_version(None) != json_version({})
    assert len(json_version({"a": 1})) == 16


def test_json_version_tolerates_non_json_values():
    assert json_version({"x": object}) == json_version({"x": object})


# --------------------------------------------------------------------------- replica_version / config_version


def cfg(**options):
    return DeploymentConfig.from_options(options)


BASE = cfg()


def test_replica_version_deterministic_and_sensitive_to_each_part():
    base = replica_version("code1", "args1", BASE)
    assert base == replica_version("code1", "args1", cfg(ray_actor_options={"num_cpus": 1.0}))
    assert replica_version("code2", "args1", BASE) != base
    assert replica_version("code1", "args2", BASE) != base
    assert replica_version("code1", "args1", cfg(ray_actor_options={"num_cpus": 2.0})) != base
    assert replica_version("code1", "args1", cfg(ray_actor_options={"num_cpus": 1.0, "num_gpus": 1})) != base
    assert len(base) == 16


def test_replica_version_actor_options_key_order_independent():
    a = replica_version("c", "a", cfg(ray_actor_options={"num_cpus": 1, "num_gpus": 1}))
    b = replica_version("c", "a", cfg(ray_actor_options={"num_gpus": 1, "num_cpus": 1}))
    assert a == b


def test_explicit_version_overrides_code_part():
    v1, v2 = cfg(version="v1"), cfg(version="v2")
    assert replica_version("code1", "args", v1) == replica_version("code2", "args", v1)
    assert replica_version("code1", "args", v1) != replica_version("code1", "args", v2)
    assert replica_version("code1", "args", v1) != replica_version("code1", "args", BASE)


def test_explicit_version_still_depends_on_args_and_actor_options():
    v1 = cfg(version="v1")
    assert replica_version("c", "args1", v1) != replica_version("c", "args2", v1)
    assert replica_version("c", "args1", v1) != replica_version(
        "c", "args1", cfg(version="v1", ray_actor_options={"num_cpus": 3})
    )


def test_in_place_changes_keep_the_replica_version():
    """user_config and max_ongoing_requests reconfigure, scaling is the controller's: no restart."""
    base = replica_version("c", "a", BASE)
    for options in ({"user_config": {"x": 1}}, {"max_ongoing_requests": 9}, {"num_replicas": 4}):
        assert replica_version("c", "a", cfg(**options)) == base, options


def test_config_version_follows_user_config_and_max_ongoing_requests_only():
    base = config_version(BASE)
    assert config_version(cfg()) == base
    assert config_version(cfg(user_config={"x": 1})) != base
    assert config_version(cfg(user_config={"x": 1})) == config_version(cfg(user_config={"x": 1}))
    assert config_version(cfg(max_ongoing_requests=9)) != base
    assert config_version(cfg(ray_actor_options={"num_cpus": 2})) == base
    assert config_version(cfg(version="v9")) == base


def test_end_to_end_notebook_rerun_keeps_replica_version():
    """Re-running the same cell with the same arguments must not restart replicas."""

    def version_of(source):
        cls = run_cell(source)
        return replica_version(code_version(cls), args_version((1,), {"k": 2}, pickle.dumps), BASE)

    assert version_of(CELL) == version_of("\n" + CELL)
    assert version_of(CELL) != version_of(changed("factor = 5", "factor = 7"))
