"""Distributed Jacobi with MPI: blocking Sendrecv, and Isend/Irecv overlapped with the interior.

The same grid, stripes and ghost rows as ``scripts/bench/jacobi.py`` (shared through
``hpcai.stencil``), computed with a compiled numba sweep and exchanged with mpi4py. Every
rank of the launch owns one stripe. Four ways to run ``iters`` sweeps are timed:

* ``blocking``: two ``Sendrecv`` calls (first row up, last row down), then the whole sweep;
* ``overlap``: post ``Irecv`` for both ghost rows and ``Isend`` of both edge rows, sweep the
  rows that need no ghost, ``Waitall``, then sweep the two edge rows;
* ``compute``: the sweep alone, no exchange (wrong answer, right amount of work);
* ``exchange``: the two ``Sendrecv`` calls alone, no sweep.

With ``--baseline true`` (the default) every round also times the *standalone* run: rank 0
alone sweeps the whole grid with the same numba code on 1 thread and on ``--threads``
threads (``sweep_parallel``), while the other ranks wait in a sleeping barrier. The speedup
of the decomposition is quoted against the fastest of these, the best one-process run.

Before any clock runs, the blocking and the overlapped solves (gathered on rank 0) and the
standalone solves are compared with ``hpcai.stencil.reference``, a NumPy solve; they must
agree exactly. Every round runs every variant (in an order that rotates), the first round
is a warm-up, each sample is the slowest rank's time, and rows report medians with the
inter-quartile range; the differences behind the hidden fraction are taken round by round::

    mpiexec -n 2 python scripts/bench/jacobi_mpi.py --profile cpu --json

In the 2-rank runs each rank sweeps with one thread (``sweep_rows``); ``--threads 0``
gives the standalone run all of numba's thread pool (``$NUMBA_NUM_THREADS``). Only rank 0
prints.
"""

from __future__ import annotations

import time
from typing import Any

import numba
import numpy as np

from hpcai import stencil as st
from hpcai.cli import bench_main
from hpcai.dist import node_name
from hpcai.measure import Timing

SIZES: dict[str, dict[str, Any]] = {
    # sizes: grid edge n (boundary included); iters: sweeps per solve; threads: most
    # threads of the standalone run (0: numba's whole pool)
    "smoke": {"sizes": [32, 128], "iters": 10, "repeats": 2, "threads": 0,
              "dtype": "float32", "baseline": True},
    "cpu": {"sizes": [64, 256, 1024, 2048, 4096], "iters": 30, "repeats": 7, "threads": 0,
            "dtype": "float32", "baseline": True},
    "gpu": {"sizes": [1024, 4096, 8192], "iters": 100, "repeats": 5, "threads": 0,
            "dtype": "float32", "baseline": True},
    "cluster": {"sizes": [4096, 8192, 16384], "iters": 100, "repeats": 5, "threads": 0,
                "dtype": "float32", "baseline": True},
}
DTYPES = {"float32": np.float32, "float64": np.float64}
# numba's OpenMP workers keep spinning for a few ms after a parallel region: on a machine
# with as many cores as ranks they would slow the next MPI solve, so all ranks wait this long
SETTLE_S = 0.02
VARIANTS = ("blocking", "overlap", "compute", "exchange")


# --------------------------------------------------------------------------- the exchanges
def exchange_sendrecv(comm: Any, u: np.ndarray, up: int, down: int) -> None:
    """Two blocking ``Sendrecv``: first row up (ghost below from down), then the reverse.

    ``up`` and ``down`` are ``MPI.PROC_NULL`` at the edges of the grid: those transfers
    do nothing and the ghost row keeps the fixed boundary.
    """
    comm.Sendrecv(u[1], dest=up, sendtag=0, recvbuf=u[-1], source=down, recvtag=0)
    comm.Sendrecv(u[-2], dest=down, sendtag=1, recvbuf=u[0], source=up, recvtag=1)


