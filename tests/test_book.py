"""The whole book builds at the smoke profile with warnings as errors, executing each notebook
once; a bad profile or a raising notebook stops the build with a clear message."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from build_book import CACHED, EXECUTING, main, md_config, read_as_myst_nb

from hpcai.notebooks import toc_notebooks

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = toc_notebooks()
BROKEN = """---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {display_name: Python 3, language: python, name: python3}
---

# A notebook that raises

```{code-cell} ipython3
x = 1
```

```{code-cell} ipython3
y = x + 1
raise ValueError("raised on purpose")
```
"""


def test_book_builds_without_warnings(smoke_book):
    log = smoke_book.log
    warnings = [line for line in log.splitlines() if re.search(r"(WARNING|ERROR|CRITICAL):", line)]
    assert smoke_book.returncode == 0 and not warnings, "\n".join(warnings) or log[-5000:]
    html = smoke_book.html
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


def test_each_notebook_executes_once(smoke_book):
    """build_book ran every notebook once, unchanged; jupyter-book took all from the cache."""
    from jupyter_cache import get_cache

    assert smoke_book.returncode == 0, smoke_book.log[-5000:]
    rows = smoke_book.status
    assert sorted(rows) == sorted(str(p.relative_to(ROOT)) for p in NOTEBOOKS)
    assert all(row["status"] == "ok" for row in rows.values())  # cold: nothing was cached
    # no parameter was injected: the executed code is the source as myst-nb reads it
    config = md_config()
    for path in NOTEBOOKS:
        nb = read_as_myst_nb(path, config)
        executed = json.loads((smoke_book.executed / f"{path.stem}.ipynb").read_text())
        # papermill tags the cell it injects (a lab may name the tag in its own code)
        tags = [t for c in executed["cells"] for t in c["metadata"].get("tags", [])]
        assert "injected-parameters" not in tags, path.name
        assert sum(c["cell_type"] == "code" for c in executed["cells"]) == sum(
            c.cell_type == "code" for c in nb.cells), path.name
    # jupyter-book executed nothing: myst-nb logged a cache hit for every notebook ...
    assert not EXECUTING.search(smoke_book.log)
    assert len(CACHED.findall(smoke_book.log)) == len(NOTEBOOKS)
    # ... and the cache confirms it: myst-nb registers a notebook it executes as a project
    cache = get_cache(str(smoke_book.cache))
    assert cache.list_project_records() == []
    assert len(cache.list_cache_records()) == len(NOTEBOOKS)


def test_a_raising_notebook_stops_the_build_naming_notebook_and_cell(tmp_path, capsys):
    broken = tmp_path / "broken.md"
    broken.write_text(BROKEN, encoding="utf-8")
    rc = main(["--profile", "smoke", "--out", str(tmp_path / "out"), "--no-setup"],
              notebooks=[broken])
    err = capsys.readouterr().err
    assert rc == 1
    assert str(broken) in err
    assert "cell [2] `y = x + 1` raised ValueError: raised on purpose" in err
    assert not (tmp_path / "out" / "_build" / "html").exists()


def _no_cuda() -> bool:
    from hpcai import has_cuda

    return not has_cuda()


BAD_PROFILES = [("tpu", "error: unknown profile 'tpu'")]
if _no_cuda():
    BAD_PROFILES.append(("gpu", "error: profile 'gpu' needs a CUDA GPU"))


@pytest.mark.parametrize(("profile", "message"), BAD_PROFILES)
def test_build_book_refuses_a_bad_profile_before_any_work(tmp_path, profile, message):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_book.py"), "--profile", profile,
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_build_book_refuses_a_bad_jobs_value_before_any_work(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_book.py"), "--profile", "smoke",
         "--jobs", "0", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --jobs 0") and proc.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


# every target with an unknown profile; the GPU check (it imports torch) once
MAKE_CASES = [(target, *BAD_PROFILES[0]) for target in ("book", "notebooks", "classroom")]
MAKE_CASES += [("book", *case) for case in BAD_PROFILES[1:]]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(("target", "profile", "message"), MAKE_CASES)
def test_make_refuses_a_bad_profile_before_any_work(target, profile, message):
    # -o: never (re)install the virtual environment from a test
    proc = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", target,
         f"PROFILE={profile}"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert message in out, out
    assert "figures/build.py" not in out and "executing" not in out, out
