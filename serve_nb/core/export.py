"""A notebook's ``%%serve`` apps as a Python module plus a Ray Serve config, so that
``serve_nb run serve_config.yaml`` in a fresh process serves the endpoints the notebook served.

The module holds each exported ``%%serve`` cell's body followed by its app
(``app_<name> = Ingress.bind(<--args>)``) and, from the cells run before, only the top-level statements the
apps need, found by name, transitively, in execution order (``core/cellcode.py`` reads the cells):

- a name read when a statement runs (a decorator, a default, a right-hand side) is looked up as of that
  statement; a name read when code runs (a method body, a helper's body) as of the ``%%serve`` cell, which is
  when the kernel sent the code to its replicas;
- the latest binding counts. One that may not happen (a branch of ``if``/``try``, ``from m import *``) or that
  changes an object in place (``obj.x = …``, ``model.fit(X, y)``) is kept, and the search goes on past it;
- a name bound nowhere, or only where a module cannot carry it (a loop, a ``with`` block, ``global`` in a
  function, a magic, a top-level ``await``), is an ExportError naming the cell and what to write instead;
- an app is its last ``%%serve`` cell: re-running a cell replaced the app in the kernel too;
- one module holds one binding per name: if an app's code reads a name that a later statement kept for
  another app rebinds (to something else), the export refuses rather than serve the first app the wrong one.

Where the flags go: ``--num-replicas``, ``--autoscale``, ``--max-ongoing`` and ``--user-config`` become the
config's ``deployments`` entry for the ingress, and the module binds the ingress without ``.options()``. Ray
Serve's convention is that code holds defaults and the config overrides them; the config is what an operator
edits, so the values the notebook chose belong there, in one place only, so that editing it is enough.

Pure: cells in, text and data out; the caller reads the notebook (or the kernel's history) and writes files.
"""

from __future__ import annotations

import ast
import keyword
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from serve_nb.core.cellcode import (BUILTINS, Cell, ExportError, Program, ServeCell, Stmt, read_cells,
                                    read_statement)
from serve_nb.core.cellspec import default_app_name

__all__ = ["Cell", "Export", "ExportError", "export_notebook"]

_WRAPPER = "_serve_nb"  # the module's own name for serve_nb, used only to wrap undecorated ingresses


@dataclass(frozen=True)
class Export:
    """What a notebook exports: the module's text, the config (Ray Serve's layout, ready to dump as YAML),
    the apps' names in the order their cells ran, and the pip packages the notebook installed."""

    module_source: str
    config: dict[str, Any]
    apps: tuple[str, ...]
    pip: tuple[str, ...]


@dataclass(frozen=True)
class _App:
    name: str
    serve: ServeCell
    bind: Stmt  # ``Ingress.bind(<--args>)``, read like any statement so its names are looked up the same way


@dataclass
class _Needs:
    """What one app needs: the statements to keep, and where each name its code reads when running is bound."""

    kept: set[int]
    late: dict[str, int]


def export_notebook(cells: Sequence[Cell], module_name: str, only_app: str | None = None, *,
                    notebook: str = "a notebook", http_options: Mapping[str, Any] | None = None) -> Export:
    """Export the ``%%serve`` apps of ``cells`` (in execution order) as module ``module_name`` and its config.

    ``only_app``: export that app alone. ``notebook``: how the module's header names its source (a path, or
    "the kernel's input history"). ``http_options``: the host/port the notebook's Serve listened on
    (``%serve_connect --port``), so the exported server answers at the URLs the notebook used; default
    127.0.0.1:8000. Raises ExportError, one line naming the cell, when it cannot."""
    if not all(part.isidentifier() and not keyword.iskeyword(part) for part in module_name.split(".")):
        raise ExportError(f"Module name {module_name!r} cannot be imported: use letters, digits and '_', not "
                          "starting with a digit (e.g. 'nb_06_models').")
    program = read_cells(cells)
    apps = _apps(program, only_app)
    exported = frozenset(app.serve.cell for app in apps)
    needs = [_needs(program, app, exported) for app in apps]
    _check_one_binding_per_name(program, apps, needs)
    kept: set[int] = set().union(*(n.kept for n in needs))
    taken = {name for i in kept for name in _names_bound(program.stmts[i]) | program.stmts[i].touches}
    variables = _variables(apps, taken | {_WRAPPER})
    return Export(
        module_source=_module_source(program, apps, kept, variables, notebook),
        config=_config(apps, module_name, variables, program.pip, http_options or {}),
        apps=tuple(app.name for app in apps),
        pip=program.pip,
    )


