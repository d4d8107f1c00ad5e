"""A replica's traceback text, cut down to the user's cells and labelled as IPython labels them.

A ``%%serve`` cell is compiled under a name IPython makes up (``/tmp/ipykernel_123/4567.py`` in a kernel,
``<ipython-input-3-...>`` in a terminal), and the class is shipped to replicas by value, so the traceback a
failed constructor sends back names that file, with no source line (the replica cannot read it). The notebook
knows which cell each such name stands for: given that, this module rewrites each frame of a cell as
``Cell In[N], line L, in f`` with the cell's lines around L and an arrow, the way IPython shows its own
tracebacks, and drops the frames of libraries and of serve_nb in between. Text that names no cell stays as it
was. Pure: the caller says which file names are cells.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

_FRAME = re.compile(r'^(?P<indent>\s*)File "(?P<file>[^"]+)", line (?P<line>\d+)(?:, in (?P<func>.+))?$')
_HEADER = "Traceback (most recent call last):"
CONTEXT_LINES = 2  # cell lines shown before the failing one, as IPython's default context shows


@dataclass(frozen=True)
class CellSource:
    """One cell the kernel ran: its execution count (the N of ``In[N]``) and its source lines."""

    execution_count: int
    lines: Sequence[str]


def cell_traceback(text: str, locate: Callable[[str], CellSource | None]) -> str:
    """``text`` with each frame in a cell (``locate(filename)`` is not None) written as IPython writes it and
    every other frame, with its source and caret lines, left out. Unchanged when no frame is in a cell: then
    nothing better is known."""
    lines = text.splitlines()
    frames = [(i, m) for i, line in enumerate(lines) if (m := _FRAME.match(line))]
    if not any(locate(m["file"]) is not None for _, m in frames):
        return text
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        match = _FRAME.match(line)
        if match is None:
            if line.strip() != _HEADER:
                out.append(line)
            i += 1
            continue
        indent = len(match["indent"])
        i += 1
        while i < len(lines) and _indent(lines[i]) > indent and not _FRAME.match(lines[i]):
            i += 1  # the frame's own source and caret lines
        cell = locate(match["file"])
        if cell is not None:
            out.extend(_cell_frame(cell, int(match["line"]), match["func"]))
    return "\n".join(_squeeze_blank(out)).strip("\n")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip()) if line.strip() else 0


def _cell_frame(cell: CellSource, lineno: int, func: str | None) -> list[str]:
    """``Cell In[N], line L, in f``, then the cell's lines up to L with ``---->`` at L, then a blank line."""
    where = f", in {func}" if func and func != "<module>" else ""
    out = [f"Cell In[{cell.execution_count}], line {lineno}{where}"]
    first = max(1, lineno - CONTEXT_LINES)
    width = len(str(lineno))
    for number in range(first, min(lineno, len(cell.lines)) + 1):
        marker = "---->" if number == lineno else "     "
        out.append(f"{marker} {number:>{width}} {cell.lines[number - 1].rstrip()}")
    out.append("")
    return out


def _squeeze_blank(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if not line.strip() and out and not out[-1].strip():
            continue
        out.append(line)
    return out


def short_error(text: str) -> str:
    """The last line naming the exception (``RuntimeError: weights not found``): the one line a cell raises with."""
    for line in reversed(text.splitlines()):
        stripped = line.strip()
        if stripped and not stripped.startswith(("File ", "^", "~", "---->")) and not line.startswith(" "):
            return stripped
    return text.strip().splitlines()[-1] if text.strip() else ""
