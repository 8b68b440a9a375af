"""Cache sizes as the operating system reports them, and how much of them to believe.

Linux describes each core's caches under ``/sys/devices/system/cpu/cpuN/cache/``. On a
physical machine those numbers come from the processor itself; in a virtual machine they come
from whatever the hypervisor chose to pass on, which may be the host's whole last-level cache,
a sum over sockets, or a number no processor has. Code that sizes its data by the cache (STREAM
arrays must be several times larger than the last-level cache) therefore needs a rule that does
not trust the report blindly. The rule used in this book, :func:`believed_cache_bytes`:

1. a reported size is believed only up to ``PER_CORE_BOUND_BYTES`` for every CPU that the OS
   says shares the cache, and only up to ``1 / RAM_DIVISOR`` of the machine's memory;
2. arrays that must exceed the cache (:func:`array_bytes_beyond_cache`) are sized from the
   believed size, and never smaller than ``ARRAY_FLOOR_BYTES``, whatever the report says.

Both bounds are deliberately generous, so a physical machine's report passes unchanged; they
catch reports that no hardware of that core count could back. The floor protects the other
direction: a report that is too small, or missing, cannot shrink the arrays into a cache.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MiB = 2**20
PER_CORE_BOUND_BYTES = 32 * MiB   # believed at most this much cache per sharing CPU ...
RAM_DIVISOR = 32                  # ... and at most 1/32 of the memory
ARRAY_FLOOR_BYTES = 256 * MiB     # an array meant to miss every cache is at least this large
DEFAULT_LLC_BYTES = 32 * MiB      # assumed when the OS reports nothing

SYSFS = Path("/sys/devices/system/cpu")


def parse_size(text: str) -> int:
    """Bytes of a size as sysfs and lscpu print it: '48K', '491520K', '2 MiB', '1048576'."""
    t = text.strip().upper().replace("IB", "").replace(" ", "")
    mult = {"K": 2**10, "M": 2**20, "G": 2**30}
    if t and t[-1] in mult:
        return int(float(t[:-1]) * mult[t[-1]])
    return int(t)


def count_cpus(cpu_list: str) -> int:
    """Number of CPUs in a Linux CPU list such as '0-1,4,6-7' (5); 0 for an empty list."""
    total = 0
    for part in cpu_list.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        total += int(hi or lo) - int(lo) + 1
    return total


def sysfs_caches(cpu: int = 0, root: Path = SYSFS) -> list[dict[str, Any]]:
    """Data and unified caches of one CPU as sysfs reports them (empty where there is none).

    Each entry: level, type, size_bytes, shared_cpus (the list) and sharing (its count)."""
    out = []
    for d in sorted((root / f"cpu{cpu}" / "cache").glob("index*")):
        try:
            ctype = (d / "type").read_text().strip()
            if ctype == "Instruction":
                continue
            shared = (d / "shared_cpu_list").read_text().strip()
            out.append({"level": int((d / "level").read_text()), "type": ctype,
                        "size_bytes": parse_size((d / "size").read_text()),
                        "shared_cpus": shared, "sharing": count_cpus(shared)})
        except (OSError, ValueError):
            continue
    return out


def total_memory_bytes() -> int:
    """Physical memory of the machine (bytes); 8 GiB where it cannot be read."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 8 * 2**30


def believed_cache_bytes(reported: int, sharing: int, ram_bytes: int) -> int:
    """The rule: min(reported, PER_CORE_BOUND_BYTES x sharing CPUs, RAM / RAM_DIVISOR)."""
    if reported < 0 or ram_bytes <= 0:
        raise ValueError(f"need reported >= 0 and ram_bytes > 0, got {reported}, {ram_bytes}")
    bound = PER_CORE_BOUND_BYTES * max(1, sharing)
    return int(min(reported, bound, ram_bytes // RAM_DIVISOR))


def last_level_cache(cpu: int = 0, root: Path = SYSFS,
                     ram_bytes: int | None = None) -> dict[str, Any] | None:
    """The largest data/unified cache of one CPU: what the OS reports and what we believe.

    Returns None when the OS reports no cache (then callers assume DEFAULT_LLC_BYTES)."""
    caches = sysfs_caches(cpu, root)
    if not caches:
        return None
    llc = max(caches, key=lambda c: (c["size_bytes"], c["level"]))
    sharing = llc["sharing"] or (os.cpu_count() or 1)
    believed = believed_cache_bytes(llc["size_bytes"], sharing,
                                    ram_bytes or total_memory_bytes())
    return {"level": llc["level"], "reported_bytes": llc["size_bytes"], "sharing": sharing,
            "believed_bytes": believed, "capped": believed < llc["size_bytes"]}


def array_bytes_beyond_cache(believed_llc: int | None, factor: float,
                             limit_bytes: int) -> int:
    """Bytes of one array meant to miss the caches: factor x the believed last-level cache,
    at least ARRAY_FLOOR_BYTES, at most limit_bytes (what memory allows)."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1 (arrays larger than the cache), got {factor}")
    llc = DEFAULT_LLC_BYTES if believed_llc is None else believed_llc
    return int(min(max(factor * llc, ARRAY_FLOOR_BYTES), limit_bytes))


RULE_TEXT = (f"believed LLC = min(reported, {PER_CORE_BOUND_BYTES // MiB} MiB x CPUs sharing "
             f"it, RAM/{RAM_DIVISOR}); array = max(factor x believed LLC, "
             f"{ARRAY_FLOOR_BYTES // MiB} MiB)")
