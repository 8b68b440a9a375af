"""The whole book builds at the smoke profile with warnings as errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "_build" / "test" / "book"


def test_book_builds_without_warnings():
    jb = Path(sys.executable).parent / "jupyter-book"
    env = {**os.environ, "HPCAI_PROFILE": "smoke"}
    shutil.rmtree(OUT, ignore_errors=True)  # cold: no cached executions hide a failure
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "-W", "-n", "--keep-going", "--path-output", str(OUT)],
        capture_output=True, text=True, env=env,
    )
    log = proc.stdout + proc.stderr
    warnings = [line for line in log.splitlines() if re.search(r"(WARNING|ERROR|CRITICAL):", line)]
    assert proc.returncode == 0 and not warnings, "\n".join(warnings) or log[-5000:]
    html = OUT / "_build" / "html"
    assert (html / "index.html").exists()
    page = (html / "notebooks" / "appendix_measuring.html").read_text()
    # glued numbers made it into the text, and the machine is named on the page
    assert "pasted-text" in page
    assert "-core" in page
    # offline: MathJax is served from the book itself, no script or style comes from the web
    chapter = (html / "book" / "appendix-measuring.html").read_text()
    assert "_static/mathjax/tex-mml-chtml.js" in chapter
    assert (html / "_static" / "mathjax" / "tex-mml-chtml.js").exists()
    assert not re.search(r'<(script|link)[^>]+(src|href)="https?://', chapter)
