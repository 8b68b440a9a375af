#!/usr/bin/env python
"""Draw every code-drawn figure of the book into ``figures/generated/``.

Structural figures live in ``figures/structural.py``; a chapter may add ``figures/chNN_*.py``
with a ``draw(outdir) -> list[Path]`` function, which is picked up here.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def figure_modules() -> list[str]:
    chapter = sorted(p.stem for p in HERE.glob("ch[0-9][0-9]_*.py"))
    return ["structural", *chapter]


def draw_all(outdir: Path = HERE / "generated") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    paths: list[Path] = []
    for name in figure_modules():
        module = importlib.import_module(f"figures.{name}")
        paths.extend(module.draw(Path(outdir)))
    return paths


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "generated"
    for path in draw_all(out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