def sweep_overlapped(comm: Any, MPI: Any, u: np.ndarray, out: np.ndarray,
                     up: int, down: int) -> None:
    """One sweep with the exchange in flight while the rows that need no ghost are updated.

    Of the owned rows ``1 .. m``, only rows 1 and ``m`` read a ghost row; rows
    ``2 .. m-1`` are swept while the messages travel, rows 1 and ``m`` after ``Waitall``.
    MPI allows reading a send buffer that is in flight (row 1 is both sent and read).
    """
    m = u.shape[0] - 2
    reqs = [comm.Irecv(u[0], source=up, tag=1), comm.Irecv(u[-1], source=down, tag=0),
            comm.Isend(u[1], dest=up, tag=0), comm.Isend(u[-2], dest=down, tag=1)]
    st.sweep_rows(u, out, 2, m)  # the inner rows: no ghost needed
    MPI.Request.Waitall(reqs)
    st.sweep_rows(u, out, 1, 2)  # first owned row, reads the ghost above
    if m > 1:
        st.sweep_rows(u, out, m, m + 1)  # last owned row, reads the ghost below


def solve(comm: Any, MPI: Any, n: int, iters: int, variant: str,
          dtype: Any) -> tuple[np.ndarray, float]:
    """``iters`` sweeps of this rank's stripe one way; return (stripe, seconds)."""
    p, rank = comm.Get_size(), comm.Get_rank()
    u = st.local_stripe(n, p, rank, dtype)
    out = u.copy()  # ghost rows that hold the boundary are fixed in both buffers
    up = rank - 1 if rank > 0 else MPI.PROC_NULL
    down = rank + 1 if rank < p - 1 else MPI.PROC_NULL
    m = u.shape[0] - 2
    comm.Barrier()
    t0 = MPI.Wtime()
    for _ in range(iters):
        if variant == "overlap":
            sweep_overlapped(comm, MPI, u, out, up, down)
        else:
            if variant != "compute":
                exchange_sendrecv(comm, u, up, down)
            if variant != "exchange":
                st.sweep_rows(u, out, 1, m + 1)
        u, out = out, u
    return u, MPI.Wtime() - t0


def solve_standalone(n: int, iters: int, threads: int, dtype: Any) -> tuple[np.ndarray, float]:
    """The whole grid in one process: ``sweep_rows`` on 1 thread, else ``sweep_parallel``."""
    u = st.initial_grid(n, dtype).copy()  # copies: every page written before the clock
    out = u.copy()
    if threads > 1:
        numba.set_num_threads(threads)
    t0 = time.perf_counter()
    for _ in range(iters):
        if threads > 1:
            st.sweep_parallel(u, out)
        else:
            st.sweep_rows(u, out, 1, n - 1)
        u, out = out, u
    return u, time.perf_counter() - t0


def gather_to_root(comm: Any, u: np.ndarray, n: int) -> np.ndarray | None:
    """Assemble the full grid on rank 0 from every rank's owned rows (None elsewhere)."""
    p, rank = comm.Get_size(), comm.Get_rank()
    if rank != 0:
        comm.Send(np.ascontiguousarray(u[1:-1]), dest=0, tag=7)
        return None
    full = st.initial_grid(n, u.dtype)
    for r in range(p):
        start, stop = st.stripe_bounds(n, p, r)
        if r == 0:
            full[start:stop] = u[1:-1]
        else:
            comm.Recv(full[start:stop], source=r, tag=7)
    return full


def on_root_alone(comm: Any, work: Any, *args: Any) -> Any:
    """Rank 0 calls ``work(*args)``; the other ranks wait in a barrier that sleeps, not spins."""
    comm.Barrier()
    result = work(*args) if comm.Get_rank() == 0 else None
    req = comm.Ibarrier()
    while not req.Test():  # a busy-polling wait would take a core from rank 0's threads
        time.sleep(0.0005)
    return result


