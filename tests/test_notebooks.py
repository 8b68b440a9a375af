"""Every notebook of the book runs at the smoke profile; the classroom bundle passes nbval;
bad parameters fail fast with a clear message.

The notebooks execute once, in the ``smoke_book`` fixture (``scripts/build_book.py``); the
per-notebook checks read its summary and the classroom bundle is copied from its executed
notebooks. Only nbval executes them again, as it must to compare outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from classroom import main as classroom_main

from hpcai.notebooks import KERNEL_START_S, execute, toc_notebooks

ROOT = Path(__file__).resolve().parent.parent
CLASSROOM = ROOT / "_build" / "test" / "classroom"
NOTEBOOKS = toc_notebooks()


@pytest.fixture(scope="session")
def classroom(smoke_book) -> Path:
    """The classroom bundle, built from the smoke book's executions (nothing re-executes)."""
    classroom_main(["--from", str(smoke_book.executed), "--out", str(CLASSROOM)])
    return CLASSROOM


def test_toc_lists_notebooks():
    assert any(p.name == "appendix_measuring.md" for p in NOTEBOOKS)
    assert all(p.exists() for p in NOTEBOOKS)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_at_smoke(smoke_book, notebook):
    row = smoke_book.status.get(str(notebook.relative_to(ROOT)))
    assert row is not None, f"not executed; build_book printed:\n{smoke_book.log[-3000:]}"
    assert row["status"] == "ok", row["error"]


def test_classroom_bundle_passes_nbval(smoke_book, classroom):
    assert (classroom / "sanitize.cfg").exists()
    ipynbs = sorted(classroom.glob("*.ipynb"))
    assert len(ipynbs) == len(NOTEBOOKS)
    compared = 0
    for nb in ipynbs:  # the bundle keeps outputs
        cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        assert any(c.get("outputs") for c in cells), nb.name
        assert "classroom-profile" in cells[0]["metadata"].get("tags", []), nb.name
        compared += sum("nbval-ignore-output" not in c["metadata"].get("tags", [])
                        and bool(c.get("outputs")) for c in cells)
    assert compared >= len(ipynbs), "nbval must still compare outputs of non-measuring cells"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-current-env",
         "--nbval", str(classroom), "--nbval-sanitize-with", str(classroom / "sanitize.cfg"),
         # two notebooks at a time (each one whole on its worker): kernels often wait on
         # launches, schedulers and containers, so the pass takes less than one at a time
         "-n", "2", "--dist", "loadscope",
         "--nbval-kernel-startup-timeout", str(KERNEL_START_S)],
        capture_output=True, text=True, cwd=classroom,
        # the records chapter 16 reads are the smoke book's (the bundle's outputs came
        # from it); the notebooks' own records join them, not the repository's
        env={**os.environ, "HPCAI_RESULTS_DIR": str(smoke_book.out / "_build" / "results")},
    )
    assert proc.returncode == 0, proc.stdout[-6000:]


def test_classroom_refuses_a_folder_without_executions(tmp_path, capsys):
    assert classroom_main(["--from", str(tmp_path), "--out", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err.startswith("error: --from")


def test_measuring_cells_are_recognised():
    from classroom import measures

    assert measures({"source": "t = time_it(lambda: f(x))", "outputs": []})
    assert measures({"source": "x = 1", "outputs": [
        {"data": {"application/papermill.record/text/plain": "3.2"}}]})
    assert not measures({"source": "assert np.allclose(a, b)\nprint(a.shape)", "outputs": []})
    # what the page says about this machine's cluster or GPU depends on the machine
    assert measures({"source": 'page_note("slurm");', "outputs": []})


@pytest.mark.parametrize(
    ("profile", "message"),
    [("laptop", "unknown profile 'laptop'; valid profiles are smoke, cpu, gpu, cluster"),
     ("gpu", "profile 'gpu' needs a CUDA GPU")],
)
def test_bad_parameter_fails_fast_with_clear_message(tmp_path, profile, message):
    from hpcai import has_cuda

    if profile == "gpu" and has_cuda():
        pytest.skip("this machine has a GPU, so the gpu profile is valid here")
    outcome = execute(ROOT / "notebooks" / "appendix_measuring.md", profile, tmp_path, 120)
    assert outcome.status == "FAILED"
    assert message in outcome.error
    executed = json.loads(Path(outcome.output).read_text())
    ran = [c for c in executed["cells"] if c["cell_type"] == "code" and c.get("execution_count")]
    # parameters, injected parameters, and the resolve cell that fails: no work after it
    assert len(ran) <= 3
