"""Longest-prefix route matching for the HTTP proxy: ``/a`` matches ``/a`` and ``/a/...``, not ``/ab``."""

from __future__ import annotations

from typing import Generic, Mapping, TypeVar

T = TypeVar("T")


def prefix_matches(prefix: str, path: str) -> bool:
    if prefix == "/":
        return True
    return path == prefix or (path.startswith(prefix) and path[len(prefix)] == "/")


class RouteTable(Generic[T]):
    """An immutable prefix -> target table; ``match`` returns the longest matching prefix."""

    def __init__(self, routes: Mapping[str, T]) -> None:
        self._routes = dict(routes)
        self._ordered = sorted(self._routes.items(), key=lambda item: len(item[0]), reverse=True)

    def match(self, path: str) -> tuple[str, T] | None:
        for prefix, target in self._ordered:
            if prefix_matches(prefix, path):
                return prefix, target
        return None

    def as_dict(self) -> dict[str, T]:
        return dict(self._routes)

    def __len__(self) -> int:
        return len(self._routes)


def root_path_for(prefix: str, base_root_path: str = "") -> str:
    """The ASGI ``root_path`` an app mounted at ``prefix`` sees ('' for the root prefix)."""
    return base_root_path.rstrip("/") + ("" if prefix == "/" else prefix)
