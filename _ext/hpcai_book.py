"""Sphinx extension of the book: draws the code-drawn figures before the pages are read."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _draw_figures(app: Any) -> None:
    sys.path.insert(0, str(ROOT))
    from figures.build import draw_all

    paths = draw_all(ROOT / "figures" / "generated")
    print(f"hpcai_book: drew {len(paths)} figures into figures/generated/")


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _draw_figures)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
