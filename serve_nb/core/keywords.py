"""Keyword-argument checks for the public API: a misspelt keyword must fail loudly, before anything runs.

A function that quietly swallows ``**kwargs`` turns ``serve.run(app, nmae="exp")`` into a deploy of
the ``default`` app, replacing whatever ran there. So every public function that takes options
names the keywords it accepts, and the ones Ray Serve has that serve_nb does not implement yet
are accepted only at their default value (code written for Ray Serve that passes the default
keeps working; any other value would be silently ignored, so it is refused instead).

Pure: no Ray, no I/O.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Sequence


class UnsupportedOptionError(TypeError, NotImplementedError):
    """A Ray Serve keyword or option that serve_nb does not implement yet, given a non-default value.

    Both a TypeError (like any other keyword serve_nb refuses) and a NotImplementedError (what it is).
    """


def keyword_names(func: Callable[..., Any]) -> tuple[str, ...]:
    """The keywords ``func`` accepts by name, in signature order (``*args``/``**kwargs`` left out)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in inspect.signature(func).parameters.values() if p.kind in kinds)


def reject_unknown_keywords(where: str, unknown: Mapping[str, Any], valid: Sequence[str]) -> None:
    """Raise TypeError naming the first keyword of ``unknown`` and listing ``valid`` (the typo is then easy to spot).

    ``where`` is how the user called it, e.g. ``"serve.run()"``.
    """
    if not unknown:
        return
    names = ", ".join(repr(name) for name in unknown)
    plural = "s" if len(unknown) > 1 else ""
    raise TypeError(
        f"{where} got unexpected keyword argument{plural} {names}. "
        f"Valid keyword arguments: {', '.join(valid)}. Nothing was changed; fix the keyword and call it again."
    )


def reject_unsupported_values(where: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Raise UnsupportedOptionError for the first keyword of ``given`` whose value is not its default in ``defaults``.

    These are Ray Serve keywords serve_nb does not implement; at their default they change nothing. A keyword
    missing from ``defaults`` has no value serve_nb can honour: giving it at all is refused.
    """
    for name, value in given.items():
        if name in defaults:
            default = defaults[name]
            if value is default or (type(value) is type(default) and value == default):
                continue
            remedy = f"Leave it out, or pass its default ({default!r})"
        else:
            remedy = "Leave it out"
        raise UnsupportedOptionError(
            f"{where}: '{name}' is a Ray Serve option that serve_nb does not support yet (got {value!r}). "
            f"{remedy}; nothing was changed."
        )
