"""Strong and weak scaling of a two-phase kernel, on the real cores and oversubscribed.

The kernel has the shape of many real programs: a parallel *map* followed by a serial *scan*.

map   y[i] = integral of exp(-t^2) from 0 to x[i], midpoint rule with `work` points
      (every element independent: numba prange over the threads)
scan  z[i] = y[0] + ... + y[i]
      (each step needs the previous one: one thread, whatever the thread count)

Every call is timed phase by phase (map, then scan), so each sample's total is exactly the
sum of its two phases and every loss of efficiency can be booked to the phase that caused it.

Thread counts: 1..N, where N is the number of cores (real hardware), then 2N, 4N, ... up to
`oversubscribe` threads per core. Oversubscribed threads share the same N cores in turn: those
points measure the cost of time-slicing more threads than cores, not more hardware, and no
Amdahl fit uses them. With N = 2 there is a single parallel point on real hardware, so the
script reports the serial fraction that point implies, f = (p/S - 1)/(p - 1) = 2/S - 1, and
fits Amdahl's law only where there are speedups at two or more real core counts above one.

Strong scaling keeps the problem fixed. Weak scaling keeps the work per thread fixed: p threads
integrate p times as many elements (same `work` each, so the map's cost per thread is the same),
while the scan keeps its size, the serial part Gustafson's law assumes constant. The weak
series runs at 1, 2, 4, ... threads with at most WEAK_MAX_ELEMENTS elements in the largest
problem, so it stays bounded on a many-core host.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
MAX_OVERSUBSCRIBE = 4  # threads per core, at most, for the oversubscribed points
if _CORES <= 8 and "numba" not in sys.modules:
    # numba's thread pool is sized once, when numba is imported; oversubscribed points need a
    # pool larger than the core count. A many-core host has real points enough and keeps its
    # default pool; an explicit NUMBA_NUM_THREADS (the SLURM job sets one) always wins. Where
    # numba is already imported (a test process), its pool stays as it is: changing the
    # variable then would make numba refuse to compile anything more.
    os.environ.setdefault("NUMBA_NUM_THREADS", str(MAX_OVERSUBSCRIBE * _CORES))

import numba  # after the pool size is chosen
import numpy as np
from numba import njit, prange

from hpcai.cli import bench_main
from hpcai.measure import Timing

SIZES: dict[str, dict[str, Any]] = {
    # oversubscribe: threads per core at the largest oversubscribed point (1: none)
    "smoke": {"n": 200_000, "work": 2, "max_workers": 0, "oversubscribe": 2, "repeats": 3},
    "cpu": {"n": 4_000_000, "work": 2, "max_workers": 0, "oversubscribe": 4, "repeats": 7},
    # gpu: a GPU host has many cores, real points enough; the weak series is bounded by
    # WEAK_MAX_ELEMENTS, so it stays within the budget of `make gpu-check`
    "gpu": {"n": 1_000_000, "work": 2, "max_workers": 0, "oversubscribe": 1, "repeats": 5},
}
WEAK_MAX_ELEMENTS = 32_000_000  # elements of the largest weak-scaling problem (256 MB each array)


# ---------------------------------------------------------------- the kernel
@njit(parallel=True, cache=True)
def gauss_map(x: np.ndarray, work: int, y: np.ndarray) -> None:
    """y[i] = midpoint-rule integral of exp(-t^2) over [0, x[i]] with `work` points."""
    for i in prange(x.size):
        h = x[i] / work
        acc = 0.0
        for j in range(work):
            t = (j + 0.5) * h
            acc += math.exp(-t * t)
        y[i] = acc * h


@njit(cache=True)
def running_sum(y: np.ndarray, z: np.ndarray) -> None:
    """z[i] = y[0] + ... + y[i] for i < z.size: a loop-carried dependency, so one thread."""
    acc = 0.0
    for i in range(z.size):
        acc += y[i]
        z[i] = acc


def two_phase(x: np.ndarray, work: int, y: np.ndarray, z: np.ndarray) -> None:
    gauss_map(x, work, y)
    running_sum(y, z)


def timed_two_phase(x: np.ndarray, work: int, y: np.ndarray, z: np.ndarray
                    ) -> tuple[float, float]:
    """Run both phases once; return (map seconds, scan seconds), read from one clock.

    The total of the call is their sum, exactly: phase times always add up to the total.
    """
    t0 = time.perf_counter()
    gauss_map(x, work, y)
    t1 = time.perf_counter()
    running_sum(y, z)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def make_input(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 2.0, n)


def check_kernel(x: np.ndarray, work: int, y: np.ndarray, z: np.ndarray) -> float:
    """Compare with erf and np.cumsum; return the largest quadrature error seen."""
    exact = np.sqrt(np.pi) / 2 * np.array([math.erf(v) for v in x[:2000]])
    err = np.abs(y[:2000] - exact)
    # Midpoint rule: |error| <= (b - a) h^2 / 24 * max|f''|, and |f''| <= 2 for exp(-t^2).
    bound = x[:2000] ** 3 / (12 * work**2) + 1e-12
    if np.any(err > bound):
        raise AssertionError("map phase: quadrature error above the midpoint-rule bound")
    if not np.allclose(z, np.cumsum(y[: z.size]), rtol=1e-9, atol=0.0):
        raise AssertionError("scan phase: running sum differs from np.cumsum")
    return float(err.max())


# ---------------------------------------------------------------- the two laws
def amdahl(p: np.ndarray | float, f: float) -> np.ndarray | float:
    """Speedup on p workers when a fraction f of the one-worker time is serial."""
    return 1.0 / (f + (1.0 - f) / np.asarray(p, dtype=float))


def gustafson(p: np.ndarray | float, s: float) -> np.ndarray | float:
    """Scaled speedup on p workers when a fraction s of the *parallel run's* time is serial."""
    return s + np.asarray(p, dtype=float) * (1.0 - s)


