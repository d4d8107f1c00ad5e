"""What each notebook cell binds and reads, statement by statement: the reading half of the notebook export.

``core/export.py`` keeps the statements a ``%%serve`` app needs. To decide, it needs, for every top-level
statement of every cell in execution order: the names it surely binds; the names it may bind (a branch of an
``if`` or ``try``) or changes in place (``obj.x = 1``, ``model.fit(X, y)``); the names it binds in a way a
module cannot carry (a loop, a ``with`` block, ``global`` in a function, ``x = %env HOME``, a top-level
``await``); the names it reads when it runs ("early": a decorator, a default, a right-hand side); and the
names the code it defines reads when called ("late": a method body). ``symtable`` gives the last two exactly,
scopes included, so a function's own locals are never mistaken for names the notebook must define.

IPython-only lines (``%magic``, ``!cmd``, ``obj?``) are blanked before parsing, and ``!pip install`` /
``%pip install`` lines collected for the config's ``runtime_env``. Pure: text in, data out.
"""

from __future__ import annotations

import ast
import builtins
import re
import shlex
import symtable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Sequence

from serve_nb.core.cellspec import CellSpec, CellSpecError, defined_names, parse_line, pick_ingress

#: Names a module has without binding them: reading one needs no cell.
BUILTINS = frozenset(dir(builtins)) | {"__name__", "__doc__", "__spec__", "__loader__", "__package__"}
_SERVE_LINE = re.compile(r"%%serve(\s|$)")
_MAGIC_ASSIGN = re.compile(r"\s*([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*=\s*[%!]")
_HELP = re.compile(r"\s*(\?{1,2}[\w.]+|[\w.]+\?{1,2})\s*$")
_PIP_OPTIONS_WITH_VALUE = frozenset({
    "-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-i", "--index-url", "--extra-index-url",
    "-f", "--find-links", "-t", "--target", "--prefix", "--root", "--upgrade-strategy", "--trusted-host",
    "--platform", "--python-version", "--only-binary", "--no-binary",
})
_SHELL_OPERATORS = ("&", "|", ";", ">", "<", "2>")
#: Method names that only show something: ``df.head()`` or ``s.plot()`` change nothing worth carrying.
_SHOWS = frozenset({"plot", "hist", "show", "head", "tail", "describe", "info", "display", "summary", "imshow"})
_COMPREHENSIONS = frozenset({"listcomp", "setcomp", "dictcomp", "genexpr"})
_BRANCHES = (ast.If, ast.Try, ast.Match, getattr(ast, "TryStar", ast.Try))


class ExportError(ValueError):
    """A notebook cannot be exported as it is; the one-line message names the cell and what to change."""


@dataclass(frozen=True)
class Cell:
    """One executed cell: its source, and how messages name it ("cell 7", "In [12]")."""

    source: str
    label: str


@dataclass(frozen=True)
class Blocked:
    """How a statement binds a name the export cannot carry, and what to write instead (for the message)."""

    how: str
    fix: str


@dataclass(frozen=True)
class Stmt:
    """One top-level statement of a cell (or a magic line standing for the names it binds)."""

    cell: int  # index of its cell in the cells given
    text: str  # as written, decorators included
    binds: frozenset[str] = frozenset()
    maybe: frozenset[str] = frozenset()  # bound on some paths only: a branch of if / try / match
    touches: frozenset[str] = frozenset()  # changed in place: obj.x = …, d[k] += …, model.fit(…)
    blocked: dict[str, Blocked] = field(default_factory=dict)  # bound in a way a module cannot carry
    star: bool = False  # ``from m import *``: may bind any name
    early: frozenset[str] = frozenset()  # read when the statement runs
    late: frozenset[str] = frozenset()  # read when code it defines is called
    imports: dict[str, str] = field(default_factory=dict)  # name -> what an import binds it to: equal rebindings
    python: bool = True  # False: a magic line, blanked in the cell's code


@dataclass(frozen=True)
class ServeCell:
    """A ``%%serve`` cell, read as the magic reads it."""

    cell: int
    label: str  # "In [7] (%%serve --name fraud)"
    spec: CellSpec
    body: str  # the cell below its first line, as Python (IPython-only lines blanked)
    stmts: range  # its statements' indices in Program.stmts
    ingress: str  # the variable holding the ingress
    deployment: str  # the ingress deployment's name
    wrap: bool  # an undecorated class or function, which the magic wraps with serve.deployment()


@dataclass(frozen=True)
class Program:
    """Every cell read: their statements in execution order, the %%serve cells, pip packages, __future__ flags."""

    cells: tuple[Cell, ...]
    stmts: tuple[Stmt, ...]
    serve_cells: tuple[ServeCell, ...]
    pip: tuple[str, ...]
    futures: tuple[str, ...]


