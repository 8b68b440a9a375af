"""hpcai.capabilities: what a page needs, the note it shows, and the build's summary."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hpcai import capabilities as caps

ROOT = Path(__file__).resolve().parent.parent
HEADER = """---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {display_name: Python 3, language: python, name: python3}
%s---

# Title
"""


@pytest.fixture
def fake(monkeypatch):
    """Pretend this machine has exactly the capabilities in the returned set."""
    have: set[str] = set()
    monkeypatch.setattr(caps, "_available", lambda name: name in have)
    return have


def page(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(HEADER % extra, encoding="utf-8")
    return path


def test_known_capabilities_have_an_enable_command():
    assert set(caps.CAPABILITIES) == {"slurm", "slurm-2nodes", "gpu", "gpus-2", "podman",
                                      "sshd"}
    for name in caps.CAPABILITIES:
        assert caps.enable_command(name)
        assert caps.describe(name)
    assert "local_slurm.sh up --nodes 2" in caps.enable_command("slurm")
    assert "PROFILE=gpu" in caps.enable_command("gpu")
    assert "containers.sh base" in caps.enable_command("podman")
    assert caps.skip_capability("needs Podman and the base image") == "podman"
    with pytest.raises(ValueError, match="unknown capability 'tpu'"):
        caps.available("tpu")


def test_needs_reads_the_front_matter(tmp_path):
    assert caps.needs(page(tmp_path, "hpcai:\n  needs: [slurm, gpu]\n")) == ["slurm", "gpu"]
    assert caps.needs(page(tmp_path, "hpcai: {needs: gpu}\n")) == ["gpu"]
    assert caps.needs(page(tmp_path, "")) == []
    with pytest.raises(ValueError, match="unknown capability"):
        caps.needs(page(tmp_path, "hpcai: {needs: [tpu]}\n"))


def test_jupytext_keeps_the_key(tmp_path):
    import jupytext

    nb = jupytext.read(page(tmp_path, "hpcai:\n  needs: [slurm]\n"))
    assert nb.metadata["hpcai"] == {"needs": ["slurm"]}


def test_missing_lists_page_capability_and_command(tmp_path, fake):
    path = page(tmp_path, "hpcai: {needs: [slurm, gpu]}\n")
    fake.add("slurm")
    rows = caps.missing([path])
    assert rows == [{"page": str(path), "capability": "gpu",
                     "enable": caps.enable_command("gpu")}]
    text = caps.format_missing(rows)
    assert "without a CUDA GPU" in text and caps.enable_command("gpu") in text
    fake.add("gpu")
    assert caps.missing([path]) == []
    assert "Every page" in caps.format_missing([])


def test_page_note_is_one_admonition_or_nothing(fake, capsys):
    bundle = caps.note_bundle(["slurm", "gpu"])
    assert bundle is not None
    assert bundle["text/html"].count('class="admonition ') == 1
    assert 'class="admonition-title"' in bundle["text/html"]
    assert "a SLURM cluster and a CUDA GPU" in bundle["text/plain"]
    assert caps.enable_command("slurm") in bundle["text/plain"]
    assert caps.page_note("slurm") == ["slurm"]  # outside a kernel it prints
    assert "without a SLURM cluster" in capsys.readouterr().out
    fake.update({"slurm", "gpu"})
    assert caps.note_bundle(["slurm", "gpu"]) is None
    assert caps.page_note("slurm", "gpu") == []
    assert capsys.readouterr().out == ""


def test_glue_sentence_picks_the_sentence():
    assert caps.glue_sentence("k", "took 1.0 s", "runs on a cluster") == "took 1.0 s"
    assert caps.glue_sentence("k", None, "runs on a cluster") == "runs on a cluster"
    assert caps.glue_sentence("k", "took 1.0 s", "other", measured=False) == "other"
    with pytest.raises(ValueError):
        caps.glue_sentence("k", None, "other", measured=True)


@pytest.mark.parametrize("reason, cap", [
    ("needs sbatch on the PATH", "slurm"), ("no SLURM cluster", "slurm"),
    ("profile 'gpu' needs a CUDA GPU", "gpu"), ("NCCL needs 2 GPUs", "gpus-2"),
    ("1 usable node(s), not 2", "slurm-2nodes"),
    ("mpi4py missing", None), ("", None),
])
def test_skip_reasons_are_classified(reason, cap):
    assert caps.skip_capability(reason) == cap


def test_notebooks_declare_what_their_page_note_checks():
    """A page that calls page_note(...) declares the same capabilities in its header."""
    for nb in sorted((ROOT / "notebooks").glob("*.md")):
        text = nb.read_text(encoding="utf-8")
        calls = re.findall(r"page_note\(([^)]*)\)", text)
        noted = {c for call in calls for c in re.findall(r"[\"']([\w-]+)[\"']", call)}
        assert noted == set(caps.needs(nb)), f"{nb.name}: page_note {noted} vs needs"


def test_available_answers_without_error():
    caps.refresh()
    for name in caps.CAPABILITIES:
        assert isinstance(caps.available(name), bool)
    if caps.available("slurm-2nodes"):
        assert caps.available("slurm") and len(caps.nodes_up()) >= 2


def test_skip_summary_counts_only_what_is_missing():
    reasons = ["Skipped: sbatch is not on the PATH (scripts/local_slurm.sh up)"] * 3 + [
        "Skipped: the SLURM cluster has 1 usable node(s), not 2; start one",
        "Skipped: needs a CUDA GPU",
        "Skipped: checks the refusal on machines without a GPU",
        "Skipped: gcc not installed",
    ]
    lines = caps.skip_summary(reasons, have=lambda cap: False)
    assert lines[0] == ("3 tests skipped: no SLURM cluster -- enable: "
                        "sudo scripts/local_slurm.sh up --nodes 2")
    assert lines[1].startswith("1 test skipped: no SLURM cluster of two nodes -- enable: ")
    assert lines[2].startswith("2 tests skipped: no CUDA GPU -- enable: ")
    assert len(lines) == 3
    # on a machine that has them, nothing is reported missing
    assert caps.skip_summary(reasons, have=lambda cap: True) == []


def test_make_test_ends_with_the_skip_summary(tmp_path):
    """The hook in tests/conftest.py, run by pytest on a tiny test file."""
    import subprocess
    import sys

    (tmp_path / "conftest.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('book_conftest', {str(ROOT / 'tests' / 'conftest.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(mod)\n"
        "pytest_unconfigure = mod.pytest_unconfigure\n"
        "import hpcai.capabilities as caps\n"
        "caps._available = lambda name: False   # this pretend machine has nothing\n")
    (tmp_path / "test_tiny.py").write_text(
        "import pytest\n"
        "pytestmark = []\n"
        "@pytest.mark.skipif(True, reason='sbatch is not on the PATH')\n"
        "def test_a(): pass\n"
        "@pytest.mark.skipif(True, reason='sbatch is not on the PATH')\n"
        "def test_b(): pass\n"
        "def test_c(): pytest.skip('needs a CUDA GPU')\n"
        "def test_d(): pytest.skip('gcc not installed')\n"
        "def test_e(): pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    tail = proc.stdout.strip().splitlines()[-5:]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ("2 tests skipped: no SLURM cluster -- enable: "
            "sudo scripts/local_slurm.sh up --nodes 2") in tail
    assert any(line.startswith("1 test skipped: no CUDA GPU -- enable:") for line in tail)
    # the very last lines, after pytest's own result line
    assert "1 passed, 4 skipped" in tail[-4], tail
    assert tail[-1].startswith("1 test skipped: no CUDA GPU"), tail
