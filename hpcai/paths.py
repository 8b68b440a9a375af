"""Where things live: the repository root and the build folders."""

from __future__ import annotations

import os
from pathlib import Path

_MARKER = "_toc.yml"


def repo_root() -> Path:
    """Return the repository root (the folder holding ``_toc.yml``).

    ``HPCAI_ROOT`` overrides the search; otherwise the folder of this package's parent is
    used, so notebooks executed from any working directory (papermill, nbval, the book build)
    find the same scripts and results folder.
    """
    env = os.environ.get("HPCAI_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / _MARKER).exists():
        return here
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / _MARKER).exists():
            return folder
    return here


def build_dir(*parts: str) -> Path:
    """A folder under ``_build/`` (created on demand)."""
    path = repo_root().joinpath("_build", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
