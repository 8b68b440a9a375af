"""Shared fixtures: the repository root, results written to a temporary folder, and the book
built once at the smoke profile."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import uuid
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


class SmokeBook:
    """The book built once per session at the smoke profile by ``scripts/build_book.py``.

    Attributes (also readable as ``book["html"]``): ``out`` (the build folder), ``html`` (the
    HTML folder), ``executed`` (the executed ``.ipynb`` and ``summary.json``), ``cache`` (the
    jupyter-cache), ``log`` (everything the build printed), ``returncode``, and ``status``
    (``{notebook path relative to the repository: summary row}``).
    """

    def __init__(self, out: Path, returncode: int, log: str) -> None:
        self.out = out
        self.html = out / "_build" / "html"
        self.executed = out / "_build" / "executed" / "smoke"
        self.cache = out / "_build" / ".jupyter_cache"
        self.returncode = returncode
        self.log = log
        summary = self.executed / "summary.json"
        rows = json.loads(summary.read_text())["notebooks"] if summary.exists() else []
        self.status = {row["notebook"]: row for row in rows}

    def __getitem__(self, key: str) -> object:
        return getattr(self, key)


# One id per test run, shared by its xdist workers (a plain run makes its own).
RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex


@pytest.fixture(scope="session")
def smoke_book() -> SmokeBook:
    """Build the whole book at smoke, cold, once per test run: each notebook executes
    exactly once (two at a time).

    The book build, the per-notebook checks, the classroom bundle and the browser test all
    read this one build; jupyter-book finds every execution in the cache. Under xdist the
    first worker to ask builds it while holding a lock; a worker that asks later waits for
    the lock and reads the same build (``book.json`` beside it names the run).
    """
    out = ROOT / "_build" / "test" / "book"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = out.parent / "book.json"
    with open(out.parent / "book.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            built = json.loads(done.read_text())
            if built["run"] == RUN_ID:
                return SmokeBook(out, built["returncode"], built["log"])
        done.unlink(missing_ok=True)
        shutil.rmtree(out, ignore_errors=True)  # cold: no cached execution hides a failure
        proc = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "build_book.py"), "--profile", "smoke",
             "--out", str(out), "--strict", "--keep-going", "--no-setup", "--jobs", "2"],
            capture_output=True, text=True, cwd=ROOT,
        )
        log = proc.stdout + proc.stderr
        done.write_text(json.dumps({"run": RUN_ID, "returncode": proc.returncode,
                                    "log": log}))
    return SmokeBook(out, proc.returncode, log)


@pytest.fixture
def world_of_one(monkeypatch):
    """A torch.distributed world of one gloo rank in this process (hpcai.dist.init)."""
    import torch.distributed as dist

    from hpcai import dist as hd

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    w = hd.init("gloo")
    yield w
    hd.teardown()


def pytest_unconfigure(config):
    """End the run (after pytest's own summary line) with how many tests were skipped for
    want of a cluster or a GPU, and the command that enables them (hpcai.capabilities)."""
    from hpcai.capabilities import skip_summary

    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    reasons = []
    for report in reporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reasons.append(str(longrepr[2] if isinstance(longrepr, tuple) else longrepr))
    lines = skip_summary(reasons)
    if lines:
        reporter.write_sep("-", "skipped for want of a cluster or a GPU")
        for line in lines:
            reporter.write_line(line)


# `make test` runs on two pytest-xdist workers. Each test file stays on one worker, so its
# module fixtures run once. The two files that read the smoke book's HTML form one unit,
# collected first since the build is the longest task: one worker builds the book while
# the other runs the other files; the classroom check (test_notebooks.py), which
# executes every notebook again, comes last, on whichever worker is free, reading the
# same build (smoke_book waits for it).
BOOK_FILES = frozenset({"test_book", "test_browser"})
LAST_FILES = frozenset({"test_notebooks"})


def _scope(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return "book" if Path(path).stem in BOOK_FILES else path


def _order(item: pytest.Item) -> int:
    stem = Path(item.nodeid.split("::", 1)[0]).stem
    return 0 if stem in BOOK_FILES else 2 if stem in LAST_FILES else 1


def pytest_collection_modifyitems(config, items):
    items.sort(key=_order)  # stable: the order within each group is kept


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: absent without it
def pytest_xdist_make_scheduler(config, log):
    """Scheduling by :func:`_scope` (xdist's ``--dist loadgroup`` ignored the marks here)."""
    from xdist.scheduler import LoadScopeScheduling

    class BookThenFiles(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    config.option.loadscopereorder = False  # keep the collection order
    return BookThenFiles(config, log)
