"""Chapter 16's reader of the book's own records: one measured number per key, or why.

Every notebook of the book records what it measured with ``hpcai.record`` into
``$HPCAI_RESULTS_DIR/<chNN>.json``. Chapter 16 reads those records back, from the same
build, and never types a number itself:

- :func:`fetch` returns a :class:`Found` (the newest record of the key at the current
  profile, with the chapter, the machine and the time it was measured) or a
  :class:`Missing` (which notebook to run to produce it);
- :func:`ratio` and :func:`derive` compute from fetched values (a :class:`Derived`; a
  :class:`Missing` naming what is absent; an :class:`Undefined` when an input that must
  be positive is not);
- :func:`glue_text` glues the sentence-ready text of each item under ``ch16_<key>``, so
  the chapter page can say ``{glue:text}`...::ch16_ch05_torch_add_t0_us:s```: a missing
  record becomes the sentence that says how to produce it, never a stale number;
- :func:`table` lists the records one pattern used (key, chapter, value, unit, machine,
  time) as a pandas DataFrame;
- :func:`efficiency_points` gathers the parallel-efficiency points of chapters 1, 4, 6,
  12 and 15 for one figure.

Only records of the current profile count (``hpcai.profiles.current_profile()``, set by
``resolve``): a smoke build must not show a number measured at cpu, nor the reverse.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .profiles import current_profile, default_profile
from .results import glue, load_results

PREFIX = "ch16_"


def chapter_of(key: str) -> str:
    """The chapter of a key: ``ch05_x`` -> ``5``, ``appA_x`` -> ``appA``."""
    head = key.split("_", 1)[0]
    if head.startswith("ch") and head[2:].isdigit():
        return str(int(head[2:]))
    return head


def machine_text(m: Any) -> str:
    """A short machine name: ``2-core AMD EPYC, no GPU`` (empty if unknown)."""
    if isinstance(m, str):
        return m
    if not isinstance(m, Mapping) or not m.get("cpu"):
        return ""
    gpus = ", ".join(m.get("gpus") or []) or "no GPU"
    cores = m.get("logical_cores")
    return f"{cores}-core {m['cpu']}, {gpus}" if cores else f"{m['cpu']}, {gpus}"


def time_text(stamp: str) -> str:
    """``2026-12-03T14:51:44+0000`` -> ``2026-12-03 14:51 UTC`` (odd ones unchanged)."""
    try:
        when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z")
    except (TypeError, ValueError):
        return str(stamp)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def format_value(value: Any, fmt: str = ".3g") -> str:
    """A number with ``fmt`` (thousands separated when large), anything else as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if abs(value) >= 1e3 and fmt == ".3g":
        return f"{value:,.0f}"
    return format(value, fmt)


@dataclass(frozen=True)
class Found:
    """One record read back: the newest of its key at the current profile."""

    key: str
    value: Any
    unit: str
    chapter: str
    machine: str
    time: str
    profile: str
    notebook: str = ""
    fmt: str = ".3g"
    ok: bool = field(default=True, init=False)

    @property
    def number(self) -> str:
        """The value with its unit, e.g. ``1.58 us``."""
        unit = f" {self.unit}" if self.unit else ""
        return f"{format_value(self.value, self.fmt)}{unit}"

    @property
    def where(self) -> str:
        """``chapter 9, 2-core AMD EPYC, no GPU, 2026-12-03 14:59 UTC``."""
        return f"chapter {self.chapter}, {self.machine}, {time_text(self.time)}"

    def text(self) -> str:
        """``VALUE UNIT (chapter N, MACHINE, TIME)``: what the chapter page shows."""
        return f"{self.number} ({self.where})"


@dataclass(frozen=True)
class Missing:
    """A record this build does not hold, with how to produce it."""

    key: str
    chapter: str
    notebook: str
    profile: str
    ok: bool = field(default=False, init=False)

    def text(self) -> str:
        """The sentence that stands where the number would."""
        nb = (f"notebooks/{self.notebook}.md" if self.notebook
              else "its chapter's notebook")
        return (
            f"[{self.key}: not measured in this build (profile {self.profile}): run "
            f"'make book' (or 'python scripts/run_notebooks.py --profile "
            f"{self.profile} {nb}') to produce it]"
        )


