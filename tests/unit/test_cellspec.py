"""serve_nb.core.cellspec: the %%serve line flags, deployment options, route prefix, defined names."""

from __future__ import annotations

import pytest

from serve_nb.config import DeploymentConfig
from serve_nb.core.cellspec import (DEFAULT, CellSpec, CellSpecError, default_app_name, defined_names, parse_line,
                                   pick_ingress)


def error_of(line: str) -> str:
    with pytest.raises(CellSpecError) as info:
        parse_line(line)
    msg = str(info.value)
    assert msg.startswith("%%serve:"), msg
    return msg


# --------------------------------------------------------------------------- defaults


def test_empty_line_gives_defaults():
    spec = parse_line("")
    assert spec == CellSpec()
    assert spec.name is None
    assert spec.route_prefix is DEFAULT
    assert spec.num_replicas is None and spec.autoscale is None and spec.max_ongoing is None
    assert spec.has_user_config is False and spec.user_config is None
    assert spec.args is None
    assert spec.wait is True
    assert spec.deployment_options() == {}
    assert spec.app_route_prefix("shop") == "/shop"


def test_whitespace_only_line_gives_defaults():
    assert parse_line("   \t ") == CellSpec()


def test_cellspec_error_is_a_value_error():
    assert issubclass(CellSpecError, ValueError)


# --------------------------------------------------------------------------- --name


def test_name():
    assert parse_line("--name shop").name == "shop"
    assert parse_line("--name=shop").name == "shop"


def test_name_with_space_via_quotes():
    assert parse_line("--name 'my shop'").name == "my shop"


@pytest.mark.parametrize("line", ["--name ''", "--name a/b", "--name /"])
def test_bad_name(line):
    msg = error_of(line)
    assert "--name" in msg
    assert "'/'" in msg or "non-empty" in msg


def test_name_missing_value():
    assert "--name" in error_of("--name")


# --------------------------------------------------------------------------- --route-prefix / --no-http


def test_route_prefix():
    spec = parse_line("--route-prefix /api/v1")
    assert spec.route_prefix == "/api/v1"
    assert spec.app_route_prefix("anything") == "/api/v1"


def test_route_prefix_root():
    assert parse_line("--route-prefix /").app_route_prefix("shop") == "/"


def test_no_http():
    spec = parse_line("--no-http")
    assert spec.route_prefix is None
    assert spec.app_route_prefix("shop") is None


@pytest.mark.parametrize("line", ["--route-prefix api", "--route-prefix ''", "--route-prefix api/"])
def test_route_prefix_must_start_with_slash(line):
    msg = error_of(line)
    assert "--route-prefix must start with '/'" in msg


@pytest.mark.parametrize("line", ["--route-prefix /a --no-http", "--no-http --route-prefix /a"])
def test_route_prefix_and_no_http_are_mutually_exclusive(line):
    msg = error_of(line)
    assert "--route-prefix" in msg and "--no-http" in msg
    assert "not allowed with" in msg
    assert "Usage:" in msg


def test_no_http_takes_no_value():
    assert "--no-http" in error_of("--no-http=yes")


# --------------------------------------------------------------------------- --num-replicas / --autoscale


def test_num_replicas():
    spec = parse_line("--num-replicas 3")
    assert spec.num_replicas == 3
    assert spec.deployment_options() == {"num_replicas": 3}


@pytest.mark.parametrize("value", ["0", "-1", "-10"])
def test_num_replicas_below_one(value):
    msg = error_of(f"--num-replicas {value}")
    assert msg == f"%%serve: --num-replicas must be >= 1, got {value}."


@pytest.mark.parametrize("value", ["two", "1.5", "''"])
def test_num_replicas_not_an_int(value):
    msg = error_of(f"--num-replicas {value}")
    assert "--num-replicas" in msg and "invalid int value" in msg


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1:4", (1, 4, None)),
        ("0:3", (0, 3, None)),
        ("2:2", (2, 2, None)),
        ("1:4:2", (1, 4, 2.0)),
        ("0:10:0.5", (0, 10, 0.5)),
    ],
)
def test_autoscale(text, expected):
    spec = parse_line(f"--autoscale {text}")
    assert spec.autoscale == expected
    assert spec.num_replicas is None


def test_autoscale_deployment_options_without_target():
    assert parse_line("--autoscale 0:3").deployment_options() == {
        "num_replicas": "auto",
        "autoscaling_config": {"min_replicas": 0, "max_replicas": 3},
    }


def test_autoscale_deployment_options_with_target():
    assert parse_line("--autoscale 1:4:2.5").deployment_options() == {
        "num_replicas": "auto",
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2.5},
    }


def test_autoscale_options_are_accepted_by_deployment_config():
    options = parse_line("--autoscale 0:5:3 --max-ongoing 7").deployment_options()
    config = DeploymentConfig.from_options(options)
    assert config.autoscaling_config is not None
    assert (config.autoscaling_config.min_replicas, config.autoscaling_config.max_replicas) == (0, 5)
    assert config.autoscaling_config.target_ongoing_requests == 3.0
    assert config.max_ongoing_requests == 7


