"""The command-line entry point shared by every benchmark under ``scripts/bench/``.

``bench_main(run, SIZES)`` gives each script the same interface::

    python scripts/bench/NAME.py --profile cpu --json [--KNOB VALUE ...]

With ``--json`` the last line of standard output is one JSON object holding the result of
``run(settings)`` plus ``bench``, ``profile``, ``settings`` and ``machine``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .measure import machine
from .profiles import PROFILES, ProfileError, Settings, resolve


def _parse_bool(text: str) -> bool:
    if text.lower() in {"1", "true", "yes", "on"}:
        return True
    if text.lower() in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_list(kind: type) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        return [kind(x) for x in text.split(",") if x]

    return parse


def _converter(example: Any) -> Callable[[str], Any]:
    if isinstance(example, bool):
        return _parse_bool
    if isinstance(example, (list, tuple)):
        inner = type(example[0]) if example else str
        return _parse_list(inner)
    if isinstance(example, (int, float)):
        return type(example)
    return str


def build_parser(table: Mapping[str, Mapping[str, Any]], description: str | None) -> argparse.ArgumentParser:
    """An argument parser with ``--profile``, ``--json`` and one ``--KNOB`` per setting."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--profile", default=None, help=f"one of {', '.join(PROFILES)} "
                        "(default: $HPCAI_PROFILE or cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    example = dict(table.get("cpu") or next(iter(table.values()), {}))
    for row in table.values():
        for key, value in row.items():
            example.setdefault(key, value)
    for key, value in example.items():
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, default=None,
                            type=_converter(value), help=f"(cpu profile: {value!r})")
    return parser


def _rank() -> int:
    for var in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def bench_main(
    run: Callable[[Settings], dict[str, Any] | None],
    table: Mapping[str, Mapping[str, Any]],
    *,
    description: str | None = None,
    argv: Sequence[str] | None = None,
    name: str | None = None,
) -> dict[str, Any] | None:
    """Parse the command line, resolve the profile, run, and print the result.

    Only rank 0 (of torchrun, mpiexec or srun) prints; ``run`` may return ``None`` on other
    ranks. Bad input (unknown profile, GPU profile without a GPU) exits with status 2 and a
    one-line message before any work.
    """
    parser = build_parser(table, description)
    ns = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(ns).items() if k not in {"profile", "json"}}
    try:
        settings = resolve(ns.profile, table, **overrides)
    except ProfileError as err:
        parser.exit(2, f"error: {err}\n")
    result = run(settings)
    if result is None or _rank() != 0:
        return result
    bench = name or Path(sys.argv[0]).stem
    out = {"bench": bench, "profile": settings.profile, "settings": settings.as_dict(),
           **result, "machine": machine()}
    out = _jsonable(out)
    if ns.json:
        print(json.dumps(out), flush=True)
    else:
        for key, value in out.items():
            if key not in {"machine", "settings"}:
                print(f"{key}: {value}")
    return out
