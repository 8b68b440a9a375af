"""One record format for every measured number: glue it for the text and keep it on disk.

``record("ch01_triad_GBps", 9.8, "GB/s")`` does three things:

1. glues the value under that key (inside a notebook), so the chapter text can say
   ``{glue:text}`ch01_triad_GBps:.1f` GB/s`` and never types the number;
2. appends ``{key, value, unit, machine, time, ...}`` to ``_build/results/<source>.json``;
3. returns the record.

Later chapters (and chapter 16's cross-cutting patterns) read the records back with
:func:`load_results` and :func:`latest`.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from .measure import describe_machine, machine
from .paths import repo_root
from .profiles import current_profile

RESULTS_ENV = "HPCAI_RESULTS_DIR"


def results_dir() -> Path:
    """``$HPCAI_RESULTS_DIR`` or ``<repo>/_build/results`` (created on demand)."""
    path = Path(os.environ.get(RESULTS_ENV) or repo_root() / "_build" / "results")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def glue(key: str, value: Any) -> None:
    """Glue ``value`` under ``key`` when running inside a notebook kernel; no-op elsewhere."""
    if _in_notebook():
        from myst_nb import glue as _glue

        _glue(key, value, display=False)


def _plain(value: Any) -> Any:
    """Turn NumPy scalars and the like into JSON-friendly Python values."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"refusing to record a non-finite value: {value!r}")
    return value


def _append(path: Path, entry: dict[str, Any]) -> None:
    """Append ``entry`` to the JSON list in ``path``, safe against concurrent writers.

    Writers take an exclusive lock on ``<path>.lock``, read the list, write the new list to a
    temporary file and rename it over ``path``: a reader never sees a half-written file (two
    notebooks of one chapter may record at once), nor does an interrupted write leave one.
    """
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a", encoding="utf-8") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            text = path.read_text(encoding="utf-8").strip() if path.exists() else ""
            rows = json.loads(text) if text else []
            rows.append(entry)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
            os.replace(tmp, path)
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


def record(
    key: str,
    value: Any,
    unit: str,
    *,
    source: str | None = None,
    extra: dict[str, Any] | None = None,
    glue_value: bool = True,
) -> dict[str, Any]:
    """Record a measured value: glue it, append it to the results file, return the record.

    ``source`` names the results file (default: the key's prefix before the first ``_``,
    e.g. ``ch01``).
    """
    if not key or not key.replace("_", "").isalnum():
        raise ValueError(f"a result key is letters, digits and underscores, not {key!r}")
    value = _plain(value)
    source = source or key.split("_", 1)[0]
    entry = {
        "key": key,
        "value": value,
        "unit": unit,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "profile": current_profile(),
        "machine": machine(),
        **({"extra": extra} if extra else {}),
    }
    _append(results_dir() / f"{source}.json", entry)
    if glue_value:
        glue(key, value)
    return entry


def record_machine(key: str = "machine") -> str:
    """Glue the one-line machine description under ``key`` and return it."""
    text = describe_machine()
    glue(key, text)
    return text


def load_results(key: str | None = None) -> list[dict[str, Any]]:
    """All stored records, oldest first, optionally only those with ``key``."""
    rows: list[dict[str, Any]] = []
    for path in sorted(results_dir().glob("*.json")):
        try:
            rows.extend(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, OSError):
            continue
    if key is not None:
        rows = [r for r in rows if r.get("key") == key]
    return sorted(rows, key=lambda r: r.get("time", ""))


def latest(key: str) -> dict[str, Any] | None:
    """The newest record with ``key``, or ``None`` when nothing was recorded yet."""
    rows = load_results(key)
    return rows[-1] if rows else None