@pytest.mark.parametrize("text", ["1", "1:2:3:4", "a:b", "1.5:3", "1:", ":4", "1:4:x", "1-4"])
def test_autoscale_bad_shape(text):
    msg = error_of(f"--autoscale {text}")
    assert "--autoscale takes MIN:MAX or MIN:MAX:TARGET" in msg
    assert repr(text) in msg


@pytest.mark.parametrize("text", ["3:1", "0:0", "-1:2"])
def test_autoscale_bad_bounds(text):
    msg = error_of(f"--autoscale={text}")
    assert "0 <= MIN <= MAX and MAX >= 1" in msg
    assert repr(text) in msg


@pytest.mark.parametrize("text", ["1:4:0", "1:4:-2"])
def test_autoscale_target_must_be_positive(text):
    msg = error_of(f"--autoscale={text}")
    assert "TARGET must be > 0" in msg
    assert repr(text) in msg


def test_autoscale_empty_value_is_an_error():
    with pytest.raises(CellSpecError):
        parse_line("--autoscale ''")


@pytest.mark.parametrize("text", ["1:4:nan", "1:4:inf"])
def test_autoscale_non_finite_target_is_an_error(text):
    with pytest.raises(CellSpecError):
        parse_line(f"--autoscale {text}")


@pytest.mark.parametrize("line", ["--num-replicas 2 --autoscale 1:3", "--autoscale 1:3 --num-replicas 2"])
def test_num_replicas_and_autoscale_are_mutually_exclusive(line):
    msg = error_of(line)
    assert "--num-replicas" in msg and "--autoscale" in msg
    assert "not allowed with" in msg


# --------------------------------------------------------------------------- --max-ongoing


def test_max_ongoing():
    spec = parse_line("--max-ongoing 8")
    assert spec.max_ongoing == 8
    assert spec.deployment_options() == {"max_ongoing_requests": 8}


@pytest.mark.parametrize("value", ["0", "-3"])
def test_max_ongoing_below_one(value):
    assert error_of(f"--max-ongoing {value}") == f"%%serve: --max-ongoing must be >= 1, got {value}."


def test_max_ongoing_not_an_int():
    msg = error_of("--max-ongoing lots")
    assert "--max-ongoing" in msg and "invalid int value: 'lots'" in msg


# --------------------------------------------------------------------------- --user-config


def test_user_config_json_object():
    spec = parse_line("""--user-config '{"threshold": 0.5, "labels": ["a", "b"]}'""")
    assert spec.has_user_config is True
    assert spec.user_config == {"threshold": 0.5, "labels": ["a", "b"]}
    assert spec.deployment_options() == {"user_config": {"threshold": 0.5, "labels": ["a", "b"]}}


@pytest.mark.parametrize("text, value", [("null", None), ("0", 0), ("false", False), ('\'""\'', ""), ("'[]'", [])])
def test_user_config_falsy_values_are_still_passed(text, value):
    spec = parse_line(f"--user-config {text}")
    assert spec.has_user_config is True
    assert spec.user_config == value
    assert "user_config" in spec.deployment_options()
    assert spec.deployment_options()["user_config"] == value


@pytest.mark.parametrize("text", ["'{bad'", "\"{'a': 1}\"", "undefined", "'{\"a\": 1,}'"])
def test_user_config_must_be_json(text):
    msg = error_of(f"--user-config {text}")
    assert "--user-config must be JSON" in msg


def test_user_config_unquoted_json_with_spaces_is_an_error_not_a_crash():
    # shlex splits the JSON into several words; the leftovers are unrecognized arguments
    msg = error_of('--user-config {"a": 1}')
    assert "unrecognized arguments" in msg or "--user-config must be JSON" in msg


# --------------------------------------------------------------------------- --args / --no-wait


def test_args_kept_as_text():
    spec = parse_line("""--args '"model.bin", batch=4'""")
    assert spec.args == '"model.bin", batch=4'
    assert spec.deployment_options() == {}


def test_args_starting_with_dash_via_equals():
    assert parse_line("--args=-1").args == "-1"


def test_no_wait():
    assert parse_line("--no-wait").wait is False
    assert parse_line("--name x").wait is True


# --------------------------------------------------------------------------- combined


def test_all_flags_together():
    spec = parse_line(
        "--name shop --route-prefix /store --autoscale 1:5:3 --max-ongoing 10 "
        """--user-config '{"k": 1}' --args 'cfg, x=2' --no-wait"""
    )
    assert spec == CellSpec(
        name="shop", route_prefix="/store", num_replicas=None, autoscale=(1, 5, 3.0), max_ongoing=10,
        user_config={"k": 1}, has_user_config=True, args="cfg, x=2", wait=False,
    )
    assert spec.deployment_options() == {
        "num_replicas": "auto",
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 5, "target_ongoing_requests": 3.0},
        "max_ongoing_requests": 10,
        "user_config": {"k": 1},
    }
    assert spec.app_route_prefix("shop") == "/store"


