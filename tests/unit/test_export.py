"""serve_nb.core.export: a notebook's %%serve apps as a module plus a Ray Serve config (no Ray, no kernel)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from textwrap import dedent

import pytest

from serve_nb.core.cellcode import pip_specs
from serve_nb.core.export import Cell, Export, ExportError, export_notebook

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
#: What a module starts with when an ingress is undecorated (the magic wraps it with serve.deployment).
WRAP = "import serve_nb as _serve_nb  # wraps an undecorated ingress, as %%serve does\n\n\n"


def cells_of(*sources: str) -> list[Cell]:
    """Cells labelled In [1], In [2], ... in the order given."""
    return [Cell(dedent(source).strip("\n"), f"In [{n}]") for n, source in enumerate(sources, 1)]


def export(*sources: str, only_app: str | None = None) -> Export:
    return export_notebook(cells_of(*sources), "exported", only_app, notebook="test.ipynb")


def code(result: Export) -> str:
    """The module without its header comment."""
    return result.module_source.split("\n\n\n", 1)[1]


def error(*sources: str, only_app: str | None = None) -> str:
    with pytest.raises(ExportError) as info:
        export(*sources, only_app=only_app)
    assert "\n" not in str(info.value)
    return str(info.value)


def import_module(tmp_path: Path, result: Export, name: str) -> object:
    """Write the module as ``name`` and import it, as ``serve_nb run`` would."""
    (tmp_path / f"{name}.py").write_text(result.module_source)
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


SERVE_FRAUD = """
    %%serve --name fraud
    class Fraud:
        def __call__(self, request):
            return score(0.7)
