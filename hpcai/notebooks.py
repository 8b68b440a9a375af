"""Executing the book's MyST notebooks in batch (papermill), shared by the scripts.

``scripts/run_notebooks.py`` (``make notebooks``) and ``scripts/classroom.py`` execute with
``-p profile P``; ``scripts/build_book.py`` (``make book``) executes with no parameter at all,
the profile coming from ``$HPCAI_PROFILE``, so the executed code equals the source and myst-nb
can take the outputs from its cache. The heavy imports (papermill, jupytext) happen on use.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .profiles import PROFILES, ProfileError, check_profile

ROOT = Path(__file__).resolve().parent.parent
# Seconds a kernel may take to start (papermill, nbval): 60 s, their default, is not always
# enough on two busy cores.
KERNEL_START_S = 300


@dataclass
class Outcome:
    """What became of one notebook: ``ok``, ``cached`` (not re-executed) or ``FAILED``."""

    notebook: str
    output: str
    status: str
    seconds: float
    error: str = ""


def toc_notebooks(toc: Path | None = None) -> list[Path]:
    """Every page of ``_toc.yml`` that lives under ``notebooks/``, in book order."""
    import yaml

    toc = toc or ROOT / "_toc.yml"

    found: list[Path] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                name = node.get(key)
                if isinstance(name, str) and name.startswith("notebooks/"):
                    found.append(ROOT / f"{name.removesuffix('.md')}.md")
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(toc.read_text(encoding="utf-8")))
    return found


def shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def failed_cell(err: Any) -> str:
    """Which cell raised what, from papermill's error: number, first source line, exception."""
    cell = getattr(err, "exec_count", None) or "?"
    lines = [line for line in (getattr(err, "source", "") or "").splitlines() if line.strip()]
    first = f" `{lines[0].strip()[:80]}`" if lines else ""
    return f"cell [{cell}]{first} raised {err.ename}: {err.evalue}"


def execute(path: Path, profile: str, out_dir: Path, timeout: int,
            parameters: dict[str, Any] | None = None) -> Outcome:
    """Convert one MyST notebook and execute it with papermill; never raises.

    ``parameters`` default to ``{"profile": profile}`` (papermill injects a cell after the
    parameters cell); with ``{}`` nothing is injected and the executed code equals the source
    (the caller then passes the profile through ``$HPCAI_PROFILE``).
    """
    if parameters is None:
        parameters = {"profile": profile}
    import jupytext
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{path.stem}.ipynb"
    started = time.perf_counter()
    source = out_dir / f".{path.stem}.src.ipynb"
    try:
        jupytext.write(jupytext.read(path), source)
        pm.execute_notebook(
            str(source), str(output), parameters=parameters,
            cwd=str(path.parent), kernel_name="python3", progress_bar=False,
            execution_timeout=timeout, log_output=False,
            # papermill's default of 60 s for a kernel to start is not enough on two
            # cores running two builds and a test suite beside it
            start_timeout=KERNEL_START_S,
        )
        status, error = "ok", ""
    except Exception as err:  # noqa: BLE001 - the batch goes on and reports
        status = "FAILED"
        if hasattr(err, "ename"):  # papermill: the exception raised inside the notebook
            error = failed_cell(err)
        else:
            error = f"{type(err).__name__}: {str(err).strip()[:2000]}"
    finally:
        source.unlink(missing_ok=True)
    return Outcome(shown(path), str(output), status,
                   time.perf_counter() - started, error)


def print_table(outcomes: list[Outcome], profile: str) -> None:
    """One line per notebook (status, seconds), then the error of each failed one."""
    width = max([len(o.notebook) for o in outcomes] + [8])
    print(f"\nprofile {profile}: {len(outcomes)} notebooks")
    print(f"{'notebook':<{width}}  {'status':<6}  {'seconds':>8}")
    print(f"{'-' * width}  {'-' * 6}  {'-' * 8}")
    for o in outcomes:
        print(f"{o.notebook:<{width}}  {o.status:<6}  {o.seconds:8.1f}")
    total = sum(o.seconds for o in outcomes)
    failed = [o for o in outcomes if o.status not in ("ok", "cached")]
    print(f"{'total':<{width}}  {len(failed)} failed  {total:8.1f}")
    for o in failed:
        print(f"\n--- {o.notebook} ---\n{o.error}")


def run(paths: list[Path], profile: str, out_dir: Path, timeout: int) -> list[Outcome]:
    """Execute ``paths`` one after the other with ``-p profile``; a failure does not stop."""
    os.environ.setdefault("HPCAI_ROOT", str(ROOT))
    outcomes = []
    for path in paths:
        print(f"executing {shown(path)} at profile {profile} ...", flush=True)
        outcomes.append(execute(path, profile, out_dir, timeout))
    write_summary(out_dir, profile, outcomes)
    return outcomes


def write_summary(out_dir: Path, profile: str, outcomes: list[Outcome]) -> Path:
    """``summary.json``: the profile and one row per notebook (status, seconds, error)."""
    path = out_dir / "summary.json"
    path.write_text(json.dumps({"profile": profile, "notebooks": [asdict(o) for o in outcomes]},
                               indent=1) + "\n", encoding="utf-8")
    return path


def parse_batch_args(doc: str, default_out: str, argv: list[str] | None
                     ) -> tuple[str, list[Path], Path, int]:
    """Command line shared by the batch runner and the classroom builder.

    Returns (profile, notebooks, output folder, timeout); exits with status 2 and a clear
    message on an unknown profile or a missing notebook, before anything runs.
    """
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="MyST notebooks (default: every notebook in _toc.yml)")
    parser.add_argument("--profile", default=os.environ.get("PROFILE") or "cpu",
                        help=f"one of {', '.join(PROFILES)}")
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default: {default_out})")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    ns = parser.parse_args(argv)
    try:
        profile = check_profile(ns.profile)
    except ProfileError as err:
        parser.exit(2, f"error: {err}\n")
    paths = [p.resolve() for p in ns.notebooks] or toc_notebooks()
    missing = [p for p in paths if not p.exists()]
    if missing:
        parser.exit(2, f"error: no such notebook: {', '.join(map(str, missing))}\n")
    out = (ns.out or ROOT / default_out.replace("<profile>", profile)).resolve()
    return profile, paths, out, ns.timeout