def test_flag_order_does_not_matter():
    a = parse_line("--no-wait --num-replicas 2 --name a --no-http")
    b = parse_line("--name a --no-http --num-replicas 2 --no-wait")
    assert a == b
    assert a.deployment_options() == {"num_replicas": 2}
    assert a.app_route_prefix("a") is None


def test_deployment_options_returns_a_fresh_dict():
    spec = parse_line("--num-replicas 2")
    spec.deployment_options()["num_replicas"] = 99
    assert spec.deployment_options() == {"num_replicas": 2}


# --------------------------------------------------------------------------- malformed lines


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("--frobnicate", "unrecognized arguments: --frobnicate"),
        ("shop", "unrecognized arguments: shop"),
        ("--help", "unrecognized arguments: --help"),
        ("-h", "unrecognized arguments: -h"),
        ("--num-replicas", "expected one argument"),
        ("--autoscale", "expected one argument"),
        ("--user-config", "expected one argument"),
        ("--args", "expected one argument"),
        ("--no", "ambiguous option"),
    ],
)
def test_argparse_errors_become_cellspec_errors_with_usage(line, fragment):
    msg = error_of(line)
    assert fragment in msg
    assert "Usage:" in msg and "--autoscale" in msg  # the usage lists the flags


@pytest.mark.parametrize("line", ["--name 'shop", '--args "x', "--user-config '{\"a\": 1}"])
def test_unbalanced_quotes(line):
    msg = error_of(line)
    assert "cannot parse the line" in msg
    assert "check the quotes" in msg


@pytest.mark.parametrize(
    "line",
    ["--help", "-h", "--num-replicas", "--bogus 1", "--no-http --route-prefix /x", "'", "--autoscale 9:1",
     "--user-config {", "--max-ongoing 0", "--name ''"],
)
def test_malformed_never_exits_the_kernel(line):
    try:
        parse_line(line)
    except CellSpecError:
        pass
    except BaseException as exc:  # SystemExit included
        pytest.fail(f"{line!r} raised {type(exc).__name__}, not CellSpecError")
    else:
        pytest.fail(f"{line!r} was accepted")


# --------------------------------------------------------------------------- CellSpec directly


def test_app_route_prefix_default_uses_app_name():
    assert CellSpec().app_route_prefix("my_app") == "/my_app"
    assert CellSpec(route_prefix=None).app_route_prefix("my_app") is None
    assert CellSpec(route_prefix="/x").app_route_prefix("my_app") == "/x"


def test_deployment_options_has_user_config_flag_decides():
    assert CellSpec(user_config={"a": 1}, has_user_config=False).deployment_options() == {}
    assert CellSpec(user_config=None, has_user_config=True).deployment_options() == {"user_config": None}


def test_default_app_name_lowercases():
    assert default_app_name("MyModel") == "mymodel"


# --------------------------------------------------------------------------- defined_names


def test_defined_names_in_source_order():
    source = (
        "import math\n"
        "x = 1\n"
        "class Model:\n"
        "    inner = 2\n"
        "    def method(self): pass\n"
        "def helper(): pass\n"
        "async def handler(): pass\n"
        "y: int = 3\n"
        "app = Model.bind()\n"
    )
    assert defined_names(source) == ["x", "Model", "helper", "handler", "y", "app"]


def test_defined_names_decorated_definitions():
    source = "@serve.deployment\nclass A:\n    pass\n\n@serve.deployment\nasync def b():\n    pass\n"
    assert defined_names(source) == ["A", "b"]


def test_defined_names_chained_assignment():
    assert defined_names("a = b = 1") == ["a", "b"]


def test_defined_names_skips_non_name_targets_and_nested_scopes():
    source = (
        "obj.attr = 1\n"
        "d['k'] = 2\n"
        "if True:\n    hidden = 3\n"
        "for i in range(2):\n    pass\n"
        "def f():\n    local = 4\n"
        "print('hi')\n"
    )
    assert defined_names(source) == ["f"]


def test_defined_names_redefinition_listed_each_time():
    assert defined_names("class A: pass\nclass A: pass\n") == ["A", "A"]


@pytest.mark.parametrize("source", ["def broken(:\n", "class X\n", "x = = 1", "%%serve\nclass A: pass"])
def test_defined_names_syntax_error_gives_empty(source):
    assert defined_names(source) == []


def test_defined_names_empty_source():
    assert defined_names("") == []
    assert defined_names("# just a comment\n") == []



# --------------------------------------------------------------------------- pick_ingress


def _pick(kinds: list[str]) -> int | None:
    """Index of the candidate picked among ones labelled 'dep', 'cls' or 'other'."""
    candidates = list(enumerate(kinds))
    found = pick_ingress(candidates, lambda c: c[1] == "dep", lambda c: c[1] == "cls")
    return None if found is None else found[0]


def test_pick_ingress_prefers_the_last_deployment_over_any_later_class():
    assert _pick(["cls", "dep", "dep", "cls", "other"]) == 2


def test_pick_ingress_without_a_deployment_takes_the_last_class_or_function():
    assert _pick(["cls", "other", "cls", "other"]) == 2


def test_pick_ingress_finds_nothing_among_plain_values():
    assert _pick(["other", "other"]) is None
    assert _pick([]) is None