@dataclass(frozen=True)
class Derived:
    """A number computed from found records (a ratio across chapters), with sources."""

    key: str
    value: float
    unit: str
    sources: tuple[Found, ...]
    fmt: str = ".3g"
    ok: bool = field(default=True, init=False)

    @property
    def chapters(self) -> str:
        """``chapters 6 and 9``, or ``chapter 8`` when both come from one."""
        seen = sorted(dict.fromkeys(s.chapter for s in self.sources),
                      key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c))
        if len(seen) == 1:
            return f"chapter {seen[0]}"
        return "chapters " + ", ".join(seen[:-1]) + " and " + seen[-1]

    def text(self) -> str:
        """``VALUE UNIT (from chapters A and B)``."""
        unit = f" {self.unit}" if self.unit else ""
        return f"{format_value(self.value, self.fmt)}{unit} (from {self.chapters})"


@dataclass(frozen=True)
class Undefined:
    """A derived number this build cannot give: an input that must be positive was not
    (a fit over smoke-sized runs can return a negative slope, for instance)."""

    key: str
    reason: str
    sources: tuple[Found, ...]
    ok: bool = field(default=False, init=False)

    def text(self) -> str:
        """The sentence that stands where the derived number would."""
        return f"(not defined in this build: {self.reason})"


Item = Found | Missing | Derived | Undefined


def newest(profile: str | None = None) -> dict[str, dict[str, Any]]:
    """The newest record of every key at ``profile`` (default: the current profile).

    Records are read oldest first (``load_results``), so a later record of the same key
    replaces an earlier one; records of any other profile are skipped.
    """
    profile = profile or current_profile() or default_profile()
    out: dict[str, dict[str, Any]] = {}
    for row in load_results():
        if row.get("profile") == profile and "key" in row:
            out[row["key"]] = row
    return out


def fetch(
    key: str,
    notebook: str = "",
    *,
    profile: str | None = None,
    records: Mapping[str, Mapping[str, Any]] | None = None,
    fmt: str = ".3g",
) -> Found | Missing:
    """The newest record of ``key`` at the current profile, or what to run to get it.

    ``notebook`` names the notebook that records the key (``ch05_overheads``), for the
    :class:`Missing` message. ``records`` (from :func:`newest`) saves re-reading the
    results folder when many keys are fetched; it must hold one profile's records.
    """
    profile = profile or current_profile() or default_profile()
    rows = records if records is not None else newest(profile)
    row = rows.get(key)
    chapter = chapter_of(key)
    if row is None or row.get("profile") != profile:
        return Missing(key, chapter, notebook, profile)
    return Found(
        key=key,
        value=row.get("value"),
        unit=str(row.get("unit") or ""),
        chapter=chapter,
        machine=machine_text(row.get("machine")),
        time=str(row.get("time", "")),
        profile=profile,
        notebook=notebook,
        fmt=fmt,
    )


def fetch_all(
    wanted: Iterable[tuple[str, str]] | Mapping[str, str],
    *,
    profile: str | None = None,
    records: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Found | Missing]:
    """:func:`fetch` for each ``(key, notebook)`` pair (or ``{key: notebook}`` map)."""
    profile = profile or current_profile() or default_profile()
    rows = records if records is not None else newest(profile)
    pairs = wanted.items() if isinstance(wanted, Mapping) else wanted
    return {k: fetch(k, nb, profile=profile, records=rows) for k, nb in pairs}


def ratio(
    key: str,
    num: Item,
    den: Item,
    unit: str = "x",
    *,
    scale: float = 1.0,
    fmt: str = ".3g",
    positive: bool = True,
) -> Derived | Missing | Undefined:
    """``scale * num / den`` as a :class:`Derived`; else the first :class:`Missing`.

    With ``positive`` (the default: a ratio of costs, rates or sizes), an input that is
    not positive gives an :class:`Undefined` saying which. Raises ``ValueError`` for a
    non-numeric record or a result that is not finite: a wrong record must not pass as
    a pattern.
    """
    return derive(key, lambda a, b: scale * a / b, num, den, unit=unit, fmt=fmt,
                  positive=positive)


