"""Parse a ``%%serve`` line and cell: which object to deploy, with which options, as which app.

Pure: the magic evaluates ``--args`` and looks names up; this module only reads text.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import shlex
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

DEFAULT = object()
T = TypeVar("T")


class CellSpecError(ValueError):
    """The %%serve line is malformed; the message says what to write instead."""


@dataclass(frozen=True)
class CellSpec:
    name: str | None = None
    route_prefix: Any = DEFAULT  # DEFAULT -> "/<app name>"; None -> no HTTP
    num_replicas: int | None = None
    autoscale: tuple[int, int, float | None] | None = None
    max_ongoing: int | None = None
    user_config: Any = None
    has_user_config: bool = False
    args: str | None = None
    wait: bool = True
    keep_failed: bool = False  # a failed first deploy stays (DEPLOY_FAILED) instead of being removed

    def deployment_options(self) -> dict[str, Any]:
        """Deployment options the flags set (others keep what the decorator said)."""
        options: dict[str, Any] = {}
        if self.num_replicas is not None:
            options["num_replicas"] = self.num_replicas
        if self.autoscale is not None:
            low, high, target = self.autoscale
            config: dict[str, Any] = {"min_replicas": low, "max_replicas": high}
            if target is not None:
                config["target_ongoing_requests"] = target
            options["num_replicas"] = "auto"
            options["autoscaling_config"] = config
        if self.max_ongoing is not None:
            options["max_ongoing_requests"] = self.max_ongoing
        if self.has_user_config:
            options["user_config"] = self.user_config
        return options

    def app_route_prefix(self, app_name: str) -> str | None:
        return f"/{app_name}" if self.route_prefix is DEFAULT else self.route_prefix


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # raise instead of exiting the kernel
        raise CellSpecError(f"%%serve: {message}. Usage: {self.format_usage().strip()}")


def _parser() -> _Parser:
    p = _Parser(prog="%%serve", add_help=False)
    p.add_argument("--name")
    http = p.add_mutually_exclusive_group()
    http.add_argument("--route-prefix")
    http.add_argument("--no-http", action="store_true")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--num-replicas", type=int)
    scale.add_argument("--autoscale")
    p.add_argument("--max-ongoing", type=int)
    p.add_argument("--user-config")
    p.add_argument("--args")
    p.add_argument("--no-wait", action="store_true")
    p.add_argument("--keep-failed", action="store_true")
    return p


def parse_autoscale(text: str) -> tuple[int, int, float | None]:
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        low, high = int(parts[0]), int(parts[1])
        target = float(parts[2]) if len(parts) == 3 else None
    except ValueError:
        raise CellSpecError(f"%%serve: --autoscale takes MIN:MAX or MIN:MAX:TARGET (e.g. 1:4:2), got {text!r}.") from None
    if low < 0 or high < 1 or low > high:
        raise CellSpecError(f"%%serve: --autoscale needs 0 <= MIN <= MAX and MAX >= 1, got {text!r}.")
    if target is not None and not (math.isfinite(target) and target > 0):
        raise CellSpecError(f"%%serve: --autoscale TARGET must be > 0, got {text!r}.")
    return low, high, target


def parse_line(line: str) -> CellSpec:
    try:
        tokens = shlex.split(line)
    except ValueError as exc:
        raise CellSpecError(f"%%serve: cannot parse the line ({exc}); check the quotes.") from None
    ns = _parser().parse_args(tokens)
    if ns.num_replicas is not None and ns.num_replicas < 1:
        raise CellSpecError(f"%%serve: --num-replicas must be >= 1, got {ns.num_replicas}.")
    if ns.max_ongoing is not None and ns.max_ongoing < 1:
        raise CellSpecError(f"%%serve: --max-ongoing must be >= 1, got {ns.max_ongoing}.")
    if ns.route_prefix is not None and not ns.route_prefix.startswith("/"):
        raise CellSpecError(f"%%serve: --route-prefix must start with '/', got {ns.route_prefix!r}.")
    user_config, has_user_config = None, ns.user_config is not None
    if has_user_config:
        try:
            user_config = json.loads(ns.user_config)
        except ValueError as exc:
            raise CellSpecError(f"%%serve: --user-config must be JSON ({exc}), got {ns.user_config!r}.") from None
    if ns.name is not None and (not ns.name or "/" in ns.name):
        raise CellSpecError(f"%%serve: --name must be a non-empty name without '/', got {ns.name!r}.")
    return CellSpec(
        name=ns.name,
        route_prefix=None if ns.no_http else (ns.route_prefix if ns.route_prefix is not None else DEFAULT),
        num_replicas=ns.num_replicas,
        autoscale=parse_autoscale(ns.autoscale) if ns.autoscale is not None else None,
        max_ongoing=ns.max_ongoing,
        user_config=user_config,
        has_user_config=has_user_config,
        args=ns.args,
        wait=not ns.no_wait,
        keep_failed=ns.keep_failed,
    )


def defined_names(source: str) -> list[str]:
    """Top-level names a cell binds, in order: classes, functions and assignment targets."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.extend(t.id for t in targets if isinstance(t, ast.Name))
    return names


def default_app_name(deployment_name: str) -> str:
    return deployment_name.lower()


def pick_ingress(candidates: Sequence[T], is_deployment: Callable[[T], bool],
                 is_class_or_function: Callable[[T], bool]) -> T | None:
    """The ingress of a %%serve cell among ``candidates`` (what the names of ``defined_names`` hold, in that
    order): the last ``@serve.deployment`` object, else the last class or function, else None.

    One rule for two readers: the magic asks about live values, the notebook export about what the source
    says they are, and both must pick the same object."""
    for wanted in (is_deployment, is_class_or_function):
        for candidate in reversed(candidates):
            if wanted(candidate):
                return candidate
    return None
