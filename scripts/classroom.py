#!/usr/bin/env python
"""Build the classroom bundle: executed notebooks plus an nbval sanitize file.

    python scripts/classroom.py --profile cpu        # into _build/classroom/
    python scripts/classroom.py --from _build/executed/smoke --out DIR   # no execution

The bundle holds one executed ``.ipynb`` per notebook of the book (outputs included, executed
with papermill at the given profile, or copied from a folder of notebooks that
``scripts/build_book.py`` executed, cells that measure or launch tagged
``nbval-ignore-output``), ``sanitize.cfg`` (regular expressions that blank out numbers,
addresses and other machine-dependent values in the remaining outputs) and a short README. Check a
student's copy, or the bundle itself, with::

    pytest --nbval _build/classroom --nbval-sanitize-with _build/classroom/sanitize.cfg
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hpcai.notebooks import (  # noqa: E402
    Outcome,
    parse_batch_args,
    print_table,
    run,
    shown,
    write_summary,
)

# Each rule: (name, regex, replacement). Order matters: specific before general.
SANITIZE_RULES: list[tuple[str, str, str]] = [
    ("addresses", r"0x[0-9a-fA-F]+", "0xADDR"),
    ("temporary-paths", r"(/tmp|/var/tmp|/dev/shm)/[^\s'\"]*", "TMPPATH"),
    ("timestamps", r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{4}|Z)?", "TIMESTAMP"),
    # Leading blanks go too: right-aligned columns change width with the number.
    ("floats", r"[ \t]*[-+]?(\d+\.\d*|\.\d+)([eE][-+]?\d+)?", " FLOAT"),
    ("sci-ints", r"[ \t]*[-+]?\d+[eE][-+]?\d+", " FLOAT"),
    ("integers-with-units",
     r"\b\d+\s?(ns|us|µs|ms|s|B|KiB|MiB|GiB|KB|MB|GB|bytes|MB/s|GB/s|GFLOP/s|img/s|tokens/s|x|%)\b",
     "QUANTITY"),
    ("job-ids", r"(?i)(job\s*(id)?\s*[:=]?\s*)\d+", r"\1JOBID"),
    ("pids", r"(?i)(pid\s*[:=]?\s*)\d+", r"\1PID"),
    ("cache-sizes", r"\b\d+[KMG]\b", "SIZE"),
    # Whatever number is left (counts found by a search, sizes picked from the machine).
    ("numbers", r"[ \t]*[-+]?\d[\d,_]*", " N"),
]

# A cell whose source measures or launches produces machine-dependent output: nbval still
# executes it (so its assertions still run) but does not compare its output. So does a cell
# that asks what the machine has (a cluster, a GPU: hpcai.capabilities).
MEASURING = re.compile(
    r"\b(time_it|Timer|perf_counter|record|record_machine|run_script|torchrun|mpiexec|sbatch|"
    r"subprocess|load_results|latest|timer_resolution|page_note|available|glue_sentence)\b")
GLUE_MIME = "application/papermill.record/"


def measures(cell: dict) -> bool:
    """True when a code cell's outputs depend on the machine or on timing."""
    if MEASURING.search(cell.get("source", "")):
        return True
    for out in cell.get("outputs", []):
        if any(key.startswith(GLUE_MIME) for key in out.get("data", {})):
            return True
    return False


def mark_for_nbval(path: Path) -> int:
    """Tag measuring cells ``nbval-ignore-output``; return how many were tagged."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    tagged = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and measures(cell):
            tags = cell.metadata.setdefault("tags", [])
            if "nbval-ignore-output" not in tags:
                tags.append("nbval-ignore-output")
                tagged += 1
    nbformat.write(nb, path)
    return tagged

README = """# Classroom bundle of *Supercomputing for AI*

Executed at profile `{profile}`. Each notebook checks its own correctness with assertions; nbval
re-executes every cell (so every assertion runs again) and compares the outputs with the ones
stored here. Cells that measure or launch are tagged `nbval-ignore-output`, because their output
depends on the machine; in the other cells numbers are blanked with `sanitize.cfg`:

    pytest --nbval-current-env --nbval {folder} --nbval-sanitize-with {folder}/sanitize.cfg
"""


def write_sanitize(path: Path) -> Path:
    lines = []
    for name, regex, replace in SANITIZE_RULES:
        lines += [f"[{name}]", f"regex: {regex}", f"replace: {replace}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


PROFILE_TAG = "classroom-profile"


def pin_profile(path: Path, profile: str) -> None:
    """Make a notebook executed through ``$HPCAI_PROFILE`` re-execute at the same profile.

    ``scripts/build_book.py`` executes the source unchanged (``profile = None`` picks up
    ``$HPCAI_PROFILE``). nbval re-executes the bundle in whatever environment the student has,
    so a first cell sets the variable as the build did; every other cell stays as it ran.
    A notebook executed with ``-p profile P`` (papermill's injected cell) is left alone.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    if any("injected-parameters" in t or PROFILE_TAG in t for t in tags):
        return
    first = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), 0)
    cell = nbformat.v4.new_code_cell(
        "# Classroom bundle: re-execute at the profile these outputs were made at\n"
        f"import os\n\nos.environ[\"HPCAI_PROFILE\"] = {profile!r}")
    cell.metadata["tags"] = [PROFILE_TAG]
    nb.cells.insert(first, cell)
    nbformat.write(nb, path)


def from_executed(folder: Path, paths: list[Path], out: Path) -> tuple[str, list[Outcome]]:
    """Copy the notebooks ``scripts/build_book.py`` executed into the bundle (no execution)."""
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    rows = {row["notebook"]: row for row in summary["notebooks"]}
    profile = summary["profile"]
    outcomes = []
    for path in paths:
        row = rows.get(shown(path))
        source = folder / f"{path.stem}.ipynb"
        target = out / source.name
        if row is None or row["status"] not in ("ok", "cached") or not source.exists():
            why = row["error"] if row else f"not executed into {folder}"
            outcomes.append(Outcome(shown(path), str(target), "FAILED", 0.0, why))
            continue
        shutil.copyfile(source, target)
        pin_profile(target, profile)
        outcomes.append(Outcome(shown(path), str(target), "ok", row["seconds"]))
    return profile, outcomes


def main(argv: list[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--from", dest="source", type=Path, default=None)
    known, rest = pre.parse_known_args(argv)
    profile, paths, out, timeout = parse_batch_args(__doc__, "_build/classroom", rest)
    if known.source is not None and not (known.source / "summary.json").exists():
        print(f"error: --from {known.source}: no summary.json there; run "
              "scripts/build_book.py first", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.ipynb"):
        old.unlink()
    if known.source is not None:
        profile, outcomes = from_executed(known.source.resolve(), paths, out)
    else:
        outcomes = run(paths, profile, out, timeout)
    for outcome in outcomes:
        if outcome.status == "ok":
            mark_for_nbval(Path(outcome.output))
    write_sanitize(out / "sanitize.cfg")
    (out / "README.md").write_text(README.format(profile=profile, folder=out), encoding="utf-8")
    write_summary(out, profile, outcomes)
    print_table(outcomes, profile)
    print(f"\nclassroom bundle: {out}")
    return 1 if any(o.status != "ok" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