@dataclass(frozen=True)
class _Kind:
    """What a name holds, as far as choosing the ingress goes: a deployment or a class/function, and its name."""

    deployment: bool
    name: str | None  # the deployment's (or class's, function's) name; None: not a literal in the source


def read_cells(cells: Sequence[Cell]) -> Program:
    """Read ``cells`` in order. A cell that is not valid Python ran nothing in the kernel and binds nothing
    here; a ``%%serve`` cell that is not valid, or deploys nothing, is an ExportError naming it."""
    stmts: list[Stmt] = []
    serve_cells: list[ServeCell] = []
    pip: list[str] = []
    futures: list[str] = []
    kinds: dict[str, _Kind] = {}
    for index, cell in enumerate(cells):
        head, _, body = cell.source.partition("\n")
        serve = _SERVE_LINE.match(head) is not None
        python, cell_pip, magic_binds = _clean(body if head.startswith("%%") else cell.source)
        pip += cell_pip
        if head.startswith("%%") and not serve:
            continue  # another cell magic (%%capture, %%bash, ...): only its pip lines count
        label = f"{cell.label} ({head.strip()})" if serve else cell.label
        spec = _spec(head, label) if serve else None
        try:
            tree = ast.parse(python)
            compile(python, label, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
        except SyntaxError as exc:
            if spec is None:
                continue  # it ran nothing in the kernel either
            raise ExportError(f"{label} is not valid Python (line {(exc.lineno or 0) + 1} of the cell: "
                              f"{exc.msg}): fix the cell, or leave it out.") from None
        first = len(stmts)
        nodes = sorted([(_first_line(n), 1, n) for n in tree.body] + [(line, 0, b) for line, b in magic_binds],
                       key=lambda item: item[:2])
        for _, _, node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                futures += [a.name for a in node.names if a.name not in futures]
                continue
            stmt = _read(index, python, node, futures) if isinstance(node, ast.stmt) else _magic(index, *node)
            _update_kinds(node, stmt, kinds)
            stmts.append(stmt)
        if spec is not None:
            serve_cells.append(_serve_cell(index, label, spec, python, range(first, len(stmts)), kinds))
    return Program(tuple(cells), tuple(stmts), tuple(serve_cells), tuple(dict.fromkeys(pip)), tuple(futures))


def read_statement(cell: int, source: str) -> Stmt:
    """The one statement ``source`` holds, read as if it were a cell's (for lines the export writes itself)."""
    (node,) = ast.parse(source).body
    return _read(cell, source, node, [])


def pip_specs(command: str) -> list[str]:
    """The packages a shell or ``%pip`` command installs: the words after ``pip install`` (also ``pip3`` and
    ``python -m pip``) up to a shell operator, options and their values dropped."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return []
    starts = [i + 2 for i in range(len(words) - 1)
              if words[i].rsplit("/", 1)[-1] in ("pip", "pip3") and words[i + 1] == "install"]
    specs: list[str] = []
    skip_value = False
    for word in words[starts[0]:] if starts else []:
        if word.startswith(_SHELL_OPERATORS):
            break
        if skip_value or word.startswith("-"):
            skip_value = not skip_value and word in _PIP_OPTIONS_WITH_VALUE
        elif "{" not in word and "$" not in word:  # {var} / $VAR: the kernel's values, unknown here
            specs.append(word)
    return specs


def _clean(source: str) -> tuple[str, list[str], list[tuple[int, tuple[str, str]]]]:
    """``source`` as Python, its pip packages, and the names magic assignments bind ((line, (name, line text))).

    IPython-only lines (``%magic``, ``!cmd``, ``x = %magic``, ``obj?``) are blanked, or made ``pass`` inside a
    block, so line numbers stay the cell's. Source that parses as it is has none and is left alone."""
    try:
        ast.parse(source)
        return source, [], []
    except SyntaxError:
        pass
    lines = source.split("\n")
    pip: list[str] = []
    binds: list[tuple[int, tuple[str, str]]] = []
    for number, line in enumerate(lines, 1):
        stripped = line.lstrip()
        assign = _MAGIC_ASSIGN.match(line)
        if not (stripped.startswith(("%", "!")) or assign or _HELP.match(line)):
            continue
        pip += pip_specs(line[assign.end():] if assign else stripped.lstrip("%!"))
        if assign:
            binds += [(number, (name.strip(), stripped)) for name in assign.group(1).split(",")]
        indent = line[: len(line) - len(stripped)]
        lines[number - 1] = f"{indent}pass" if indent else ""
    return "\n".join(lines), pip, binds


def _magic(cell: int, name: str, line: str) -> Stmt:
    """``name = %magic`` / ``name = !cmd``: a binding the module cannot make (the magic is the kernel's)."""
    blocked = Blocked(f"with a magic ({line})", "compute it in Python in a cell, or pass it with --args")
    return Stmt(cell, line, blocked={name: blocked}, python=False)


def _spec(head: str, label: str) -> CellSpec:
    try:
        return parse_line(head[len("%%serve"):])
    except CellSpecError as exc:
        raise ExportError(f"{label}: {exc}") from None


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", None)
    return decorators[0].lineno if decorators else node.lineno


def _read(cell: int, source: str, node: ast.stmt, futures: list[str]) -> Stmt:
    """``node`` of a cell, once the kernel has seen the ``__future__`` imports ``futures`` (it keeps them for
    every later cell, so with ``annotations`` an annotation reads no name)."""
    first = _first_line(node)
    span = SimpleNamespace(lineno=first, col_offset=node.col_offset if first == node.lineno else 0,
                           end_lineno=node.end_lineno, end_col_offset=node.end_col_offset)
    text = ast.get_source_segment(source, span) or ""  # type: ignore[arg-type]  # any object with the positions
    binds, early, late, through_global = _scan(text, futures)
    if isinstance(node, ast.Delete):
        binds = set()  # ``del x`` unbinds; symtable counts it as a binding
    blocked = {name: Blocked(f"through 'global {name}' in a function", f"return it from the function and assign "
                             f"it at top level ({name} = ...), or pass it with --args") for name in through_global}
    cannot = _cannot_carry(node)
    if cannot is not None:
        blocked.update(dict.fromkeys(binds, cannot))
        binds = set()
    maybe = binds if isinstance(node, _BRANCHES) else set()
    return Stmt(cell, text, frozenset(binds - maybe), frozenset(maybe), frozenset(_touched(node) - binds), blocked,
                isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names),
                frozenset(early), frozenset(late), _imports(node))


