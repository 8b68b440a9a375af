"""Trapezoid-rule pi with MPI: every rank integrates its own slice, then one reduce.

    pi = integral_0^1 4 / (1 + x^2) dx

The interval [0, 1] is cut into ``n`` trapezoids. Rank ``r`` of ``P`` takes a
contiguous block of about ``n / P`` of them, sums them with vectorised NumPy code
in cache-sized chunks, and ``MPI.Reduce`` adds the partial sums on rank 0.

Timing covers only the compute + reduce region, between two barriers, so that
process start-up and imports are not in the number. Each repeat is timed on every
rank; the reported time of a repeat is the slowest rank's (that is when the answer
is complete), split into that rank's compute and the rest (reduce, barrier, waiting
for the others), which add up to it exactly. ``median_s`` (with ``iqr_s``) is the
median over repeats after one warm-up, and ``compute_s`` + ``rest_s`` are the two
parts of the median repeat.

The serial baseline is a *standalone* run: the same script on one process
(``mpiexec -n 1``), alone on the machine. Pass its ``median_s`` as ``--serial-s`` to
a P-process run and the result carries

    strong:  E = T_serial / (P * T_P)        weak:  E = T_serial / T_P

(a one-process run is its own baseline). ``--baseline true`` additionally times the
serial problem *inside* the P-process run, rank 0 alone while the other ranks wait
in a sleeping barrier, in alternation with the parallel samples (``inrun_*``
fields): a check of how much the presence of the other ranks slows the serial
code, not the baseline of the efficiency.

Run:   mpiexec -n 1 python scripts/bench/pi_mpi.py --profile cpu --json   # T_serial
       mpiexec -n 2 python scripts/bench/pi_mpi.py --profile cpu --json --serial-s T
Weak scaling (n trapezoids *per rank*):  ... --weak true
Only rank 0 prints.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from hpcai.cli import bench_main
from hpcai.dist import node_name
from hpcai.measure import Timing

SIZES = {
    # n: trapezoids in total (strong scaling) or per rank (weak scaling, --weak true)
    # serial_s: the standalone one-process median time (0: not given, no efficiency)
    "smoke": {"n": 10_000_000, "repeats": 3, "weak": False, "baseline": False, "serial_s": 0.0},
    "cpu": {"n": 100_000_000, "repeats": 9, "weak": False, "baseline": False, "serial_s": 0.0},
    "gpu": {"n": 100_000_000, "repeats": 7, "weak": False, "baseline": False, "serial_s": 0.0},
    "cluster": {"n": 4_294_967_296, "repeats": 5, "weak": False, "baseline": False,
                "serial_s": 0.0},
}


CHUNK = 1 << 16  # points per vectorised step: 512 KiB of float64, stays in the L2 cache


def trapezoid_block(lo: int, hi: int, n: int, chunk: int = CHUNK) -> float:
    """Sum of the trapezoids with indices lo .. hi-1 of n on [0, 1] for f(x) = 4/(1+x^2).

    Trapezoid i spans [i h, (i+1) h] and has area h (f(x_i) + f(x_{i+1})) / 2.
    Summing a block gives h * (f(x_lo)/2 + f(x_lo+1) + ... + f(x_hi-1) + f(x_hi)/2).
    The interior points are evaluated ``chunk`` at a time with NumPy, in one reused
    buffer, so no large temporary arrays are allocated and the data stay in cache.
    """
    if hi <= lo:
        return 0.0
    h = 1.0 / n
    x_lo, x_hi = lo * h, hi * h
    s = 0.5 * (4.0 / (1.0 + x_lo * x_lo) + 4.0 / (1.0 + x_hi * x_hi))
    offsets = np.arange(chunk, dtype=np.float64)  # (chunk,) 0, 1, 2, ...
    buf = np.empty(chunk, dtype=np.float64)       # (chunk,) reused for every step
    start = lo + 1
    while start < hi:
        m = min(chunk, hi - start)
        x = buf[:m]
        np.add(offsets[:m], start, out=x)  # indices i
        x *= h                             # x_i = i h
        x *= x                             # x_i^2
        x += 1.0                           # 1 + x_i^2
        np.divide(4.0, x, out=x)           # f(x_i)
        s += float(x.sum())
        start += m
    return s * h


def block(rank: int, size: int, n: int) -> tuple[int, int]:
    """The trapezoid indices [lo, hi) owned by ``rank``; sizes differ by at most one."""
    base, rest = divmod(n, size)
    lo = rank * base + min(rank, rest)
    return lo, lo + base + (1 if rank < rest else 0)


def pi_serial(n: int) -> float:
    """The whole integral on one process: the reference for the parallel sum."""
    return trapezoid_block(0, n, n)


def _serial_sample(comm, MPI, n_base: int) -> float:
    """Rank 0 integrates ``n_base`` trapezoids alone; the others wait without spinning."""
    import time

    comm.Barrier()
    if comm.Get_rank() == 0:
        t0 = MPI.Wtime()
        trapezoid_block(0, n_base, n_base)
        elapsed = MPI.Wtime() - t0
        comm.Ibarrier().Wait()
        return elapsed
    req = comm.Ibarrier()
    while not req.Test():  # a sleeping wait: a busy-polling barrier would steal a core
        time.sleep(0.001)
    return float("nan")


def _efficiency(t_serial: float, t_par: float, size: int, weak: bool) -> dict:
    speedup = t_serial / t_par
    return {"speedup": None if weak else speedup,
            "efficiency": speedup if weak else speedup / size}


def _median_sample(times: list[float]) -> int:
    """Index of the median repeat (the upper middle one for an even count)."""
    return sorted(range(len(times)), key=times.__getitem__)[len(times) // 2]


def run(S) -> dict | None:
    from mpi4py import MPI  # imported here, so that importing this file needs no MPI

    n_arg, repeats, serial_given = int(S.n), int(S.repeats), float(S.serial_s)
    if n_arg < 1 or repeats < 1 or serial_given < 0:
        raise SystemExit(f"n, repeats must be positive and serial_s >= 0, got {S}")
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    # where every rank runs: rank 0 gathers the node names (SLURMD_NODENAME under SLURM)
    nodes = comm.gather(node_name(), root=0)
    n = n_arg * size if S.weak else n_arg
    lo, hi = block(rank, size, n)

    trapezoid_block(0, 10, 10)  # touch the code path once before any clock runs

    times, compute, serial = [], [], []
    pi = float("nan")
    n_base = n // size if S.weak else n  # the problem one process solves alone
    for rep in range(repeats + 1):  # repeat 0 is the warm-up
        if S.baseline:
            t_serial = _serial_sample(comm, MPI, n_base)
        comm.Barrier()
        t0 = MPI.Wtime()
        local = trapezoid_block(lo, hi, n)
        t1 = MPI.Wtime()
        total = comm.reduce(local, op=MPI.SUM, root=0)
        comm.Barrier()
        t2 = MPI.Wtime()
        # the slowest rank's (total, compute): its two parts add up to its total
        per_rank = comm.gather((t2 - t0, t1 - t0), root=0)
        if rank == 0 and rep > 0:
            slowest, busy = max(per_rank)
            times.append(slowest)
            compute.append(busy)
            if S.baseline:
                serial.append(t_serial)
            pi = total
    if rank != 0:
        return None
    error = abs(pi - math.pi)
    # the trapezoid rule on a smooth integrand: error ~ h^2/12 |f'(1) - f'(0)| = 1/(6 n^2),
    # plus rounding of n additions (~ n * eps in the worst case, far less in practice)
    bound = 1.0 / (6.0 * n * n) + n * np.finfo(float).eps
    assert error <= bound, f"pi = {pi!r} misses math.pi by {error:.3e} > bound {bound:.3e}"
    timing = Timing(times)
    k = _median_sample(times)
    out = {
        "pi": pi,
        "error": error,
        "median_s": times[k],
        "iqr_s": timing.iqr,
        "min_s": timing.min,
        "times_s": times,
        "compute_s": compute[k],            # the slowest rank's compute, median repeat
        "rest_s": times[k] - compute[k],    # its reduce + barrier + wait
        "compute_times_s": compute,
        "ranks": size,
        "n": n,
        "weak": bool(S.weak),
        "ns_per_trapezoid": times[k] * size / n * 1e9,
    }
    if serial_given > 0 or size == 1:  # a one-process run is its own standalone baseline
        out["serial_s"] = serial_given or times[k]
        out["baseline"] = "standalone"
        out.update(_efficiency(out["serial_s"], times[k], size, bool(S.weak)))
    if S.baseline:
        t_in = statistics.median(serial)
        out.update(inrun_serial_s=t_in, inrun_serial_times_s=serial,
                   inrun_efficiency=_efficiency(t_in, times[k], size, bool(S.weak))[
                       "efficiency"])
    return {
        **out,
        "mpi": MPI.Get_library_version().splitlines()[0].strip(),
        "placement": [{"rank": r, "node": name} for r, name in enumerate(nodes)],
    }


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__)
