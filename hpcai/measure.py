"""Measuring correctly: a timer with warm-up, repeats and spread, and the machine description.

Every result the book reports is a *median over repeats after warm-up*, stored together with
the machine that produced it.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

Sync = Callable[[], None] | str | None

_VERSIONED = ("numpy", "numba", "torch", "mpi4py", "scipy", "matplotlib")


@dataclass(frozen=True)
class Timing:
    """Wall-clock times of repeated calls, in seconds per call."""

    times: list[float] = field(repr=False)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def max(self) -> float:
        return max(self.times)

    @property
    def iqr(self) -> float:
        """Inter-quartile range (0 for fewer than two repeats)."""
        if len(self.times) < 2:
            return 0.0
        q = statistics.quantiles(self.times, n=4, method="inclusive")
        return q[2] - q[0]

    @property
    def rel_spread(self) -> float:
        """IQR relative to the median: a quick noise figure."""
        return self.iqr / self.median if self.median > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median,
            "iqr_s": self.iqr,
            "min_s": self.min,
            "max_s": self.max,
            "repeats": len(self.times),
            "times_s": list(self.times),
        }

    def __repr__(self) -> str:
        return (
            f"Timing(median={self.median:.3e} s, iqr={self.iqr:.1e} s, "
            f"n={len(self.times)})"
        )


def _sync_fn(sync: Sync) -> Callable[[], None]:
    if sync is None:
        return lambda: None
    if sync == "cuda":
        import torch

        return torch.cuda.synchronize
    if callable(sync):
        return sync
    raise ValueError(f"sync must be None, 'cuda' or a callable, not {sync!r}")


def time_it(
    fn: Callable[[], Any],
    *,
    warmup: int = 2,
    repeats: int = 7,
    sync: Sync = None,
    number: int = 1,
) -> Timing:
    """Time ``fn()`` after ``warmup`` untimed calls; ``repeats`` samples of ``number`` calls each.

    ``sync`` is called before starting and before stopping the clock. GPU work is
    asynchronous: without ``sync="cuda"`` the clock stops when the launch returns, not when the
    kernel finishes.
    """
    if repeats < 1 or number < 1 or warmup < 0:
        raise ValueError("need repeats >= 1, number >= 1 and warmup >= 0")
    barrier = _sync_fn(sync)
    for _ in range(warmup):
        fn()
    barrier()
    samples = []
    for _ in range(repeats):
        barrier()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        barrier()
        samples.append((time.perf_counter() - start) / number)
    return Timing(samples)


class Timer:
    """A context manager for one interval: ``with Timer() as t: ...; t.seconds``."""

    def __init__(self, sync: Sync = None) -> None:
        self._sync = _sync_fn(sync)
        self.seconds = float("nan")

    def __enter__(self) -> Timer:
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._start


def timer_resolution(samples: int = 10_000) -> float:
    """Smallest non-zero step of ``time.perf_counter`` seen in back-to-back reads (seconds)."""
    steps = []
    for _ in range(samples):
        a = time.perf_counter()
        b = time.perf_counter()
        while b == a:
            b = time.perf_counter()
        steps.append(b - a)
    return min(steps)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover
        return None


def _gpus() -> list[str]:
    """GPU names, without paying for a PyTorch import where the process has none yet."""
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return []
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@functools.cache
def machine() -> dict[str, Any]:
    """Describe this machine: CPU, cores, memory, GPUs, OS and library versions (cached)."""
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": _physical_cores(),
        "memory_GiB": _memory_gib(),
        "gpus": _gpus(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "versions": _versions(),
    }


def describe_machine(m: dict[str, Any] | None = None) -> str:
    """One line for the text, e.g. ``2-core Intel Xeon ..., 23.4 GiB, no GPU, Python 3.11.7``."""
    m = m or machine()
    gpus = ", ".join(m.get("gpus") or []) or "no GPU"
    v = m.get("versions", {})
    libs = ", ".join(f"{k} {v[k]}" for k in ("numpy", "numba", "torch") if k in v)
    return (
        f"{m.get('logical_cores')}-core {m.get('cpu')}, {m.get('memory_GiB')} GiB RAM, "
        f"{gpus}; Python {v.get('python', '?')}" + (f", {libs}" if libs else "")
    )