def _scan(text: str, futures: list[str]) -> tuple[set[str], set[str], set[str], set[str]]:
    """What a statement binds, reads when it runs, reads when code it defines runs, and binds through global."""
    prefix = f"from __future__ import {', '.join(futures)}\n" if futures else ""
    top = symtable.symtable(prefix + text, "<cell>", "exec")
    binds = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()} - set(futures)
    early = {s.get_name() for s in top.get_symbols() if s.is_referenced()}
    late: set[str] = set()
    through_global: set[str] = set()
    pending = [(child, False) for child in top.get_children()]
    while pending:
        table, inside_function = pending.pop()
        # A class body and a comprehension run when the statement runs; a function's body when it is called.
        called = inside_function or (table.get_type() == "function" and table.get_name() not in _COMPREHENSIONS)
        for symbol in table.get_symbols():
            if symbol.is_global() and symbol.is_referenced():
                (late if called else early).add(symbol.get_name())
            if symbol.is_declared_global() and symbol.is_assigned():
                through_global.add(symbol.get_name())
        pending += [(child, called) for child in table.get_children()]
    return binds, early, late, through_global


def _cannot_carry(node: ast.stmt) -> Blocked | None:
    """Why a module cannot carry what ``node`` binds: a module cannot await, and loops and ``with`` blocks in a
    notebook are mostly trials and I/O whose results should be bound by a plain statement."""
    if _awaits(node):
        return Blocked("with a top-level await", "compute it in a function the app calls, or pass it with --args")
    if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
        return Blocked("in a loop", "bind it in a plain statement (e.g. a comprehension instead of the loop), "
                                    "or pass it with --args")
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return Blocked("in a with block", "bind it in a plain statement (e.g. x = load(path), with the with block "
                                          "inside load), or pass it with --args")
    return None


def _awaits(node: ast.AST) -> bool:
    """Whether ``node`` awaits outside any function of its own (IPython runs such a cell as a coroutine)."""
    if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
        return True
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        return False
    return any(_awaits(child) for child in ast.iter_child_nodes(node))


def _root(node: ast.expr) -> tuple[str | None, set[str]]:
    """The variable at the root of ``a.b[0].c(x).d`` and the attribute names on the way."""
    attributes: set[str] = set()
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        if isinstance(node, ast.Attribute):
            attributes.add(node.attr)
        node = node.func if isinstance(node, ast.Call) else node.value
    return (node.id if isinstance(node, ast.Name) else None), attributes


