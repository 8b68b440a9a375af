#!/usr/bin/env python
"""Execute the book's notebooks in batch with papermill at one profile.

    python scripts/run_notebooks.py --profile cpu                 # every notebook in _toc.yml
    python scripts/run_notebooks.py --profile smoke notebooks/appendix_measuring.md

Each MyST notebook is converted with jupytext, executed by papermill with ``-p profile P``
into ``_build/executed/<profile>/`` (or ``--out``), and a summary table is printed (and written
to ``summary.json`` there). ``make book`` does not use this batch run: ``scripts/build_book.py``
executes the source unchanged, once, for the book and the cache. A failing
notebook does not stop the batch; the exit status is non-zero if any failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hpcai.notebooks import parse_batch_args, print_table, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    profile, paths, out_dir, timeout = parse_batch_args(__doc__, "_build/executed/<profile>", argv)
    outcomes = run(paths, profile, out_dir, timeout)
    print_table(outcomes, profile)
    return 1 if any(o.status != "ok" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
