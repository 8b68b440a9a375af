"""Code in the notebooks is read on a page: no code line is longer than 88 characters.

Reads every notebook listed in ``_toc.yml`` with jupytext and checks the code cells only
(prose wraps on its own; a code line that does not fit scrolls or is clipped).
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MAX_CHARS = 88


def _toc_files(node: object) -> list[str]:
    """Every ``file:`` entry of the table of contents, in order."""
    found: list[str] = []
    if isinstance(node, dict):
        if isinstance(node.get("file"), str):
            found.append(node["file"])
        for value in node.values():
            found.extend(_toc_files(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_toc_files(item))
    return found


def _toc_notebooks() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"], *_toc_files(toc.get("parts", toc.get("chapters", [])))]
    paths = []
    for name in files:
        for suffix in (".md", ".ipynb"):
            path = ROOT / (name + suffix)
            if path.exists() and (suffix == ".ipynb" or _is_notebook(path)):
                paths.append(path)
                break
    return paths


def _is_notebook(path: Path) -> bool:
    """A MyST markdown file is a notebook when it carries a jupytext/kernelspec header."""
    head = path.read_text().split("\n---", 1)[0] if path.read_text().startswith("---") else ""
    return "kernelspec" in head or "jupytext" in head


NOTEBOOKS = _toc_notebooks()


def test_toc_lists_notebooks():
    assert len(NOTEBOOKS) >= 10, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_lines_fit_the_page(path: Path):
    notebook = jupytext.read(path)
    long_lines = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        for number, line in enumerate(cell.source.splitlines(), start=1):
            if len(line) > MAX_CHARS:
                long_lines.append(f"cell {index} line {number} ({len(line)} chars): {line}")
    assert not long_lines, (
        f"{path.relative_to(ROOT)}: code lines longer than {MAX_CHARS} characters\n"
        + "\n".join(long_lines)
    )