def _touched(node: ast.stmt) -> set[str]:
    """Names whose object ``node`` changes in place: ``obj.x = …``, ``d[k] += …``, ``del d[k]``, and method
    calls such as ``model.fit(X, y)`` (a bare expression otherwise binds and changes nothing)."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute):
        name, attributes = _root(node.value.func)
        return {name} if name is not None and not attributes & _SHOWS else set()
    if isinstance(node, (ast.Assign, ast.Delete)):
        targets = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    else:
        return set()
    found: set[str] = set()
    while targets:
        target = targets.pop()
        if isinstance(target, (ast.Tuple, ast.List)):
            targets += target.elts
        elif isinstance(target, ast.Starred):
            targets.append(target.value)
        elif isinstance(target, (ast.Attribute, ast.Subscript)):
            found |= {name for name in [_root(target)[0]] if name is not None}
    return found


def _imports(node: ast.stmt) -> dict[str, str]:
    if isinstance(node, ast.Import):
        return {a.asname or a.name.split(".")[0]: a.name if a.asname else a.name.split(".")[0] for a in node.names}
    if isinstance(node, ast.ImportFrom):
        module = "." * node.level + (node.module or "")
        return {a.asname or a.name: f"{module}:{a.name}" for a in node.names if a.name != "*"}
    return {}


def _update_kinds(node: ast.stmt | tuple[str, str], stmt: Stmt, kinds: dict[str, _Kind]) -> None:
    """Record what the names ``stmt`` binds now hold, as far as the ingress rule asks: a deployment (and its
    name), a class or function, or anything else (forgotten)."""
    kind = None
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        decorated = (_decorated_kind(d, node.name) for d in node.decorator_list)
        kind = next((k for k in decorated if k is not None), _Kind(False, node.name))
    elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
        kind = _value_kind(node.value, kinds)
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    direct = {t.id for t in targets if isinstance(t, ast.Name)} | {getattr(node, "name", None)}
    for name in stmt.binds | stmt.maybe | stmt.blocked.keys():
        if kind is not None and name in direct:
            kinds[name] = kind
        else:
            kinds.pop(name, None)


def _is_deployment_factory(node: ast.expr) -> bool:
    """``serve.deployment`` under any module alias, or ``deployment`` imported from serve_nb."""
    return (isinstance(node, ast.Attribute) and node.attr == "deployment") or (
        isinstance(node, ast.Name) and node.id == "deployment")


def _literal_name(call: ast.Call, default: str | None, first_positional: bool) -> str | None:
    """The deployment name a ``serve.deployment(...)`` call gives: ``name=``, or a string first argument when
    ``first_positional`` (the decorator form), else ``default``; None when the source has no literal."""
    for keyword in call.keywords:
        if keyword.arg == "name":
            value = keyword.value
            return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None
    if first_positional and call.args:
        value = call.args[0]
        return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None
    return default


def _decorated_kind(decorator: ast.expr, name: str) -> _Kind | None:
    if _is_deployment_factory(decorator):
        return _Kind(True, name)
    if isinstance(decorator, ast.Call) and _is_deployment_factory(decorator.func):
        return _Kind(True, _literal_name(decorator, name, first_positional=True))
    return None


def _value_kind(value: ast.expr, kinds: dict[str, _Kind]) -> _Kind | None:
    """What an assigned value is: ``serve.deployment(Target)``, ``serve.deployment(...)(Target)``,
    ``Dep.options(...)``, an alias of a known name, a lambda; None for anything else."""
    if isinstance(value, ast.Lambda):
        return _Kind(False, "<lambda>")
    if isinstance(value, ast.Name):
        return kinds.get(value.id)
    if not isinstance(value, ast.Call):
        return None
    func, args = value.func, value.args
    target = kinds.get(args[0].id) if args and isinstance(args[0], ast.Name) else None
    target_name = target.name if target else (args[0].id if args and isinstance(args[0], ast.Name) else None)
    if _is_deployment_factory(func) and args and not isinstance(args[0], ast.Constant):
        return _Kind(True, _literal_name(value, target_name, first_positional=False))
    if isinstance(func, ast.Call) and _is_deployment_factory(func.func) and args:
        return _Kind(True, _literal_name(func, target_name, first_positional=True))
    if isinstance(func, ast.Attribute) and func.attr == "options" and isinstance(func.value, ast.Name):
        base = kinds.get(func.value.id)
        if base is not None and base.deployment:
            return _Kind(True, _literal_name(value, base.name, first_positional=False))
    return None


def _serve_cell(index: int, label: str, spec: CellSpec, body: str, stmts: range,
                kinds: dict[str, _Kind]) -> ServeCell:
    """The ingress as the magic picks it, from what the source says the cell's names hold once it has run."""
    candidates = [(name, kinds[name]) for name in defined_names(body) if name in kinds]
    found = pick_ingress(candidates, lambda c: c[1].deployment, lambda c: not c[1].deployment)
    if found is None:
        raise ExportError(f"{label} defines no class, function or @serve.deployment to deploy.")
    name, kind = found
    if kind.name is None:
        raise ExportError(f"{label}: the name of deployment '{name}' is not a string literal in the source, and the "
                          "config must name it: write it as one.")
    return ServeCell(index, label, spec, body, stmts, name, kind.name, wrap=not kind.deployment)