def derive(
    key: str,
    fn: Callable[..., float],
    *items: Item,
    unit: str = "",
    fmt: str = ".3g",
    positive: bool = False,
) -> Derived | Missing | Undefined:
    """``fn(*values)`` of found records (or derived values) as a :class:`Derived`;
    else the first :class:`Missing` (or :class:`Undefined`) among the inputs.

    ``positive``: every input must be a positive number, else :class:`Undefined`.
    ``ValueError`` for a non-numeric input or a result that is not finite.
    """
    for item in items:
        if isinstance(item, (Missing, Undefined)):
            return item
    found = tuple(s for s in sources(items) if isinstance(s, Found))
    try:
        values = [float(i.value) for i in items]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{key}: an input is not a number ({err})") from err
    if positive:
        for item, v in zip(items, values, strict=True):
            if not v > 0:
                where = item.where if isinstance(item, Found) else item.chapters
                return Undefined(key, f"{item.key} = {format_value(v)} is not positive "
                                      f"({where})", found)
    try:
        value = float(fn(*values))
    except (ValueError, ZeroDivisionError, OverflowError) as err:
        raise ValueError(f"{key}: not a number ({err})") from err
    if not math.isfinite(value):
        raise ValueError(f"{key}: {value} is not finite")
    return Derived(key, value, unit, found, fmt)


def verdict(
    item: Item,
    cut: float,
    below: str,
    above: str,
    missing: str = "(not known in this build: a record it needs is missing or invalid)",
) -> str:
    """``below`` if the item's value is under ``cut``, ``above`` if not, ``missing``
    for a :class:`Missing`: a phrase for the text that follows the measurement."""
    if not isinstance(item, (Found, Derived)):
        return missing
    return below if float(item.value) < cut else above


def glue_text(items: Mapping[str, Item], prefix: str = PREFIX) -> dict[str, str]:
    """Glue ``item.text()`` under ``prefix + name`` for each item; return the texts.

    Gluing text (read with ``:s`` in the prose) keeps the page honest when a record is
    missing: the sentence saying how to produce it appears in place of the number.
    """
    glued = {}
    for name, item in items.items():
        glued[prefix + name] = item.text()
        glue(prefix + name, glued[prefix + name])
    return glued


def sources(items: Iterable[Item]) -> list[Found | Missing]:
    """The records behind ``items``: found or missing ones as they are, derived ones'
    sources; each key once, in order."""
    out: dict[str, Found | Missing] = {}
    for item in items:
        for base in item.sources if isinstance(item, (Derived, Undefined)) else (item,):
            out.setdefault(base.key, base)
    return list(out.values())


def table(items: Iterable[Item]) -> Any:
    """A DataFrame of the records behind ``items``: key, chapter, value, unit, machine,
    time.

    A missing record is a row with ``value`` "missing" and the notebook that makes it.
    """
    import pandas as pd

    rows = []
    for s in sources(items):
        if isinstance(s, Found):
            rows.append({"key": s.key, "chapter": s.chapter,
                         "value": format_value(s.value, s.fmt), "unit": s.unit,
                         "machine": s.machine, "time": time_text(s.time)})
        else:
            rows.append({"key": s.key, "chapter": s.chapter, "value": "missing",
                         "unit": "", "machine": "",
                         "time": f"run notebooks/{s.notebook}.md"})
    return pd.DataFrame(rows, columns=["key", "chapter", "value", "unit", "machine",
                                       "time"])


