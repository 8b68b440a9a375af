#!/usr/bin/env python
"""Build the classroom bundle: executed notebooks plus an nbval sanitize file.

    python scripts/classroom.py --profile cpu        # into _build/classroom/

The bundle holds one executed ``.ipynb`` per notebook of the book (outputs included, executed
with papermill at the given profile, cells that measure or launch tagged
``nbval-ignore-output``), ``sanitize.cfg`` (regular expressions that blank out numbers,
addresses and other machine-dependent values in the remaining outputs) and a short README. Check a
student's copy, or the bundle itself, with::

    pytest --nbval _build/classroom --nbval-sanitize-with _build/classroom/sanitize.cfg
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from run_notebooks import parse_batch_args, print_table, run  # noqa: E402

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
# executes it (so its assertions still run) but does not compare its output.
MEASURING = re.compile(
    r"\b(time_it|Timer|perf_counter|record|record_machine|run_script|torchrun|mpiexec|sbatch|"
    r"subprocess|load_results|latest|timer_resolution)\b")
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


def main(argv: list[str] | None = None) -> int:
    profile, paths, out, timeout = parse_batch_args(__doc__, "_build/classroom", argv)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.ipynb"):
        old.unlink()
    outcomes = run(paths, profile, out, timeout)
    for outcome in outcomes:
        if outcome.status == "ok":
            mark_for_nbval(Path(outcome.output))
    write_sanitize(out / "sanitize.cfg")
    (out / "README.md").write_text(README.format(profile=profile, folder=out), encoding="utf-8")
    print_table(outcomes, profile)
    print(f"\nclassroom bundle: {out}")
    return 1 if any(o.status != "ok" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