"""


# --------------------------------------------------------------------------- what the module holds


def test_an_app_gets_the_helper_constant_and_import_it_uses_from_other_cells_in_order():
    result = export(
        "import math\nimport json",
        "THRESHOLD = 0.5\nOTHER = 3",
        "def score(x):\n    return math.sqrt(x) > THRESHOLD",
        "def unused():\n    return json.dumps({})",
        SERVE_FRAUD,
    )
    assert code(result) == WRAP + dedent('''\
        # In [1]
        import math


        # In [2]
        THRESHOLD = 0.5


        # In [3]
        def score(x):
            return math.sqrt(x) > THRESHOLD


        # In [5] (%%serve --name fraud)
        class Fraud:
            def __call__(self, request):
                return score(0.7)

        app_fraud = _serve_nb.deployment(Fraud).bind()
        ''')


def test_prints_plots_loops_magics_and_shell_lines_are_left_out():
    result = export(
        "%load_ext serve_nb\n%serve_connect\n!nvidia-smi\nimport matplotlib.pyplot as plt\nLABELS = ['a', 'b']",
        "print(LABELS)\nplt.plot([1, 2])\nplt.show()\nLABELS\nfor label in LABELS:\n    print(label)",
        "%%time\nslow = sum(range(10))",
        "%%serve --name labels\nclass Labels:\n    def __call__(self):\n        return LABELS",
    )
    assert code(result) == WRAP + dedent('''\
        # In [1]
        LABELS = ['a', 'b']


        # In [4] (%%serve --name labels)
        class Labels:
            def __call__(self):
                return LABELS

        app_labels = _serve_nb.deployment(Labels).bind()
        ''')


def test_a_name_read_inside_a_function_as_its_own_local_needs_no_cell():
    result = export("%%serve\ndef handler(request, limit=3):\n    total = 0\n    return [total := total + i "
                    "for i in range(limit)]")
    assert result.apps == ("handler",)


def test_names_a_method_reads_when_called_may_be_defined_after_the_class():
    result = export(
        "class Model:\n    def __call__(self):\n        return helper()",
        "def helper():\n    return 42",
        "%%serve --args 'Model()'\nclass Api:\n    def __init__(self, model):\n        self.model = model",
    )
    assert code(result).index("class Model") < code(result).index("def helper") < code(result).index("class Api")


def test_a_later_rebinding_wins():
    result = export(
        "THRESHOLD = 0.5",
        "THRESHOLD = 0.9",
        "def score(x):\n    return x > THRESHOLD",
        SERVE_FRAUD,
    )
    assert "THRESHOLD = 0.9" in code(result) and "0.5" not in code(result)


def test_a_binding_after_the_serve_cell_does_not_count():
    result = export("THRESHOLD = 0.5", "def score(x):\n    return x > THRESHOLD", SERVE_FRAUD, "THRESHOLD = 0.9")
    assert "THRESHOLD = 0.5" in code(result) and "0.9" not in code(result)


def test_a_rebinding_that_reads_the_old_value_keeps_both_in_order():
    result = export("rows = [3, 1, 2]", "rows = sorted(rows)", "def score(x):\n    return rows", SERVE_FRAUD)
    assert code(result).index("rows = [3, 1, 2]") < code(result).index("rows = sorted(rows)")


def test_changes_in_place_are_kept_and_displays_are_not():
    result = export(
        "from sklearn.linear_model import LogisticRegression\nX, y = [[0], [1]], [0, 1]",
        "model = LogisticRegression()\nmodel.fit(X, y)\nmodel.head()\nsettings = {}\nsettings['k'] = 1",
        "%%serve --args 'model, settings'\nclass Api:\n    def __init__(self, model, settings):\n        pass",
    )
    assert "model.fit(X, y)" in code(result) and "settings['k'] = 1" in code(result)
    assert "head" not in code(result)


def test_a_branch_keeps_the_binding_before_it_too():
    result = export(
        "try:\n    import ujson as json\nexcept ImportError:\n    json = None",
        "LIMIT = 1",
        "if json is None:\n    LIMIT = 2",
        "%%serve\ndef handler():\n    return LIMIT, json",
    )
    assert code(result).index("try:") < code(result).index("LIMIT = 1") < code(result).index("if json is None")


def test_statements_sharing_a_line_are_kept_one_by_one():
    result = export("RATE = 2; print(RATE); unused = 1", "%%serve\ndef rate():\n    return RATE")
    assert code(result).startswith(WRAP + "# In [1]\nRATE = 2\n\n\n")


def test_a_star_import_and_builtins_need_nothing_more():
    result = export("from math import *", "%%serve\ndef root(x):\n    return sqrt(len(str(x)))")
    assert code(result).startswith(WRAP + "# In [1]\nfrom math import *\n")


def test_future_imports_go_first():
    result = export("from __future__ import annotations", "%%serve\ndef f(x: Unknown) -> int:\n    return 1")
    assert code(result).startswith("from __future__ import annotations\n")


def test_a_cell_that_is_not_python_ran_nothing_and_binds_nothing():
    message = error("THRESHOLD = 0.5 +", "def score(x):\n    return x > THRESHOLD", SERVE_FRAUD)
    assert "uses 'THRESHOLD'" in message


# --------------------------------------------------------------------------- pip


def test_pip_install_lines_anywhere_become_runtime_env_pip():
    result = export(
        "!pip install scikit-learn==1.5 -q",
        "%pip install -U 'pandas>=2' scikit-learn==1.5\nimport pandas as pd",
        "%%capture\n!python -m pip install --index-url https://example.org/simple tqdm && echo done",
        "%%serve\n!pip install --no-deps orjson\ndef f():\n    return 1",
    )
    assert result.pip == ("scikit-learn==1.5", "pandas>=2", "tqdm", "orjson")
    assert result.config["applications"][0]["runtime_env"] == {"pip": list(result.pip)}


@pytest.mark.parametrize("command, specs", [
    ("pip install scikit-learn==1.5 -q", ["scikit-learn==1.5"]),
    ("pip3 install -r requirements.txt numpy", ["numpy"]),
    ("{sys.executable} -m pip install torch --extra-index-url https://x/y", ["torch"]),
    ("pip install {package} requests > /dev/null", ["requests"]),
    ("pip uninstall -y numpy", []),
    ("ls -la", []),
    ("pip install 'unbalanced", []),
])
def test_pip_specs(command, specs):
    assert pip_specs(command) == specs


def test_without_pip_lines_there_is_no_runtime_env():
    assert "runtime_env" not in export("%%serve\ndef f():\n    return 1").config["applications"][0]


# --------------------------------------------------------------------------- apps, flags and config


def test_args_are_carried_verbatim_and_their_names_resolved():
    result = export(
        "import serve_nb as serve",
        "@serve.deployment\nclass Model:\n    def __call__(self, x):\n        return x",
        "unrelated = 1",
        """
        %%serve --name fraud --args "Model.bind(), threshold=0.5"
        class Fraud:
            def __init__(self, model, threshold):
                self.model, self.threshold = model, threshold""",
    )
    assert "app_fraud = _serve_nb.deployment(Fraud).bind(Model.bind(), threshold=0.5)" in code(result)
    assert code(result).startswith("import serve_nb as _serve_nb")
    assert "class Model" in code(result) and "import serve_nb as serve" in code(result)
    assert "unrelated" not in code(result)


def test_two_apps_in_one_notebook():
    result = export(
        "import serve_nb as serve\nGREETING = 'hi'",
        "%%serve --name greet\n@serve.deployment\nclass Greeter:\n    def __call__(self):\n        return GREETING",
        "print('between')",
        "%%serve --no-http\ndef echo(x):\n    return x",
    )
    assert result.apps == ("greet", "echo")
    assert code(result).index("app_greet = Greeter.bind()") < code(result).index("app_echo = _serve_nb.deployment(echo)")
    routes = [(a["name"], a["route_prefix"], a["import_path"]) for a in result.config["applications"]]
    assert routes == [("greet", "/greet", "exported:app_greet"), ("echo", None, "exported:app_echo")]


def test_only_app_exports_that_app_alone():
    result = export("%%serve --name a\ndef a():\n    return 1", "%%serve --name b\ndef b():\n    return 2",
                    only_app="b")
    assert result.apps == ("b",)
    assert "def a" not in code(result)


def test_a_serve_cell_run_again_replaces_its_app():
    result = export(
        "%%serve --name hello\nclass Hello:\n    greeting = 'Hello'",
        "%%serve --name other\ndef other():\n    return 1",
        "%%serve --name hello --num-replicas 2\nclass Hello:\n    greeting = 'Hi'",
    )
    assert result.apps == ("other", "hello")
    assert "'Hello'" not in code(result) and "'Hi'" in code(result)
    assert result.config["applications"][1]["deployments"] == [{"name": "Hello", "num_replicas": 2}]


def test_flags_become_the_config_deployment_options_and_not_module_options():
    result = export("""
        %%serve --name shop --route-prefix /store --autoscale 1:5:3 --max-ongoing 10 --user-config '{"k": 1}'
        class Shop:
            def reconfigure(self, config):
                self.config = config""")
    assert result.config == {
        "proxy_location": "EveryNode",
        "http_options": {"host": "127.0.0.1", "port": 8000},
        "applications": [{
            "name": "shop", "route_prefix": "/store", "import_path": "exported:app_shop", "args": {},
            "deployments": [{
                "name": "Shop", "num_replicas": "auto",
                "autoscaling_config": {"min_replicas": 1, "max_replicas": 5, "target_ongoing_requests": 3.0},
                "max_ongoing_requests": 10, "user_config": {"k": 1},
            }],
        }],
    }
    assert ".options(" not in result.module_source
    json.dumps(result.config)  # plain data, ready for YAML or JSON


@pytest.mark.parametrize("cell, ingress, deployment", [
    ("@serve.deployment\nclass A: pass\nclass B: pass", "A.bind()", "A"),
    ("class A: pass\ndef b(): pass", "_serve_nb.deployment(b).bind()", "b"),
    ("class Impl: pass\nA = serve.deployment(Impl)\nhelper = 1", "A.bind()", "Impl"),
    ("@serve.deployment(name='Named')\nclass A: pass", "A.bind()", "Named"),
    ("@serve.deployment('Counter', num_replicas=2)\nclass A: pass", "A.bind()", "Counter"),
    ("@serve.deployment\nclass A: pass\nB = A.options(name='Bee')", "B.bind()", "Bee"),
    ("class Impl: pass\nA = serve.deployment(name='Wrapped')(Impl)", "A.bind()", "Wrapped"),
])
def test_the_ingress_and_its_deployment_name_are_the_ones_the_magic_picks(cell, ingress, deployment):
    result = export("import serve_nb as serve", f"%%serve --name app\n{cell}")
    assert f"app_app = {ingress}" in code(result)
    assert result.config["applications"][0]["deployments"][0]["name"] == deployment


def test_the_default_app_name_is_the_deployment_name_lower_cased():
    result = export("import serve_nb as serve", "%%serve\n@serve.deployment(name='MyModel')\nclass A: pass")
    assert result.apps == ("mymodel",)
    assert result.config["applications"][0]["route_prefix"] == "/mymodel"


def test_app_variables_are_identifiers_distinct_from_the_notebooks_names():
    result = export("app_remote_echo = 'taken'", "%%serve --name remote-echo\ndef echo():\n    return app_remote_echo")
    assert "app_remote_echo_2 = _serve_nb.deployment(echo).bind()" in code(result)
    assert result.config["applications"][0]["import_path"] == "exported:app_remote_echo_2"


def test_the_same_import_in_two_apps_cells_is_one_binding():
    result = export("%%serve --name a\nimport math\ndef a():\n    return math.pi",
                    "%%serve --name b\nimport math\ndef b():\n    return math.e")
    assert result.apps == ("a", "b")


# --------------------------------------------------------------------------- the module itself


def test_the_module_compiles_is_deterministic_and_says_where_it_comes_from():
    sources = ("import math", "def score(x):\n    return math.sqrt(x)", SERVE_FRAUD)
    result = export(*sources)
    compile(result.module_source, "exported.py", "exec")
    assert export(*sources) == result
    assert result.module_source.startswith("# Generated by serve_nb from test.ipynb")
    assert "serve_nb run serve_config.yaml" in result.module_source


def test_importing_the_module_gives_the_apps_as_applications(tmp_path):
    import serve_nb

    result = export(
        "import serve_nb as serve\nfrom starlette.requests import Request",
        "@serve.deployment\nclass Model:\n    def __call__(self, x):\n        return x",
        "%%serve --name fraud --num-replicas 2 --args 'Model.bind(), threshold=0.5'\n"
        "class Fraud:\n    def __init__(self, model, threshold):\n        self.threshold = threshold\n"
        "    async def __call__(self, request: Request):\n        return self.threshold",
        "%%serve --no-http\ndef echo(x):\n    return x",
    )
    module = import_module(tmp_path, result, "nb_export_test_module")
    fraud, echo = module.app_fraud, module.app_echo
    assert isinstance(fraud, serve_nb.Application) and isinstance(echo, serve_nb.Application)
    assert (fraud.deployment.name, echo.deployment.name) == ("Fraud", "echo")
    assert fraud.deployment.num_replicas == 1  # the flag is the config's to apply


@pytest.mark.parametrize("notebook, apps", [
    ("01_quickstart", ("hello",)), ("04_autoscaling", ("slow",)), ("05_remote_cluster", ("remote-echo",)),
    ("06_models", ("digits", "detectors", "pipeline")),
])
def test_the_example_notebooks_export_and_import(tmp_path, notebook, apps):
    if notebook == "06_models":
        pytest.importorskip("sklearn")
    document = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())
    cells = [Cell("".join(c["source"]), f"cell {n}") for n, c in enumerate(document["cells"]) if c["cell_type"] == "code"]
    result = export_notebook(cells, f"nb_{notebook}", notebook=f"notebooks/{notebook}.ipynb")
    assert result.apps == apps
    module = import_module(tmp_path, result, f"nb_{notebook}")
    assert [getattr(module, a["import_path"].split(":")[1]).deployment.name
            for a in result.config["applications"]] == [a["deployments"][0]["name"] for a in result.config["applications"]]
    assert "print(" not in result.module_source and "serve.shutdown" not in result.module_source


# --------------------------------------------------------------------------- errors, each naming the cell


def test_a_name_no_earlier_cell_defines():
    message = error("x = 1", "%%serve --name fraud\ndef fraud():\n    return threshold > 0")
    assert message == ("In [2] (%%serve --name fraud) uses 'threshold', which no earlier cell defines: define it "
                       "in a cell, or pass it with --args.")


def test_a_name_only_exec_or_a_later_cell_defines_is_missing():
    assert "uses 'threshold', which no earlier cell defines" in error(
        "exec('threshold = 1')", "%%serve\ndef f():\n    return threshold", "threshold = 2")


def test_a_missing_name_read_by_a_helper_names_the_helpers_cell_too():
    message = error("def score(x):\n    return x > threshold", SERVE_FRAUD)
    assert message.startswith("In [2] (%%serve --name fraud) uses 'threshold' (through In [1]), which no earlier")


def test_a_missing_name_in_args():
    assert error("%%serve --args 'weights'\nclass A:\n    def __init__(self, w): pass").startswith(
        "In [1] (%%serve --args 'weights') uses 'weights', which no earlier cell defines")


@pytest.mark.parametrize("cell, how", [
    ("for threshold in [0.1, 0.5]:\n    pass", "binds in a loop"),
    ("with open('t.txt') as f:\n    threshold = float(f.read())", "binds in a with block"),
    ("def setup():\n    global threshold\n    threshold = 0.5\nsetup()", "binds through 'global threshold' in a function"),
    ("threshold = %env THRESHOLD", "binds with a magic (threshold = %env THRESHOLD)"),
    ("threshold = await fetch()", "binds with a top-level await"),
])
def test_a_name_bound_where_the_export_cannot_carry_it(cell, how):
    message = error("async def fetch():\n    return 1", cell, "%%serve --name fraud\ndef f():\n    return threshold")
    assert message.startswith(f"In [3] (%%serve --name fraud) uses 'threshold', which In [2] {how}, a statement "
                              "the export cannot carry: ")
    assert message.endswith("or pass it with --args.")


def test_a_loop_before_a_plain_binding_does_not_matter():
    assert export("for threshold in [1]:\n    pass", "threshold = 2", "%%serve\ndef f():\n    return threshold").apps


def test_a_loop_inside_the_serve_cell_is_carried_with_it():
    result = export("%%serve\nTABLE = {}\nfor k in 'ab':\n    TABLE[k] = k.upper()\ndef f():\n    return TABLE, k")
    assert "for k in 'ab':" in code(result)


def test_a_function_setting_its_own_global_needs_no_cell():
    assert export("%%serve\ndef f():\n    global cache\n    cache = 1\n    return cache").apps == ("f",)


def test_a_name_only_changed_in_place_is_still_missing():
    assert "uses 'settings', which no earlier cell defines" in error(
        "settings['k'] = 1", "%%serve\ndef f():\n    return settings")


def test_an_unknown_only_app_lists_the_apps():
    assert error("%%serve --name a\ndef a(): pass", "%%serve --name b\ndef b(): pass", only_app="c") == (
        "No %%serve app named 'c'; the notebook's apps: a, b.")


def test_no_serve_cell():
    assert error("x = 1", "%serve_status") == "No %%serve cell among the 2 cells given: nothing to export."


@pytest.mark.parametrize("cells, message", [
    (["%%serve --num-replicas 0\ndef f(): pass"], "In [1] (%%serve --num-replicas 0): %%serve: --num-replicas must "
                                                   "be >= 1, got 0."),
    (["%%serve\ndef f(:\n    pass"], "In [1] (%%serve) is not valid Python (line 2 of the cell: "),
    (["%%serve --name v\nvalue = 3"], "In [1] (%%serve --name v) defines no class, function or @serve.deployment "
                                      "to deploy."),
    (["%%serve --args 'x,,'\ndef f(x): pass"], "In [1] (%%serve --args 'x,,'): --args 'x,,' is not a Python "
                                               "argument list."),
    (["%%serve --args 'x), (y'\ndef f(x): pass"], "In [1] (%%serve --args 'x), (y'): --args 'x), (y' is not a "
                                                  "Python argument list."),
    (["%%serve\nimport serve_nb as serve\n@serve.deployment(name=NAME)\nclass A: pass"],
     "In [1] (%%serve): the name of deployment 'A' is not a string literal in the source"),
    (["%%serve\nimport asyncio\nawait asyncio.sleep(0)\ndef f(): pass"],
     "In [1] (%%serve): a module cannot hold this cell's code ('await' outside function"),
    (["%%serve --name a\ndef a(): pass", "%%serve --name b --route-prefix /a\ndef b(): pass"],
     "In [2] (%%serve --name b --route-prefix /a) and In [1] (%%serve --name a) both serve route prefix '/a'"),
])
def test_a_serve_cell_that_deploys_nothing(cells, message):
    assert error(*cells).startswith(message)


def test_two_apps_needing_different_bindings_of_one_name():
    message = error(
        "LIMIT = 1",
        "%%serve --name a\ndef a():\n    return LIMIT",
        "LIMIT = 2",
        "%%serve --name b\ndef b():\n    return LIMIT",
    )
    assert message == ("In [2] (%%serve --name a) reads 'LIMIT' as In [1] binds it, but In [3] binds it again for "
                       "app 'b', and one module holds one 'LIMIT': rename one of them, or export one app at a time "
                       "(only_app).")


def test_a_module_name_that_cannot_be_imported():
    with pytest.raises(ExportError, match="Module name '06_models' cannot be imported"):
        export_notebook(cells_of("%%serve\ndef f(): pass"), "06_models")