def check_found(items: Iterable[Item], profile: str | None = None) -> int:
    """Assert what a pattern uses is sound; return how many records were found.

    Every found record has the current profile and a machine string; every derived value
    is finite. Raises ``AssertionError`` otherwise.
    """
    profile = profile or current_profile() or default_profile()
    count = 0
    for item in items:
        if isinstance(item, Derived):
            assert math.isfinite(item.value), item
        for s in sources([item]):
            if isinstance(s, Found):
                assert s.profile == profile, (s.key, s.profile, profile)
                assert s.machine, f"{s.key}: the record names no machine"
                count += 1
    return count


@dataclass(frozen=True)
class EfficiencyPoint:
    """One parallel-efficiency point of some chapter, with what it was measured on."""

    series: str
    processes: int | None
    efficiency: float | None
    source: Found | Missing
    count_note: str = ""


# (series label, notebook, efficiency key, scale to a fraction, process-count key or a
# fixed count, note on the count). Chapters 12 and 15 do not record their process count:
# their notebooks run nproc = 2 ranks at smoke, cpu and gpu (their SIZES tables).
EFFICIENCY_SERIES: tuple[tuple[str, str, str, float, str | int, str], ...] = (
    ("ch. 1 threads, strong", "ch01_scaling", "ch01_efficiency_max_pct", 0.01,
     "ch01_max_workers", ""),
    ("ch. 1 threads, weak", "ch01_scaling", "ch01_weak_efficiency_max_pct", 0.01,
     "ch01_max_workers", ""),
    ("ch. 4 MPI pi, strong", "ch04_pi", "ch04_pi_eff_top_pct", 0.01,
     "ch04_pi_top_ranks", ""),
    ("ch. 4 MPI pi, weak", "ch04_pi", "ch04_pi_weak_eff_top_pct", 0.01,
     "ch04_pi_top_ranks", ""),
    ("ch. 6 Jacobi, small grid", "ch06_jacobi", "ch06_jac_eff_small", 1.0,
     "ch06_jac_world", ""),
    ("ch. 6 Jacobi, large grid", "ch06_jacobi", "ch06_jac_eff_large", 1.0,
     "ch06_jac_world", ""),
    ("ch. 12 DDP, strong", "ch12_scaling", "ch12_sc_eff_strong", 1.0, 2,
     "nproc of ch12_scaling's SIZES"),
    ("ch. 12 DDP, weak", "ch12_scaling", "ch12_sc_eff_weak", 1.0, 2,
     "nproc of ch12_scaling's SIZES"),
    ("ch. 15 LLM DDP", "ch15_scaling", "ch15_sc_eff_ddp", 1.0, 2,
     "nproc of ch15_scaling's SIZES"),
    ("ch. 15 LLM FSDP", "ch15_scaling", "ch15_sc_eff_fsdp", 1.0, 2,
     "nproc of ch15_scaling's SIZES"),
)
# the profiles at which those fixed counts hold (cluster runs other counts)
FIXED_COUNT_PROFILES = ("smoke", "cpu", "gpu")


def efficiency_points(
    series: Sequence[tuple[str, str, str, float, str | int, str]] = EFFICIENCY_SERIES,
    *,
    profile: str | None = None,
    records: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[EfficiencyPoint]:
    """One point per series: the efficiency (a fraction) at the largest process count.

    A series whose record is missing, or whose fixed count does not hold at this
    profile,
    gives a point with ``efficiency`` (or ``processes``) ``None`` and the reason.
    """
    profile = profile or current_profile() or default_profile()
    rows = records if records is not None else newest(profile)
    points = []
    for label, nb, key, scale, count, note in series:
        got = fetch(key, nb, profile=profile, records=rows)
        eff = float(got.value) * scale if isinstance(got, Found) else None
        if isinstance(count, str):
            c = fetch(count, nb, profile=profile, records=rows)
            procs = int(c.value) if isinstance(c, Found) else None
            note = note or (f"count from {count}" if procs else f"{count} missing")
        else:
            procs = count if profile in FIXED_COUNT_PROFILES else None
        if eff is not None and not math.isfinite(eff):
            raise ValueError(f"{key}: efficiency {eff} is not finite")
        points.append(EfficiencyPoint(label, procs, eff, got, note))
    return points
