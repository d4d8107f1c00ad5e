"""``serve_nb export`` and ``%serve_export``: read the cells (a notebook file, or the kernel's history), export
them with ``core.export``, and write ``DIR/<module>.py`` and ``DIR/serve_config.yaml``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from serve_nb.core.export import Cell, export_notebook

CONFIG_NAME = "serve_config.yaml"


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


def write_export(cells: Sequence[Cell], module: str, out_dir: Path, only_app: str | None = None, *,
                 notebook: str = "a notebook") -> list[Path]:
    """Export ``cells`` as ``module``; returns the written module and config paths. ``notebook``: how the
    module's header names where the cells come from."""
    import yaml

    result = export_notebook(cells, module, only_app, notebook=notebook)
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