def _apps(program: Program, only_app: str | None) -> list[_App]:
    """The apps to export, each from its last ``%%serve`` cell, ordered as those cells ran."""
    if not program.serve_cells:
        raise ExportError(f"No %%serve cell among the {len(program.cells)} cells given: nothing to export.")
    latest: dict[str, ServeCell] = {}
    for serve in program.serve_cells:
        name = serve.spec.name or default_app_name(serve.deployment)
        latest.pop(name, None)  # re-inserted: an app's place is its last cell's
        latest[name] = serve
    if only_app is not None:
        if only_app not in latest:
            raise ExportError(f"No %%serve app named '{only_app}'; the notebook's apps: {', '.join(latest)}.")
        latest = {only_app: latest[only_app]}
    routes: dict[str, ServeCell] = {}
    for name, serve in latest.items():
        prefix = serve.spec.app_route_prefix(name)
        if prefix is None:
            continue
        if prefix in routes:
            raise ExportError(f"{serve.label} and {routes[prefix].label} both serve route prefix '{prefix}': "
                              "give one of them another --route-prefix.")
        routes[prefix] = serve
    return [_App(name, serve, _bind_statement(serve)) for name, serve in latest.items()]


def _bind_statement(serve: ServeCell) -> Stmt:
    """``Ingress.bind(<--args>)``, the expression carried verbatim as the magic evaluates it."""
    args = serve.spec.args or ""
    call = f"f({args})"
    try:
        parsed = ast.parse(call, mode="eval").body
        whole = isinstance(parsed, ast.Call) and ast.get_source_segment(call, parsed) == call  # not "x), (y"
    except SyntaxError:
        whole = False
    if not whole:
        raise ExportError(f"{serve.label}: --args {args!r} is not a Python argument list.")
    return read_statement(serve.cell, f"{serve.ingress}.bind({args})")


def _needs(program: Program, app: _App, exported: frozenset[int]) -> _Needs:
    """The statements ``app`` needs: its cell's body, its bind line, and what they use, transitively."""
    end = app.serve.stmts.stop
    needs = _Needs(set(app.serve.stmts), {})
    todo: list[tuple[Stmt, int]] = [(app.bind, end)] + [(program.stmts[i], i) for i in app.serve.stmts]
    while todo:
        reader, at = todo.pop(0)
        found = [i for name in sorted(reader.early) for i in _resolve(program, app, name, at, reader, at, exported)]
        for name in sorted(reader.late):
            bindings = _resolve(program, app, name, end, reader, at, exported)
            found += bindings
            if bindings:
                needs.late.setdefault(name, bindings[0])
        for i in found:
            if i not in needs.kept:
                needs.kept.add(i)
                todo.append((program.stmts[i], i))
    return needs


def _resolve(program: Program, app: _App, name: str, before: int, reader: Stmt, reader_at: int,
             exported: frozenset[int]) -> list[int]:
    """The statements before index ``before`` that make ``name`` what ``reader`` reads: the latest binding,
    and every maybe-binding and in-place change after it. Raises ExportError when the binding cannot be
    carried, or there is none (unless ``name`` is a builtin, or ``reader`` binds it itself)."""
    found: list[int] = []
    may_bind = False  # an in-place change alone binds nothing: something before it must
    for i in range(before - 1, -1, -1):
        stmt = program.stmts[i]
        blocked = stmt.blocked.get(name)
        if blocked is not None and i != reader_at:  # a function's own 'global name' does not stop it reading name
            if stmt.python and stmt.cell in exported:
                return found + [i]  # the whole %%serve cell is carried, loops and all
            raise ExportError(f"{app.serve.label} uses '{name}'{_through(program, app, reader)}, which "
                              f"{program.cells[stmt.cell].label} "
                              f"binds {blocked.how}, a statement the export cannot carry: {blocked.fix}.")
        if name in stmt.binds:
            return found + [i]
        if name in stmt.maybe or (stmt.star and name not in BUILTINS):
            found.append(i)
            may_bind = True
        elif name in stmt.touches:
            found.append(i)
    if may_bind or name in BUILTINS or name in _names_bound(reader):
        return found
    raise ExportError(f"{app.serve.label} uses '{name}'{_through(program, app, reader)}, which no earlier cell "
                      "defines: define it in a cell, or pass it with --args.")


def _through(program: Program, app: _App, reader: Stmt) -> str:
    """For messages: the cell the reading statement is in, when it is not the app's own."""
    return "" if reader.cell == app.serve.cell else f" (through {program.cells[reader.cell].label})"


def _names_bound(stmt: Stmt) -> set[str]:
    return set(stmt.binds | stmt.maybe | stmt.blocked.keys())