def implied_serial_fraction(p: float, speedup: float) -> float:
    """The f for which Amdahl's law passes through one point: f = (p/S - 1)/(p - 1).

    One equation, one unknown: at p = 2 it is f = 2/S - 1. It is not a fit (nothing tests
    the model), and it has no error bar of its own; the spread of S gives its spread.
    """
    if p <= 1:
        raise ValueError("a serial fraction needs a point with p > 1")
    return (p / speedup - 1.0) / (p - 1.0)


def fit_amdahl(p: np.ndarray, speedup: np.ndarray) -> dict[str, float]:
    """Least-squares fit of f in amdahl(p, f) to measured (p, speedup) points, 0 <= f <= 1.

    A fit must be able to fail: it needs speedups at two or more worker counts above one
    (with one such count, f is fixed by that point alone; see implied_serial_fraction).
    """
    from scipy.optimize import curve_fit

    p, speedup = np.asarray(p, dtype=float), np.asarray(speedup, dtype=float)
    if np.unique(p[p > 1]).size < 2:
        raise ValueError("an Amdahl fit needs speedups at two or more worker counts above one")
    (f,), cov = curve_fit(amdahl, p, speedup, p0=[0.1], bounds=(0.0, 1.0))
    resid = speedup - amdahl(p, f)
    return {"f": float(f), "f_stderr": float(np.sqrt(cov[0, 0])),
            "rms_residual": float(np.sqrt(np.mean(resid**2))),
            "points": int(p.size)}


# ---------------------------------------------------------------- measuring
def max_workers(requested: int) -> int:
    """The largest *real* thread count: all cores (0) or the number asked for."""
    pool = numba.config.NUMBA_NUM_THREADS
    n = requested or min(_CORES, pool)
    if not 1 <= n <= min(_CORES, pool):
        raise ValueError(f"--max-workers must be 1..{min(_CORES, pool)} (the cores; 0 = all), "
                         f"got {n}")
    return n


def thread_counts(top: int, oversubscribe: int) -> tuple[list[int], list[int]]:
    """Real counts 1..top, then oversubscribed 2 top, 4 top, ... <= oversubscribe * top.

    Oversubscribed counts are limited by numba's pool (chosen at import, see above).
    """
    pool = numba.config.NUMBA_NUM_THREADS
    real = list(range(1, top + 1))
    over, p = [], 2 * top
    while p <= oversubscribe * top and p <= pool:
        over.append(p)
        p *= 2
    return real, over


