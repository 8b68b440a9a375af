#!/usr/bin/env python
"""Build the book at one profile, executing every notebook exactly once.

    python scripts/build_book.py --profile cpu                  # what `make book` runs
    python scripts/build_book.py --profile smoke --out _build/test/book --strict --no-setup

The steps, in order:

1. check the profile against this machine (``hpcai.profiles.check_profile``); a bad one stops
   here with ``error: ...`` and exit status 2, before anything is drawn or executed;
2. as root on Debian or Ubuntu, when no SLURM controller answers (``sbatch`` missing or the
   cluster down: ``hpcai.capabilities.available("slurm")``), run
   ``scripts/setup_machine.sh`` (SLURM, munge and the two-node local cluster), unless
   ``--no-setup``;
3. execute every notebook of ``_toc.yml`` with papermill, *without* injecting parameters
   (``$HPCAI_PROFILE`` carries the profile, so the executed code equals the source), into
   ``<out>/_build/executed/<profile>/``. A notebook whose execution is already in the cache,
   unchanged, is not executed again. A notebook that raises stops the build (``--keep-going``
   executes the others first), naming the notebook, the cell and the exception. Each build
   keeps its own results records in ``<out>/_build/results/`` (``$HPCAI_RESULTS_DIR``), and a
   notebook whose header says ``hpcai: {runs_last: true}`` (chapters 16-17, which read
   the others' records) executes after all the others, and again whenever any other did;
4. store each execution in myst-nb's jupyter-cache (``<out>/_build/.jupyter_cache``, the
   cache that ``execute_notebooks: cache`` reads), keyed as myst-nb keys it;
5. ``jupyter-book build``, which finds every notebook in the cache and executes none
   (``--strict`` adds ``-W -n --keep-going``);
6. print the pages that ran without a capability (a cluster, a GPU) with the command that
   enables each, and where the book is.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hpcai.capabilities import available, format_missing, front_matter, missing, refresh  # noqa: E402
from hpcai.notebooks import Outcome, execute, shown, toc_notebooks, write_summary  # noqa: E402
from hpcai.profiles import PROFILES, ProfileError, check_profile  # noqa: E402
from hpcai.results import RESULTS_ENV  # noqa: E402

SETUP = ROOT / "scripts" / "setup_machine.sh"
# What myst-nb logs when it runs a notebook itself (a cache miss) ...
EXECUTING = re.compile(r"Executing notebook using")
# ... and when it takes the outputs from the cache.
CACHED = re.compile(r"Using cached notebook: ID=")


def runs_last(path: Path) -> bool:
    """Whether the notebook's header asks to execute after every other notebook."""
    meta = front_matter(path).get("hpcai") or {}
    return isinstance(meta, dict) and bool(meta.get("runs_last", False))


class BuildError(RuntimeError):
    """A notebook that cannot be executed or cached; the message names it."""


def default_out(profile: str) -> Path:
    """Where a profile builds: the repository for cpu, its own folder for the others."""
    return ROOT if profile == "cpu" else ROOT / "_build" / "profiles" / profile


# --- step 2: the machine -------------------------------------------------------------------

def is_debian() -> bool:
    return Path("/etc/debian_version").exists()


