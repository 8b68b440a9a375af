"""Fixed cost plus linear work: timing an operation over sizes and fitting t(n) = t0 + c*n.

Chapter 5 (``scripts/bench/overheads.py``) measures the fixed costs of the machine with these
helpers, chapter 9 (``scripts/bench/dispatch.py``) those of a framework. Both use the same
definitions:

* ``t0``: the fixed cost of one call (seconds), ``c``: the cost per element (seconds);
* ``n_star = t0 / c``: the size at which the work ``c*n`` equals the fixed cost, i.e. where
  the efficiency ``c*n / t(n)`` reaches one half;
* :func:`crossover`: the smallest size from which one measured series stays below another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .measure import Sync, Timing, _sync_fn, time_it


def sizes(lo: int, hi: int, per_decade: int) -> list[int]:
    """Geometric sizes 10**lo .. 10**hi, deduplicated integers."""
    if not (0 <= lo < hi <= 9) or per_decade < 1:
        raise ValueError(f"need 0 <= --lo < --hi <= 9 and --per-decade >= 1; got lo={lo}, "
                         f"hi={hi}, per_decade={per_decade}")
    pts = np.logspace(lo, hi, (hi - lo) * per_decade + 1)
    return sorted({int(round(p)) for p in pts})


def fit_fixed_plus_linear(n: Sequence[float], t: Sequence[float]) -> dict[str, float]:
    """Fit t = t0 + c*n minimising *relative* error (small sizes count as much as large).

    Returns t0 (s), c (s per element) and n_star = t0 / c, the size at which the work
    (c*n) equals the fixed cost, i.e. where efficiency c*n / t(n) reaches one half.
    """
    n_arr = np.asarray(n, dtype=float)
    t_arr = np.asarray(t, dtype=float)
    X = np.stack([1.0 / t_arr, n_arr / t_arr], axis=1)
    (t0, c), *_ = np.linalg.lstsq(X, np.ones_like(t_arr), rcond=None)
    t0, c = max(float(t0), 0.0), max(float(c), 1e-18)
    return {"t0_s": t0, "c_s_per_elem": c, "n_star": t0 / c}


def crossover(n: Sequence[float], slow: Sequence[float],
              fast: Sequence[float]) -> float | None:
    """Smallest size from which `fast` stays below `slow` (log-interpolated), from the data."""
    n_arr, a, b = (np.asarray(v, dtype=float) for v in (n, slow, fast))
    wins = b < a
    if not wins[-1]:
        return None
    k = len(wins) - 1
    while k > 0 and wins[k - 1]:
        k -= 1
    if k == 0:
        return float(n_arr[0])
    # the ratio b/a crosses 1 between n[k-1] and n[k]: interpolate log(ratio) in log(n)
    r0, r1 = np.log(b[k - 1] / a[k - 1]), np.log(b[k] / a[k])
    f = r0 / (r0 - r1)
    return float(np.exp(np.log(n_arr[k - 1]) + f * (np.log(n_arr[k]) - np.log(n_arr[k - 1]))))


def time_call(fn: Callable[[], Any], *, target_s: float, repeats: int,
              sync: Sync = None) -> Timing:
    """Timing of one call, repeating tiny calls inside a sample to beat the clock.

    One probe of a few calls estimates the cost of a call, so that each sample lasts about
    ``target_s`` whatever the size (at most 10,000 calls per sample).
    """
    barrier = _sync_fn(sync)
    fn()
    barrier()
    start = time.perf_counter()
    for _ in range(3):
        fn()
    barrier()
    probe = (time.perf_counter() - start) / 3
    number = int(min(10_000, max(1, target_s / max(probe, 1e-8))))
    return time_it(fn, warmup=1, repeats=repeats, number=number, sync=sync)


def series(make: Callable[[int], Callable[[], Any]], ns: Sequence[int], *, target_s: float,
           repeats: int, sync: Sync = None) -> dict[str, Any]:
    """Time ``make(n)()`` over sizes ``ns``; fit t0 + c n to the *best* sample of each size.

    A fixed cost is a property of the code path; other programs on a shared machine can only
    add time to it, so the minimum is the estimate that noise does not bias. The median and
    the inter-quartile range are kept alongside to show how noisy the machine was.
    """
    best, med, iqr = [], [], []
    for n in ns:
        t = time_call(make(n), target_s=target_s, repeats=repeats, sync=sync)
        best.append(t.min)
        med.append(t.median)
        iqr.append(t.iqr)
    return {"n": list(ns), "best_s": best, "median_s": med, "iqr_s": iqr,
            "fit": fit_fixed_plus_linear(ns, best)}


def efficiency(n: Sequence[float], t: Sequence[float], c: float) -> np.ndarray:
    """Fraction of each call spent on the work, c*n / t(n) (one half at n_star)."""
    return c * np.asarray(n, dtype=float) / np.asarray(t, dtype=float)