def check(S: Any) -> None:
    """The command line's check, before any work (bench_main calls it)."""
    n, work, repeats = int(S.n), int(S.work), int(S.repeats)
    if n < 1000:
        raise ValueError(f"--n must be an integer >= 1000, got {n}")
    if work < 1 or repeats < 1:
        raise ValueError(f"--work and --repeats must be >= 1; got {work=}, {repeats=}")
    if not 1 <= int(S.oversubscribe) <= MAX_OVERSUBSCRIBE:
        raise ValueError(f"--oversubscribe must be 1..{MAX_OVERSUBSCRIBE} threads per core, "
                         f"got {S.oversubscribe}")
    max_workers(int(S.max_workers))


def _rounds(calls: dict[Any, Any], repeats: int) -> dict[Any, list[tuple[float, float]]]:
    """Time each call once per round, rounds repeated: background load hits every call alike.

    ``calls`` maps a key to (thread count, function returning (map s, scan s)); one untimed
    call of each first (threads started, pages touched).
    """
    samples: dict[Any, list[tuple[float, float]]] = {k: [] for k in calls}
    for p, fn in calls.values():
        numba.set_num_threads(p)
        fn()
    for _ in range(repeats):
        for key, (p, fn) in calls.items():
            numba.set_num_threads(p)
            samples[key].append(fn())
    return samples