def set_up_machine() -> None:
    """As root on Debian/Ubuntu, install and start what the book needs (never fatal)."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and is_debian()):
        return
    if available("slurm"):
        return
    if not (SETUP.is_file() and os.access(SETUP, os.X_OK)):
        print(f"setup: no cluster here, and {shown(SETUP)} is missing; going on without one")
        return
    print(f"setup: running as root on Debian and no SLURM cluster answers: {shown(SETUP)}",
          flush=True)
    proc = subprocess.run([str(SETUP)], cwd=ROOT)
    refresh()
    if proc.returncode != 0:
        print(f"setup: {shown(SETUP)} exited {proc.returncode}; going on without a cluster")


# --- steps 3 and 4: execute once, cache as myst-nb keys it ---------------------------------

def md_config() -> Any:
    """The MyST parser configuration of the book (``parse:`` in ``_config.yml``).

    myst-nb reads a MyST notebook with it; the same reading gives the same cells.
    """
    import yaml
    from myst_parser.config.main import MdParserConfig

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8")) or {}
    parse = config.get("parse") or {}
    known = set(MdParserConfig.__dataclass_fields__)
    kwargs: dict[str, Any] = {}
    for key, value in parse.items():
        name = key.removeprefix("myst_")
        if name == "enable_extensions":
            kwargs[name] = set(value)
        elif name in known:
            kwargs[name] = value
    return MdParserConfig(**kwargs)


def read_as_myst_nb(path: Path, config: Any) -> Any:
    """The notebook exactly as myst-nb reads ``path`` during the book build."""
    from myst_nb.core.read import read_myst_markdown_notebook

    return read_myst_markdown_notebook(path.read_text(encoding="utf-8"), config=config,
                                       add_source_map=True, path=str(path))


def code_sources(nb: Any) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def with_outputs(source_nb: Any, executed: Any, name: str) -> Any:
    """``source_nb`` (as myst-nb reads it) with the outputs of ``executed``, cell by cell."""
    nb = copy.deepcopy(source_nb)
    ran = [c for c in executed.cells if c.cell_type == "code"]
    cells = [c for c in nb.cells if c.cell_type == "code"]
    if [c.source for c in ran] != [c.source for c in cells]:
        raise BuildError(f"{name}: the executed code cells differ from the source as myst-nb "
                         "reads it (jupytext and myst-nb disagree); cannot reuse the run")
    for cell, done in zip(cells, ran):
        cell.outputs = done.outputs
        cell.execution_count = done.execution_count
    for key in ("language_info", "widgets"):
        if key in executed.metadata:
            nb.metadata[key] = executed.metadata[key]
    return nb


def failure_message(outcome: Outcome, path: Path) -> str:
    return f"{shown(path)}: {outcome.error}"


def execute_and_cache(paths: list[Path], profile: str, executed_dir: Path, cache_dir: Path,
                      timeout: int, keep_going: bool = False, jobs: int = 1) -> list[Outcome]:
    """Steps 3 and 4: execute each notebook once (unless cached) and cache its outputs.

    Returns one outcome per notebook in ``paths`` order (status ``ok``, ``cached`` or
    ``FAILED``); stops at the first failure unless ``keep_going``. With ``jobs`` > 1 that
    many notebooks execute at once (each kernel is its own process; the cache is written
    from this thread only). Writes ``summary.json`` into ``executed_dir``.
    """
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    os.environ["HPCAI_PROFILE"] = profile  # the kernel inherits it; no parameter is injected
    os.environ.setdefault("HPCAI_ROOT", str(ROOT))
    executed_dir.mkdir(parents=True, exist_ok=True)
    cache = get_cache(str(cache_dir))
    config = md_config()
    done: dict[Path, Outcome] = {}
    todo: list[tuple[Path, Any]] = []
    last = {path for path in paths if runs_last(path)}
    for path in sorted(paths, key=lambda p: p in last):  # the readers of records after
        name = shown(path)
        source_nb = read_as_myst_nb(path, config)
        target = executed_dir / f"{path.stem}.ipynb"
        try:
            cache.match_cache_notebook(source_nb)
            hit = True
        except KeyError:
            hit = False
        # a reader of the others' records is stale as soon as any other one executes
        hit = hit and not (path in last and any(p not in last for p, _ in todo))
        if not hit:
            todo.append((path, source_nb))
            continue
        current = target.exists() and code_sources(
            nbformat.read(target, as_version=4)) == code_sources(source_nb)
        if not current:  # the cache holds this run; write the executed copy from it
            _, merged = cache.merge_match_into_notebook(source_nb)
            nbformat.write(merged, target)
        print(f"cached    {name} (unchanged since its last execution)", flush=True)
        done[path] = Outcome(name, str(target), "cached", 0.0)

    def run(path: Path) -> Outcome:
        print(f"executing {shown(path)} at profile {profile} ...", flush=True)
        return execute(path, profile, executed_dir, timeout, parameters={})

    sources = dict(todo)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        pending = {}
        queue = [path for path, _ in todo]
        stop = False
        while queue or pending:
            while queue and not stop and len(pending) < max(1, jobs):
                if queue[0] in last and any(p not in last for p in pending.values()):
                    break  # wait until every other notebook has recorded its results
                path = queue.pop(0)
                pending[pool.submit(run, path)] = path
            if not pending:
                break
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                path = pending.pop(future)
                outcome = future.result()
                outcome.notebook = shown(path)
                done[path] = outcome
                if outcome.status != "ok":
                    print(f"FAILED    {failure_message(outcome, path)}", flush=True)
                    stop = stop or not keep_going
                    continue
                target = executed_dir / f"{path.stem}.ipynb"
                executed = nbformat.read(target, as_version=4)
                try:  # the source may have been edited while it ran
                    nb = with_outputs(sources[path], executed, outcome.notebook)
                except BuildError as err:
                    outcome.status, outcome.error = "FAILED", str(err)
                    print(f"FAILED    {err}", flush=True)
                    stop = stop or not keep_going
                    continue
                cache.cache_notebook_bundle(
                    CacheBundleIn(nb, str(path), data={"execution_seconds": outcome.seconds}),
                    check_validity=False, overwrite=True)
                print(f"ok        {outcome.notebook} in {outcome.seconds:.1f} s", flush=True)
    outcomes = [done[path] for path in paths if path in done]
    write_summary(executed_dir, profile, outcomes)
    return outcomes


# --- step 5: the HTML ----------------------------------------------------------------------

def jupyter_book(out: Path, profile: str, strict: bool) -> tuple[int, str]:
    """Run ``jupyter-book build``, echo its output, and return (exit status, log)."""
    bindir = Path(sys.executable).parent
    jb = bindir / "jupyter-book"
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(ROOT),
           "--path-output", str(out)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    env = {**os.environ, "HPCAI_PROFILE": profile,
           "PATH": os.pathsep.join([str(bindir), os.environ.get("PATH", "")])}
    print("$ " + " ".join(cmd), flush=True)
    lines: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, cwd=ROOT) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
    log = "".join(lines)
    (out / "_build").mkdir(parents=True, exist_ok=True)
    (out / "_build" / "jupyter-book.log").write_text(log, encoding="utf-8")
    return proc.returncode, log


# --- step 6: what is missing ---------------------------------------------------------------

def capability_summary(paths: list[Path]) -> None:
    """Each page that ran without a capability it needs, and the command that enables it."""
    print(format_missing(missing(paths)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=os.environ.get("PROFILE") or "cpu",
                        help=f"one of {', '.join(PROFILES)} (default: $PROFILE or cpu)")
    parser.add_argument("--out", type=Path, default=None,
                        help="build folder (default: . for cpu, _build/profiles/<profile>)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("--strict", action="store_true",
                        help="jupyter-book with -W -n --keep-going (warnings are errors)")
    parser.add_argument("--keep-going", action="store_true",
                        help="execute every notebook even after one fails")
    parser.add_argument("--no-setup", action="store_true",
                        help="never install or start SLURM (step 2)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="notebooks executed at once (default 1: measurements want a "
                             "quiet machine; the smoke tests use 2)")
    parser.add_argument("--check-only", action="store_true",
                        help="only check the profile (step 1) and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, notebooks: list[Path] | None = None) -> int:
    ns = parse_args(argv)
    try:
        profile = check_profile(ns.profile)
    except ProfileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if ns.jobs < 1:
        print(f"error: --jobs {ns.jobs}: give a whole number of at least 1", file=sys.stderr)
        return 2
    if ns.check_only:
        return 0
    out = (ns.out or default_out(profile)).resolve()
    started = time.perf_counter()
    if not ns.no_setup:
        set_up_machine()
    paths = notebooks or toc_notebooks()
    executed_dir = out / "_build" / "executed" / profile
    cache_dir = out / "_build" / ".jupyter_cache"
    # each build reads back (chapter 16) only what it, or an earlier build into the same
    # folder, recorded; $HPCAI_RESULTS_DIR, when set, wins
    results = os.environ.get(RESULTS_ENV) or str(out / "_build" / "results")
    saved = os.environ.get(RESULTS_ENV)
    os.environ[RESULTS_ENV] = results  # the kernels inherit it
    try:
        outcomes = execute_and_cache(paths, profile, executed_dir, cache_dir, ns.timeout,
                                     keep_going=ns.keep_going, jobs=ns.jobs)
    finally:
        if saved is None:
            os.environ.pop(RESULTS_ENV, None)
    failed = [o for o in outcomes if o.status == "FAILED"]
    if failed:
        print(f"\nerror: {len(failed)} notebook(s) raised at profile {profile}; "
              "the book was not built:", file=sys.stderr)
        for o in failed:
            print(f"  {o.notebook}: {o.error}", file=sys.stderr)
        return 1
    if notebooks is not None:  # a partial run (tests): no book from a subset of the pages
        return 0
    rc, log = jupyter_book(out, profile, ns.strict)
    reran = len(EXECUTING.findall(log))
    print(f"\nexecuted {sum(o.status == 'ok' for o in outcomes)} notebook(s), "
          f"{sum(o.status == 'cached' for o in outcomes)} from the cache; jupyter-book "
          f"executed {reran}; {time.perf_counter() - started:.0f} s in all")
    if reran:
        print(f"warning: jupyter-book executed {reran} notebook(s) itself: the cache did "
              "not match what myst-nb read")
    if rc != 0:
        print(f"error: jupyter-book build exited {rc}", file=sys.stderr)
        return 1
    capability_summary(paths)
    print(f"\nThe book is at {out / '_build' / 'html' / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
