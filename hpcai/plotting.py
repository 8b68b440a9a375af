"""One plotting style for the book, and SVG output that is byte-identical run after run."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl

PALETTE: dict[str, str] = {
    "compute": "#1f77b4",
    "memory": "#ff7f0e",
    "network": "#2ca02c",
    "storage": "#8c564b",
    "coordination": "#9467bd",
    "measured": "#d62728",
    "model": "#7f7f7f",
    "light": "#e8eef6",
    "ink": "#1a1a1a",
}
"""Colours by *what a line or box is about*, used across all chapters."""

_RC = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": mpl.cycler(color=[PALETTE[k] for k in (
        "compute", "memory", "network", "measured", "coordination", "storage", "model")]),
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "lines.markersize": 5,
    # Deterministic SVG: glyphs as paths, fixed id salt.
    "svg.fonttype": "path",
    "svg.hashsalt": "supercomputing-for-ai",
    "path.simplify": True,
}


def use_style() -> None:
    """Apply the book's matplotlib style to the current process."""
    mpl.rcParams.update(_RC)


def savefig(fig: mpl.figure.Figure, path: str | Path) -> Path:
    """Save ``fig`` with fixed metadata so the bytes repeat from one run to the next."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".").lower()
    metadata = {"svg": {"Date": None, "Creator": "Supercomputing for AI"},
                "png": {"Software": None},
                "pdf": {"CreationDate": None, "ModDate": None, "Creator": None,
                        "Producer": None}}.get(fmt)
    with mpl.rc_context(_RC):
        fig.savefig(path, metadata=metadata)
    return path