def summarise(samples: list[tuple[float, float]]) -> dict[str, Any]:
    """Median total with spread, and the phases *of the median sample*, which add up to it.

    (With an even number of samples the median sample is the upper middle one, and
    ``median_s`` is that sample's total, so phases and total always agree.)
    """
    totals = [m + s for m, s in samples]
    k = int(np.argsort(totals, kind="stable")[len(totals) // 2])
    t = Timing(totals)
    return {"median_s": totals[k], "iqr_s": t.iqr, "min_s": t.min, "times_s": totals,
            "map_s": samples[k][0], "scan_s": samples[k][1],
            "map_times_s": [m for m, _ in samples], "scan_times_s": [s for _, s in samples]}


def time_phases(x: np.ndarray, work: int, repeats: int) -> dict[str, float]:
    """One-thread time of each phase: the scan's share is the serial fraction by construction."""
    y, z = np.empty_like(x), np.empty_like(x)
    numba.set_num_threads(1)
    row = summarise(_rounds({1: (1, lambda: timed_two_phase(x, work, y, z))}, repeats)[1])
    return {"map_s": row["map_s"], "scan_s": row["scan_s"], "total_s": row["median_s"],
            "f_phase": row["scan_s"] / row["median_s"]}


def strong_scaling(x: np.ndarray, work: int, workers: list[int], repeats: int,
                   cores: int) -> list[dict[str, Any]]:
    """Same problem on every thread count; speedup = T(1) / T(p), efficiency = speedup / p.

    Rows with p > cores are oversubscribed (``"oversubscribed": True``).
    """
    y, z = np.empty_like(x), np.empty_like(x)
    calls = {p: (p, lambda: timed_two_phase(x, work, y, z)) for p in workers}
    rows = [{"p": p, "oversubscribed": p > cores, **summarise(s)}
            for p, s in _rounds(calls, repeats).items()]
    one = rows[0]
    for r in rows:
        r["speedup"] = one["median_s"] / r["median_s"]
        r["efficiency"] = r["speedup"] / r["p"]
        r["speedups"] = [one["median_s"] / t for t in r["times_s"]]
        r["map_speedup"] = one["map_s"] / r["map_s"]
        r["scan_ratio"] = r["scan_s"] / one["scan_s"]
    return rows


def weak_counts(real: list[int], over: list[int]) -> list[int]:
    """1, 2, 4, ... among the real and oversubscribed counts, and the largest real count."""
    top = real[-1]
    pw = [p for p in [*real, *over] if p & (p - 1) == 0]
    return sorted({*pw, top})


def weak_scaling(n0: int, work: int, workers: list[int], repeats: int, cores: int
                 ) -> list[dict[str, Any]]:
    """p threads map n0 * p elements (the work per thread stays n0 elements) and scan n0.

    Weak efficiency = T(1 thread, n0) / T(p threads, n0 p): 1 when the time stays constant.
    The one-thread problem of n0 elements is timed again in the same rounds as every p, so
    each efficiency compares two times taken under the same conditions. The scaled speedup
    is T(1 thread, n0 p) / T(p threads, n0 p), the grown problem on one thread, also timed
    in those rounds.
    """
    n0 = min(n0, WEAK_MAX_ELEMENTS // max(workers))
    xb = make_input(n0)
    yb, zb = np.empty_like(xb), np.empty(n0)
    base_call = (1, lambda: timed_two_phase(xb, work, yb, zb))
    rows = []
    for p in workers:
        x = make_input(n0 * p)
        y, z = np.empty_like(x), np.empty(n0)
        calls = {"p": (p, lambda x=x, y=y, z=z: timed_two_phase(x, work, y, z))}
        if p > 1:
            calls["one"] = (1, lambda x=x, y=y, z=z: timed_two_phase(x, work, y, z))
            calls["base"] = base_call
        s = _rounds(calls, repeats)
        tp = summarise(s["p"])
        t1 = summarise(s["one"]) if p > 1 else tp
        base = summarise(s["base"]) if p > 1 else tp
        check_kernel(x, work, y, z)  # every grown problem is computed right too
        rows.append({"p": p, "oversubscribed": p > cores, "n": n0 * p, "scan_n": n0,
                     **tp, "t1_median_s": t1["median_s"],
                     "base_median_s": base["median_s"], "base_times_s": base["times_s"],
                     "base_map_s": base["map_s"],
                     "base_scan_s": base["scan_s"],
                     "scaled_speedup": t1["median_s"] / tp["median_s"],
                     # ideal weak scaling: the time stays that of the one-thread problem
                     "efficiency": base["median_s"] / tp["median_s"],
                     "map_ratio": tp["map_s"] / base["map_s"],
                     "scan_ratio": tp["scan_s"] / base["scan_s"]})
    return rows


def run(S: Any) -> dict[str, Any]:
    check(S)
    n, work, repeats = int(S.n), int(S.work), int(S.repeats)
    top = max_workers(int(S.max_workers))
    real, over = thread_counts(top, int(S.oversubscribe))
    x = make_input(n)
    y, z = np.empty_like(x), np.empty_like(x)
    two_phase(x, work, y, z)  # compile (or load from cache) before any clock runs
    quad_err = check_kernel(x, work, y, z)

    phases = time_phases(x, work, repeats)
    strong = strong_scaling(x, work, [*real, *over], repeats, top)
    weak = weak_scaling(n, work, weak_counts(real, over), repeats, top)
    numba.set_num_threads(top)
    out: dict[str, Any] = {"n": n, "work": work, "cores": top, "workers": real,
                           "oversubscribed": over, "max_quad_error": quad_err,
                           "phases": phases, "strong": strong, "weak": weak,
                           "f_phase": phases["f_phase"]}
    real_rows = [r for r in strong if not r["oversubscribed"]]
    out["f_implied"] = {str(r["p"]): implied_serial_fraction(r["p"], r["speedup"])
                        for r in real_rows if r["p"] > 1}
    out["amdahl"] = None
    if len(real_rows) >= 3:  # two or more parallel points on real cores: a fit can fail
        p = np.concatenate([[r["p"]] * len(r["speedups"]) for r in real_rows])
        s = np.concatenate([r["speedups"] for r in real_rows])
        try:
            out["amdahl"] = fit_amdahl(p, s)
        except ImportError:  # SciPy is optional: a GPU machine's own Python may lack it
            out["fit_skipped"] = "scipy is not installed: no Amdahl fit"
    else:
        out["fit_skipped"] = (f"{len(real_rows) - 1} parallel point(s) on real cores: "
                              "no Amdahl fit (one point fixes f, it does not test the model)")
    out["speedup_max"] = real_rows[-1]["speedup"]  # on all real cores (gpu_check prints it)
    out["efficiency_max"] = real_rows[-1]["efficiency"]
    return out


if __name__ == "__main__":
    # Run the kernels from the module as notebooks import it (hpcai.launch.load_script). This
    # is load-bearing, not style: numba's on-disk cache (cache=True) is keyed by file and
    # code but its entries name the defining module, so kernels cached under
    # `hpcai_bench_scaling` fail to load in `__main__` (ModuleNotFoundError) and vice versa.
    from hpcai.launch import load_script

    _mod = load_script("scaling")
    bench_main(_mod.run, _mod.SIZES, description=__doc__, name="scaling", check=_mod.check)
