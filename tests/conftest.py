"""Shared fixtures: the repository root, and results written to a temporary folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "scripts"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))
# Everything the tests launch finds the venv's tools (mpiexec, torchrun, jupyter-book).
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])


@pytest.fixture
def results_tmp(tmp_path, monkeypatch):
    """Send hpcai.record output to a temporary folder."""
    monkeypatch.setenv("HPCAI_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path / "results"
