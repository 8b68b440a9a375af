"""Sphinx extension of the book.

* draws the code-drawn figures before the pages are read;
* serves MathJax from the built book itself (``_static/mathjax/``), copied from the pinned
  ``django-static-mathjax`` package, so no page depends on a CDN.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The parts of MathJax's es5 bundle that the TeX-to-CommonHTML component loads.
MATHJAX_PARTS = ("tex-mml-chtml.js", "output/chtml", "input/tex/extensions", "ui", "a11y",
                 "adaptors")


def _draw_figures(app: Any) -> None:
    sys.path.insert(0, str(ROOT))
    from figures.build import draw_all

    paths = draw_all(ROOT / "figures" / "generated")
    print(f"hpcai_book: drew {len(paths)} figures into figures/generated/")


def _mathjax_source() -> Path:
    import mathjax  # django-static-mathjax

    return Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5"


def _use_local_mathjax(app: Any, config: Any) -> None:
    config.mathjax_path = "mathjax/tex-mml-chtml.js"


def _copy_mathjax(app: Any, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source = _mathjax_source()
    target = Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        src, dst = source / part, target / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", _use_local_mathjax)
    app.connect("builder-inited", _draw_figures)
    app.connect("build-finished", _copy_mathjax)
    return {"version": "0.2", "parallel_read_safe": True, "parallel_write_safe": True}
