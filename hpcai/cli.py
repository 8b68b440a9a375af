"""The command-line entry point shared by every benchmark under ``scripts/bench/``.

``bench_main(run, SIZES)`` gives each script the same interface::

    python scripts/bench/NAME.py --profile cpu --json [--KNOB VALUE ...]

With ``--json`` the last line of standard output is one JSON object holding the result of
``run(settings)`` plus ``bench``, ``profile``, ``settings`` and ``machine``.

Bad input is refused before any work, with one line on standard error that starts with
``error:``, names the knob and says what is allowed, and exit status 2 (no traceback):

* a number that does not parse (``--n abc``), or a list element that does not;
* a numeric knob (or list element) <= 0, unless some profile of the size table itself uses
  0 or a negative value for it: then anything >= that smallest value is allowed;
* a string knob outside ``choices={"knob": ("a", "b")}`` (for a list knob: every element);
* whatever ``check(settings)`` rejects by raising ``ValueError`` (or ``ProfileError``) with
  a message, for rules of one benchmark (min <= max, a size that cannot fit in memory).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .measure import machine
from .profiles import PROFILES, Settings, resolve

_KIND = {int: "an integer", float: "a number", str: "a string"}
_NOUN = {int: "integer", float: "number", str: "string"}


def flag(key: str) -> str:
    """The command-line spelling of a knob: ``min_bytes`` -> ``--min-bytes``."""
    return "--" + key.replace("_", "-")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``error:`` line (no usage block), exit 2."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        m = re.fullmatch(r"argument (\S+?)(?:/\S+)?: (.*)", message)
        if m:
            opt, rest = m.groups()
            sep = " " if rest.startswith("must ") else ": "
            message = f"{opt}{sep}{rest}"
        if message.startswith("unrecognized arguments"):
            message += " (run with --help to list the knobs)"
        self.exit(2, f"error: {message}\n")


def _parse_bool(text: str) -> bool:
    if text.lower() in {"1", "true", "yes", "on"}:
        return True
    if text.lower() in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"must be true or false, got {text!r}")


def _parse_scalar(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be {_KIND.get(kind, kind.__name__)}, got {text!r}"
            ) from None

    return parse


def _parse_list(kind: type) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            return [kind(x) for x in text.split(",") if x]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a comma-separated list of {_NOUN.get(kind, kind.__name__)}s, "
                f"got {text!r}"
            ) from None

    return parse


def _inner(example: list[Any] | tuple[Any, ...]) -> type:
    if any(isinstance(x, float) for x in example):
        return float
    return type(example[0]) if example else str


def _converter(example: Any) -> Callable[[str], Any]:
    if isinstance(example, bool):
        return _parse_bool
    if isinstance(example, (list, tuple)):
        return _parse_list(_inner(example))
    if isinstance(example, (int, float)):
        return _parse_scalar(type(example))
    return str


def _metavar(example: Any, allowed: Sequence[str] | None) -> str:
    """What ``--help`` shows after the flag: INT, NUMBER, BOOL, TEXT, {a,b}, INT,... ."""
    names = {bool: "BOOL", int: "INT", float: "NUMBER", str: "TEXT"}
    if isinstance(example, (list, tuple)):
        one = "{" + ",".join(allowed) + "}" if allowed else names.get(_inner(example), "TEXT")
        return f"{one},..."
    if allowed:
        return "{" + ",".join(allowed) + "}"
    return names.get(type(example), "TEXT")


def build_parser(
    table: Mapping[str, Mapping[str, Any]],
    description: str | None,
    choices: Mapping[str, Sequence[str]] | None = None,
) -> argparse.ArgumentParser:
    """An argument parser with ``--profile``, ``--json`` and one ``--KNOB`` per setting.

    Each knob's metavar says its kind (``INT``, ``NUMBER``, ``BOOL``, ``TEXT``, ``{a,b}``
    for a choice, a trailing ``,...`` for a comma-separated list); tests read it from
    ``--help``.
    """
    parser = _Parser(description=description)
    choices = choices or {}
    unknown = set(choices) - {k for row in table.values() for k in row}
    if unknown:
        raise ValueError(f"choices= names knobs that no profile has: {sorted(unknown)}")
    parser.add_argument("--profile", default=None, help=f"one of {', '.join(PROFILES)} "
                        "(default: $HPCAI_PROFILE or cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    example = dict(table.get("cpu") or next(iter(table.values()), {}))
    for row in table.values():
        for key, value in row.items():
            example.setdefault(key, value)
    for key, value in example.items():
        parser.add_argument(flag(key), dest=key, default=None, type=_converter(value),
                            metavar=_metavar(value, choices.get(key)),
                            help=f"(cpu profile: {value!r})")
    return parser


def _numbers(value: Any) -> list[int | float]:
    items = value if isinstance(value, (list, tuple)) else [value]
    return [x for x in items if isinstance(x, (int, float)) and not isinstance(x, bool)]


def lower_bounds(table: Mapping[str, Mapping[str, Any]]) -> dict[str, int | float | None]:
    """Per numeric knob, the smallest value allowed: ``None`` means "> 0" (every profile uses
    a positive value); a number means ">= it" (the smallest value some profile uses)."""
    lows: dict[str, int | float | None] = {}
    for row in table.values():
        for key, value in row.items():
            nums = [x for x in _numbers(value) if x <= 0]
            if _numbers(value):
                low = lows.get(key)
                lows[key] = min([*nums, *([] if low is None else [low])], default=None)
    return lows


def _what(kind: type, low: int | float | None, many: bool) -> str:
    noun = "integer" if kind is int else "number"
    text = f"positive {noun}" if low is None else f"{noun} >= {low}"
    if many:
        return f"a non-empty comma-separated list of {text}s"
    return f"an {text}" if text[0] in "aeiou" else f"a {text}"


def validate(
    table: Mapping[str, Mapping[str, Any]],
    overrides: Mapping[str, Any],
    choices: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Raise ``ValueError`` (message naming the knob) for an override outside what is allowed.

    Numbers must be > 0, or >= the smallest value of the size table when some profile uses
    0 or less; strings (or each string of a list) must be among ``choices`` where given.
    """
    lows = lower_bounds(table)
    choices = choices or {}
    for key, value in overrides.items():
        if value is None:
            continue
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        many = isinstance(value, (list, tuple))
        if key in lows:
            low = lows[key]
            kind = int if all(isinstance(x, int) for x in _numbers(value)) else float
            bad = [x for x in items if (x <= 0 if low is None else x < low)]
            if bad or not items:
                shown = ",".join(map(str, items)) if many else str(value)
                raise ValueError(
                    f"{flag(key)} must be {_what(kind, low, many)}, got {shown or repr('')}"
                )
        if key in choices:
            bad = [x for x in items if x not in choices[key]]
            if bad or (many and not items):
                allowed = ", ".join(map(str, choices[key]))
                what = "a comma-separated list drawn from" if many else "one of"
                raise ValueError(
                    f"{flag(key)} must be {what} {allowed}; got {', '.join(map(str, bad))!r}"
                    if bad else f"{flag(key)} must be a non-empty list drawn from {allowed}"
                )


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
    choices: Mapping[str, Sequence[str]] | None = None,
    check: Callable[[Settings], None] | None = None,
) -> dict[str, Any] | None:
    """Parse the command line, resolve the profile, validate, run, and print the result.

    Only rank 0 (of torchrun, mpiexec or srun) prints; ``run`` may return ``None`` on other
    ranks. Bad input (a value that does not parse, a number out of range, a string outside
    ``choices``, settings that ``check`` rejects with ``ValueError``, an unknown profile, a
    GPU profile without a GPU) exits with status 2 and one ``error:`` line on standard error
    before any work.
    """
    parser = build_parser(table, description, choices)
    ns = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(ns).items() if k not in {"profile", "json"}}
    try:
        validate(table, overrides, choices)
        settings = resolve(ns.profile, table, **overrides)
        if check is not None:
            check(settings)
    except ValueError as err:  # ProfileError is a ValueError
        message = " ".join(str(err).split()) or type(err).__name__
        if not message.startswith("error:"):
            message = f"error: {message}"
        parser.exit(2, message + "\n")
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
