"""Strong and weak scaling of a two-phase kernel at 1..N threads, with an Amdahl fit.

The kernel has the shape of many real programs: a parallel *map* followed by a serial *scan*.

map   y[i] = integral of exp(-t^2) from 0 to x[i], midpoint rule with `work` points
      (every element independent: numba prange over the threads)
scan  z[i] = y[0] + ... + y[i]
      (each step needs the previous one: one thread, whatever the thread count)

Strong scaling keeps the problem fixed and adds threads; weak scaling gives every thread the same
amount of map work (work = work0 * p), so the problem grows with the machine while the scan
stays the same size. Amdahl's serial fraction f is fitted to the strong-scaling speedups
(least squares over every repeat) and compared with the scan's share of the one-thread time.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from hpcai.cli import bench_main
from hpcai.measure import Timing, time_it

SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"n": 200_000, "work": 2, "max_workers": 0, "repeats": 3},
    "cpu": {"n": 4_000_000, "work": 2, "max_workers": 0, "repeats": 7},
    # gpu: a GPU host has many cores, and the weak-scaling series grows with their square
    # (work 2p on one thread for each p = 1..cores): a small n keeps it within the budget
    # of `make gpu-check`
    "gpu": {"n": 1_000_000, "work": 2, "max_workers": 0, "repeats": 5},
}


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
    """z[i] = y[0] + ... + y[i]: a loop-carried dependency, so one thread does it all."""
    acc = 0.0
    for i in range(y.size):
        acc += y[i]
        z[i] = acc


def two_phase(x: np.ndarray, work: int, y: np.ndarray, z: np.ndarray) -> None:
    gauss_map(x, work, y)
    running_sum(y, z)


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
    if not np.allclose(z, np.cumsum(y), rtol=1e-9, atol=0.0):
        raise AssertionError("scan phase: running sum differs from np.cumsum")
    return float(err.max())


# ---------------------------------------------------------------- the two laws
def amdahl(p: np.ndarray | float, f: float) -> np.ndarray | float:
    """Speedup on p workers when a fraction f of the one-worker time is serial."""
    return 1.0 / (f + (1.0 - f) / np.asarray(p, dtype=float))


def gustafson(p: np.ndarray | float, s: float) -> np.ndarray | float:
    """Scaled speedup on p workers when a fraction s of the *parallel run's* time is serial."""
    return s + np.asarray(p, dtype=float) * (1.0 - s)


def fit_amdahl(p: np.ndarray, speedup: np.ndarray) -> dict[str, float]:
    """Least-squares fit of f in amdahl(p, f) to measured (p, speedup) points, 0 <= f <= 1."""
    from scipy.optimize import curve_fit

    p, speedup = np.asarray(p, dtype=float), np.asarray(speedup, dtype=float)
    if np.unique(p).size < 2:
        raise ValueError("an Amdahl fit needs speedups at two or more worker counts")
    (f,), cov = curve_fit(amdahl, p, speedup, p0=[0.1], bounds=(0.0, 1.0))
    resid = speedup - amdahl(p, f)
    return {"f": float(f), "f_stderr": float(np.sqrt(cov[0, 0])),
            "rms_residual": float(np.sqrt(np.mean(resid**2))),
            "points": int(p.size)}