def _check_one_binding_per_name(program: Program, apps: Sequence[_App], needs: Sequence[_Needs]) -> None:
    """Refuse when an app's running code reads a name that a statement kept for a later app binds again to
    something else: in the module, both apps would read the later one."""
    kept = sorted(set().union(*(n.kept for n in needs)))
    for app, need in zip(apps, needs):
        for name, at in sorted(need.late.items()):
            first = program.stmts[at]
            for i in kept:
                later = program.stmts[i]
                if i > at and name in _names_bound(later) and not _same_binding(first, later, name):
                    other = next(a.name for a, n in zip(apps, needs) if i in n.kept)
                    raise ExportError(
                        f"{app.serve.label} reads '{name}' as {program.cells[first.cell].label} binds it, but "
                        f"{program.cells[later.cell].label} binds it again for app '{other}', and one module holds "
                        f"one '{name}': rename one of them, or export one app at a time (only_app).")


def _same_binding(first: Stmt, later: Stmt, name: str) -> bool:
    """Whether two statements bind ``name`` to the same thing: the same import, or the same text."""
    return first.text == later.text or (name in first.imports and first.imports[name] == later.imports.get(name))


def _variables(apps: Sequence[_App], taken: set[str]) -> dict[str, str]:
    """``app_<name>`` for each app, made an identifier, and distinct from every name the module binds."""
    variables: dict[str, str] = {}
    for app in apps:
        base = "app_" + re.sub(r"[^0-9A-Za-z_]", "_", app.name)
        variable, suffix = base, 2
        while variable in taken:
            variable, suffix = f"{base}_{suffix}", suffix + 1
        taken.add(variable)
        variables[app.name] = variable
    return variables


def _module_source(program: Program, apps: Sequence[_App], kept: set[int], variables: dict[str, str],
                   notebook: str) -> str:
    names = ", ".join(app.name for app in apps)
    parts = [
        f"# Generated by serve_nb from {notebook}: its %%serve apps ({names}) and what they use from earlier cells.\n"
        "# Serve them with:  serve_nb run serve_config.yaml  (the config written next to this file)\n"
        "# The %%serve flags (replicas, autoscaling, max ongoing requests, user_config) are in serve_config.yaml.\n"
        "# Edit the notebook and export it again rather than this file.",
    ]
    if program.futures:
        parts.append(f"from __future__ import {', '.join(program.futures)}")
    if any(app.serve.wrap for app in apps):
        parts.append(f"import serve_nb as {_WRAPPER}  # wraps an undecorated ingress, as %%serve does")
    by_cell: dict[int, list[Stmt]] = {}
    for i in sorted(kept):
        by_cell.setdefault(program.stmts[i].cell, []).append(program.stmts[i])
    serving = {app.serve.cell: app for app in apps}
    for cell, stmts in sorted(by_cell.items()):
        app = serving.get(cell)
        if app is None:
            label = program.cells[cell].label
            texts = [s.text for s in stmts]
            chunk = ("\n\n" if any("\n" in t for t in texts) else "\n").join(texts)
        else:
            label = app.serve.label
            wrapped = f"{_WRAPPER}.deployment({app.serve.ingress})" if app.serve.wrap else app.serve.ingress
            bind = f"{variables[app.name]} = {wrapped}.bind({app.serve.spec.args or ''})"
            chunk = f"{app.serve.body.strip(chr(10))}\n\n{bind}"
        _check_compiles(chunk, label)
        parts.append(f"# {label}\n{chunk}")
    return "\n\n\n".join(parts) + "\n"


def _check_compiles(chunk: str, label: str) -> None:
    """A cell whose code a module cannot hold (``await`` at its top level, say) is named, not written."""
    try:
        compile(chunk, label, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise ExportError(f"{label}: a module cannot hold this cell's code ({exc.msg}, line {exc.lineno} of what "
                          "the export keeps of it): move that part into a function.") from None


def _config(apps: Sequence[_App], module_name: str, variables: dict[str, str], pip: tuple[str, ...],
            http_options: Mapping[str, Any]) -> dict[str, Any]:
    """Ray Serve's config layout; each app's ingress gets a ``deployments`` entry holding its %%serve flags."""
    applications: list[dict[str, Any]] = []
    for app in apps:
        entry: dict[str, Any] = {
            "name": app.name,
            "route_prefix": app.serve.spec.app_route_prefix(app.name),
            "import_path": f"{module_name}:{variables[app.name]}",
            "args": {},
        }
        if pip:
            entry["runtime_env"] = {"pip": list(pip)}
        entry["deployments"] = [{"name": app.serve.deployment, **app.serve.spec.deployment_options()}]
        applications.append(entry)
    return {"proxy_location": "EveryNode", "http_options": {"host": "127.0.0.1", "port": 8000, **http_options},
            "applications": applications}
