"""``serve_nb export`` and ``%serve_export``: read the cells (a notebook file, or the kernel's history), export
them with ``core.export``, and write ``DIR/<module>.py`` and ``DIR/serve_config.yaml``."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

from serve_nb.core.export import Cell, export_notebook

CONFIG_NAME = "serve_config.yaml"
_EXPORT_LINE = re.compile(r"\s*%serve_export(\s|$)")


def module_name_for(notebook: str) -> str:
    """A valid module name from a notebook's name: ``06 Models.ipynb`` -> ``nb_06_models``."""
    stem = re.sub(r"\W+", "_", Path(notebook).stem).strip("_").lower() or "notebook"
    return f"nb_{stem}" if stem[0].isdigit() else stem


def cells_of_notebook(data: dict[str, Any]) -> list[Cell]:
    """The code cells in the order they ran (their execution counts) when every one ran, else as they appear."""
    code = [(i, c) for i, c in enumerate(data.get("cells", [])) if c.get("cell_type") == "code"]
    text = lambda c: "".join(c.get("source", "")) if isinstance(c.get("source"), list) else c.get("source", "")  # noqa: E731
    code = [(i, c) for i, c in code if text(c).strip()]
    counts = [c.get("execution_count") for _, c in code]
    if code and all(isinstance(n, int) for n in counts):
        code.sort(key=lambda item: item[1]["execution_count"])
        return [Cell(text(c), f"In [{c['execution_count']}]") for _, c in code]
    return [Cell(text(c), f"cell {i + 1}") for i, c in code]


@dataclass(frozen=True)
class RanInput:
    """An input the kernel ran, as the magics saw it (IPython's ``post_run_cell``)."""

    source: str
    count: int | None  # its n in In [n]; None when the kernel kept it out of its history (nbval runs cells so)
    ok: bool  # False when it raised


def cells_of_history(inputs: Sequence[str], failed: Collection[int] = ()) -> list[Cell]:
    """The kernel's inputs of this session as cells "In [n]": ``inputs[n]`` is In [n] (IPython's
    ``input_hist_raw``; index 0 is empty). Inputs numbered in ``failed`` are left out (they raised: a broken
    ``%%serve`` cell changed no app, and a fixed re-run usually follows), and so are ``%serve_export`` lines."""
    cells = []
    for count, source in enumerate(inputs):
        if count == 0 or count in failed:
            continue
        cell = _cell(source, f"In [{count}]")
        if cell is not None:
            cells.append(cell)
    return cells


def cells_of_kernel(history: Sequence[str], failed: Collection[int], ran: Sequence[RanInput]) -> list[Cell]:
    """What a kernel ran, in order: from its history (as ``cells_of_history`` reads it) the inputs before the
    magics were loaded, then each input ``ran`` since, kept in the history or not, leaving out those that raised.
    An input the history lacks is labelled by its place in ``ran`` ("input 7")."""
    stored = [r.count for r in ran if r.count is not None]
    cells = cells_of_history(history[: min(stored)] if stored else history, failed)
    for place, ran_input in enumerate(ran, 1):
        label = f"In [{ran_input.count}]" if ran_input.count is not None else f"input {place}"
        cell = _cell(ran_input.source, label) if ran_input.ok else None
        if cell is not None:
            cells.append(cell)
    return cells


def _cell(source: str, label: str) -> Cell | None:
    """The input as a cell, without its ``%serve_export`` lines; None if nothing else is left."""
    source = "\n".join(line for line in source.rstrip("\n").split("\n") if not _EXPORT_LINE.match(line))
    return Cell(source, label) if source.strip() else None


def write_export(cells: Sequence[Cell], module: str, out_dir: Path, only_app: str | None = None, *,
                 notebook: str = "a notebook", http_options: Mapping[str, Any] | None = None) -> list[Path]:
    """Export ``cells`` as ``module``; returns the written module and config paths. ``notebook``: how the
    module's header names where the cells come from; ``http_options``: the host/port for the config."""
    import yaml

    result = export_notebook(cells, module, only_app, notebook=notebook, http_options=http_options)
    out_dir.mkdir(parents=True, exist_ok=True)
    module_path, config_path = out_dir / f"{module}.py", out_dir / CONFIG_NAME
    module_path.write_text(result.module_source)
    config_path.write_text(yaml.safe_dump(result.config, sort_keys=False))
    return [module_path, config_path]


def export_notebook_file(notebook: Path, out_dir: Path, only_app: str | None = None) -> list[Path]:
    try:
        data = json.loads(notebook.read_text())
    except OSError as exc:
        raise FileNotFoundError(f"cannot read {notebook}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"{notebook} is not a notebook (invalid JSON: {exc})") from None
    return write_export(cells_of_notebook(data), module_name_for(notebook.name), out_dir, only_app,
                        notebook=notebook.name)