# --------------------------------------------------------------------------- the benchmark
def check_settings(S: Any, world: int | None = None) -> None:
    """Grids too small for the ranks (``world``: the launch's size), refused before any work."""
    if world is None:
        from mpi4py import MPI

        world = MPI.COMM_WORLD.Get_size()
    too_small = [n for n in S.sizes if n - 2 < 2 * world]
    if not S.sizes or too_small:
        raise ValueError(f"every grid needs at least {2 * world + 2} rows for {world} ranks "
                         f"(two interior rows per rank); got sizes {list(S.sizes)}")
    if S.threads > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"--threads {S.threads} exceeds numba's pool of "
                         f"{numba.config.NUMBA_NUM_THREADS} (set NUMBA_NUM_THREADS)")


def _stats(times: list[float]) -> dict[str, float]:
    t = Timing(times)
    return {"median_s": t.median, "iqr_s": t.iqr, "min_s": t.min}


def _threading_layer() -> str | None:
    """numba's threading layer, or None when no parallel kernel has run (e.g. --baseline false)."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def run(S: Any) -> dict[str, Any] | None:
    from mpi4py import MPI  # imported here, so that importing this file needs no MPI

    comm = MPI.COMM_WORLD
    p, rank = comm.Get_size(), comm.Get_rank()
    nodes = comm.gather(node_name(), root=0)
    dtype = DTYPES[S.dtype]
    threads = int(S.threads) or numba.config.NUMBA_NUM_THREADS
    thread_counts = sorted({1, threads}) if S.baseline else []
    timed = ("blocking", "overlap", "compute", "exchange") if p > 1 else ("blocking",)

    rows: list[dict[str, Any]] = []
    for n in S.sizes:
        # 1. correctness first: every solve that should be right, against the NumPy solve
        ref = st.reference(n, S.iters, dtype) if rank == 0 else None
        errors: dict[str, float] = {}
        for variant in ("blocking", "overlap") if p > 1 else ("blocking",):
            u, _ = solve(comm, MPI, n, S.iters, variant, dtype)
            full = gather_to_root(comm, u, n)
            if rank == 0:
                errors[variant] = float(np.abs(full - ref).max())
        for t in thread_counts:
            out = on_root_alone(comm, solve_standalone, n, S.iters, t, dtype)
            if rank == 0:
                errors[f"standalone_{t}"] = float(np.abs(out[0] - ref).max())
        errors = comm.bcast(errors, root=0)
        if max(errors.values()) > 0.0:
            raise SystemExit(f"n={n}: a solve differs from the NumPy reference: {errors}")

        # 2. then time: every round runs every variant, in an order that rotates from
        # round to round; round 0 is the warm-up
        samples: dict[str, list[float]] = {k: [] for k in (*timed, *map(str, thread_counts))}
        for rnd in range(S.repeats + 1):
            for t in thread_counts:
                out = on_root_alone(comm, solve_standalone, n, S.iters, t, dtype)
                if rank == 0 and rnd > 0:
                    samples[str(t)].append(out[1])
            if thread_counts:
                time.sleep(SETTLE_S)
            k = rnd % len(timed)
            for variant in timed[k:] + timed[:k]:
                _, sec = solve(comm, MPI, n, S.iters, variant, dtype)
                slowest = comm.reduce(sec, op=MPI.MAX, root=0)
                if rank == 0 and rnd > 0:
                    samples[variant].append(slowest)
        if rank == 0:
            rows.append(_row(n, p, S, dtype, samples, thread_counts, timed, errors))

    if rank != 0:
        return None
    _print_table(rows, p, S)
    big = rows[-1]
    return {
        "ranks": p, "dtype": S.dtype, "iters": S.iters, "threads_per_rank": 1,
        "standalone_threads": thread_counts,
        "numba_threading_layer": _threading_layer(),
        "mpi": MPI.Get_library_version().splitlines()[0].strip(),
        "placement": [{"rank": r, "node": name} for r, name in enumerate(nodes)],
        "n": big["n"], "median_s": big["overlap_s" if p > 1 else "blocking_s"],
        "speedup": big.get("speedup_overlap"), "hidden_fraction": big.get("hidden_fraction"),
        "max_err_vs_reference": max(max(r["errors"].values()) for r in rows),
        "rows": rows,
    }


def _row(n: int, p: int, S: Any, dtype: Any, samples: dict[str, list[float]],
         thread_counts: list[int], timed: tuple[str, ...],
         errors: dict[str, float]) -> dict[str, Any]:
    """One grid's medians, spreads, speedups and the hidden fraction of the exchange."""
    row: dict[str, Any] = {"n": n, "ranks": p, "iters": S.iters, "errors": errors,
                           "halo_bytes_per_iter": max(st.halo_bytes(n, p, r,
                                                                    np.dtype(dtype).itemsize)
                                                      for r in range(p))}
    for v in timed:
        s = _stats(samples[v])
        row[f"{v}_s"], row[f"{v}_iqr_s"], row[f"{v}_times_s"] = (s["median_s"], s["iqr_s"],
                                                                  samples[v])
    row["standalone"] = {str(t): _stats(samples[str(t)]) for t in thread_counts}
    if thread_counts:
        best = min(thread_counts, key=lambda t: row["standalone"][str(t)]["median_s"])
        row["best_threads"] = best
        row["best_standalone_s"] = row["standalone"][str(best)]["median_s"]
        row["standalone_1thread_s"] = row["standalone"]["1"]["median_s"]
        for v in ("blocking", "overlap"):
            if v in timed:
                row[f"speedup_{v}"] = row["best_standalone_s"] / row[f"{v}_s"]
        if "overlap" in timed:
            row["speedup_vs_1thread"] = row["standalone_1thread_s"] / row["overlap_s"]
    row["mlups"] = (n - 2) ** 2 * S.iters / row[f"{timed[1] if p > 1 else timed[0]}_s"] / 1e6
    if p > 1:
        # What the exchange cost inside the blocking solve, E = T_b - T_c (the transfers
        # plus every wait for a late neighbour), and the share of it that overlapping removed:
        #     h = (T_blocking - T_overlap) / (T_blocking - T_compute)
        # 0: overlapping saved nothing; 1: the solve ran as fast as the sweeps alone.
        # Differences are paired (taken within each round), then the median over rounds.
        # Also against the exchange timed alone: (T_b - T_o) / min(T_exchange, T_compute).
        b, o, c = (samples[v] for v in ("blocking", "overlap", "compute"))
        saved = _stats([x - y for x, y in zip(b, o)])
        exposed = _stats([x - y for x, y in zip(b, c)])
        row["saved_s"], row["saved_iqr_s"] = saved["median_s"], saved["iqr_s"]
        row["exposed_exchange_s"], row["exposed_iqr_s"] = exposed["median_s"], exposed["iqr_s"]
        e = row["exposed_exchange_s"]
        row["hidden_fraction"] = row["saved_s"] / e if e > 0 else None
        row["hidden_of_isolated"] = row["saved_s"] / min(row["exchange_s"], row["compute_s"])
        row["exchange_over_compute"] = row["exchange_s"] / row["compute_s"]
    return row


def _print_table(rows: list[dict[str, Any]], p: int, S: Any) -> None:
    print(f"# Jacobi with MPI, {p} ranks, {S.dtype}, {S.iters} sweeps; medians in s")
    print(f"#{'n':>6} {'alone':>9} {'thr':>3} {'blocking':>9} {'overlap':>9} {'compute':>9} "
          f"{'exchange':>9} {'speedup':>8} {'hidden':>7}")
    for r in rows:
        print(f" {r['n']:>6} {r.get('best_standalone_s', float('nan')):>9.4f} "
              f"{r.get('best_threads', 0):>3} {r['blocking_s']:>9.4f} "
              f"{r.get('overlap_s', float('nan')):>9.4f} {r.get('compute_s', float('nan')):>9.4f} "
              f"{r.get('exchange_s', float('nan')):>9.5f} "
              f"{r.get('speedup_overlap', float('nan')):>8.2f} "
              f"{r.get('hidden_fraction') or float('nan'):>7.2f}", flush=True)


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check_settings,
               choices={"dtype": tuple(DTYPES)})