# ---------------------------------------------------------------- measuring
def max_workers(requested: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pool = numba.config.NUMBA_NUM_THREADS
    n = requested or min(cores, pool)
    if not 1 <= n <= pool:
        raise ValueError(f"--max-workers must be 1..{pool} (numba's pool; 0 = all cores), "
                         f"got {n}")
    return n


def check(S: Any) -> None:
    """The command line's check, before any work (bench_main calls it)."""
    n, work, repeats = int(S.n), int(S.work), int(S.repeats)
    if n < 1000:
        raise ValueError(f"--n must be an integer >= 1000, got {n}")
    if work < 1 or repeats < 1:
        raise ValueError(f"--work and --repeats must be >= 1; got {work=}, {repeats=}")
    max_workers(int(S.max_workers))


def time_phases(x: np.ndarray, work: int, repeats: int) -> dict[str, float]:
    """One-thread time of each phase: the scan's share is the serial fraction by construction."""
    y, z = np.empty_like(x), np.empty_like(x)
    numba.set_num_threads(1)
    t_map = time_it(lambda: gauss_map(x, work, y), warmup=1, repeats=repeats)
    t_scan = time_it(lambda: running_sum(y, z), warmup=1, repeats=repeats)
    return {"map_s": t_map.median, "scan_s": t_scan.median,
            "f_phase": t_scan.median / (t_map.median + t_scan.median)}


def round_robin(calls: dict[int, Any], repeats: int) -> dict[int, list[float]]:
    """Time each call once per round, rounds repeated: background load hits every p alike.

    ``calls`` maps a thread count p to a function; numba.set_num_threads(p) precedes each call.
    """
    times: dict[int, list[float]] = {p: [] for p in calls}
    for p, fn in calls.items():  # warm-up: threads started, pages touched
        numba.set_num_threads(p)
        fn()
    for _ in range(repeats):
        for p, fn in calls.items():
            numba.set_num_threads(p)
            times[p].append(time_it(fn, warmup=0, repeats=1).median)
    return times


def strong_scaling(x: np.ndarray, work: int, workers: list[int], repeats: int
                   ) -> list[dict[str, Any]]:
    """Same problem on p = 1..N threads; speedup = T(1) / T(p), efficiency = speedup / p."""
    y, z = np.empty_like(x), np.empty_like(x)
    times = round_robin({p: lambda: two_phase(x, work, y, z) for p in workers}, repeats)
    rows = [{"p": p, **Timing(ts).as_dict()} for p, ts in times.items()]
    t1 = rows[0]["median_s"]
    for r in rows:
        r["speedup"] = t1 / r["median_s"]
        r["efficiency"] = r["speedup"] / r["p"]
        r["speedups"] = [t1 / t for t in r["times_s"]]
    return rows


def weak_scaling(x: np.ndarray, work0: int, workers: list[int], repeats: int
                 ) -> list[dict[str, Any]]:
    """work = work0 * p on p threads; scaled speedup = T(1 thread, same problem) / T(p)."""
    y, z = np.empty_like(x), np.empty_like(x)
    rows = []
    for p in workers:
        work = work0 * p
        calls = {p: lambda w=work: two_phase(x, w, y, z)}
        if p > 1:  # the same grown problem on one thread, for the scaled speedup
            calls[1] = lambda w=work: two_phase(x, w, y, z)
        times = round_robin(calls, repeats)
        tp, t1 = Timing(times[p]), Timing(times[1])
        rows.append({"p": p, "work": work, "median_s": tp.median, "iqr_s": tp.iqr,
                     "t1_median_s": t1.median, "scaled_speedup": t1.median / tp.median})
    base = rows[0]["median_s"]
    for r in rows:
        r["efficiency"] = base / r["median_s"]  # ideal weak scaling: time stays constant
    return rows


def run(S: Any) -> dict[str, Any]:
    n, work, repeats = int(S.n), int(S.work), int(S.repeats)
    check(S)
    top = max_workers(int(S.max_workers))
    workers = list(range(1, top + 1))
    x = make_input(n)
    y, z = np.empty_like(x), np.empty_like(x)
    two_phase(x, work, y, z)  # compile (or load from cache) before any clock runs
    quad_err = check_kernel(x, work, y, z)

    phases = time_phases(x, work, repeats)
    strong = strong_scaling(x, work, workers, repeats)
    weak = weak_scaling(x, work, workers, repeats)
    numba.set_num_threads(top)
    out: dict[str, Any] = {"n": n, "work": work, "workers": workers, "max_quad_error": quad_err,
                           "phases": phases, "strong": strong, "weak": weak}
    if len(workers) >= 2:
        p = np.concatenate([[r["p"]] * len(r["speedups"]) for r in strong])
        s = np.concatenate([r["speedups"] for r in strong])
        try:
            out["amdahl"] = fit_amdahl(p, s)
            out["f_fit"] = out["amdahl"]["f"]
        except ImportError:  # SciPy is optional: a GPU machine's own Python may lack it
            out["amdahl"] = out["f_fit"] = None
            out["fit_skipped"] = "scipy is not installed: no Amdahl fit"
    else:
        out["amdahl"] = None
        out["f_fit"] = None
        out["fit_skipped"] = "one worker only: no speedup to fit"
    out["f_phase"] = phases["f_phase"]
    out["speedup_max"] = strong[-1]["speedup"]
    out["efficiency_max"] = strong[-1]["efficiency"]
    return out


if __name__ == "__main__":
    # Run the kernels from the module as notebooks import it (hpcai.launch.load_script), so that
    # numba's on-disk cache (cache=True) holds one set of compiled kernels for both entry points.
    from hpcai.launch import load_script

    _mod = load_script("scaling")
    bench_main(_mod.run, _mod.SIZES, description=__doc__, name="scaling", check=_mod.check)
