"""Ping-pong between two MPI ranks and a fit of the alpha-beta (Hockney) model.

Rank 0 sends a message of m bytes to rank 1, which sends it straight back;
half the round-trip time is the one-way time t(m).  Over a geometric range of
message sizes the script fits

    t(m) = alpha + m / beta

(alpha: start-up latency in seconds, beta: asymptotic bandwidth in bytes/s) by
least squares on relative errors, and returns both with the measured rows.

Run it with exactly two ranks:  mpiexec -n 2 python scripts/bench/pingpong.py --json
Only rank 0 prints.
"""

from __future__ import annotations

import time

import numpy as np

from hpcai.cli import bench_main
from hpcai.measure import Timing

KiB = 1024

SIZES = {
    # message sizes 2^k bytes for k = 0 .. log2(max_bytes);
    # per size, `repeats` batches of round trips, each batch enough trips to move
    # about `target_bytes` (at least `min_iters`, at most `max_iters`); every trip timed.
    "smoke": {"max_bytes": 4 * KiB**2, "target_bytes": 2 * KiB**2, "min_iters": 5,
              "max_iters": 60, "repeats": 3},
    "cpu": {"max_bytes": 16 * KiB**2, "target_bytes": 32 * KiB**2, "min_iters": 10,
            "max_iters": 1000, "repeats": 5},
    "gpu": {"max_bytes": 64 * KiB**2, "target_bytes": 256 * KiB**2, "min_iters": 10,
            "max_iters": 5000, "repeats": 7},
    "cluster": {"max_bytes": 256 * KiB**2, "target_bytes": 1024 * KiB**2, "min_iters": 10,
                "max_iters": 10000, "repeats": 7},
}


# ----------------------------------------------------------------- the model
def fit_alpha_beta(nbytes, times) -> dict:
    """Least-squares fit of t = alpha + m / beta, minimising *relative* residuals.

    Plain least squares on t would let the largest messages (milliseconds)
    swamp the smallest (microseconds), and alpha would come out as noise.
    Dividing each equation by its measured t weights every size equally.

    Returns alpha (s), beta (bytes/s), the relative residuals per point and
    summaries of them.
    """
    m = np.asarray(nbytes, dtype=float)
    t = np.asarray(times, dtype=float)
    if m.shape != t.shape or m.size < 3:
        raise ValueError("need at least three (bytes, time) pairs of equal length")
    if np.any(t <= 0) or np.any(m < 0):
        raise ValueError("times must be positive and sizes non-negative")
    A = np.stack([np.ones_like(m), m], axis=1) / t[:, None]  # rows: [1, m] / t
    b = np.ones_like(t)                                       # (alpha + m*x) / t = 1
    (alpha, inv_beta), *_ = np.linalg.lstsq(A, b, rcond=None)
    if alpha <= 0 or inv_beta <= 0:
        raise ValueError(f"fit is unphysical: alpha={alpha:.3g} s, 1/beta={inv_beta:.3g} s/B")
    model = alpha + m * inv_beta
    rel = (t - model) / t
    return {"alpha_s": float(alpha), "beta_Bps": float(1.0 / inv_beta),
            "rel_residuals": rel.tolist(),
            "median_abs_rel_residual": float(np.median(np.abs(rel))),
            "max_abs_rel_residual": float(np.max(np.abs(rel)))}


def model_time(nbytes, alpha_s: float, beta_Bps: float):
    """The alpha-beta model's one-way time for messages of `nbytes`."""
    return alpha_s + np.asarray(nbytes, dtype=float) / beta_Bps


def message_sizes(max_bytes: int) -> list[int]:
    if max_bytes < 4:
        raise ValueError(f"--max-bytes must be at least 4, got {max_bytes}")
    return [1 << k for k in range(int(np.log2(max_bytes)) + 1)]


def check(S) -> None:
    """The command line's check, before any work (bench_main calls it)."""
    message_sizes(int(S.max_bytes))
    if int(S.min_iters) > int(S.max_iters):
        raise ValueError(f"--min-iters ({S.min_iters}) must be <= --max-iters ({S.max_iters})")


# ------------------------------------------------------------------ measuring
def _round_trips(comm, rank: int, buf: np.ndarray, iters: int) -> np.ndarray:
    """Do `iters` round trips of `buf`; return each one's duration in seconds (rank 0's clock).

    Every trip is timed on its own, so that a trip on which the operating
    system preempted one of the two processes shows up as one outlier in the
    distribution instead of inflating an average.
    """
    out = np.empty(iters)
    comm.Barrier()
    for k in range(iters):
        t0 = time.perf_counter()
        if rank == 0:
            comm.Send(buf, dest=1, tag=7)
            comm.Recv(buf, source=1, tag=7)
        else:
            comm.Recv(buf, source=0, tag=7)
            comm.Send(buf, dest=0, tag=7)
        out[k] = time.perf_counter() - t0
    return out


def run(S) -> dict:
    from mpi4py import MPI  # imported here: importing the module (e.g. for the fit) needs no MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if size != 2:
        raise SystemExit(f"pingpong needs exactly 2 ranks (mpiexec -n 2 ...), got {size}")
    sizes = message_sizes(int(S.max_bytes))
    rows = []
    for m in sizes:
        iters = int(np.clip(int(S.target_bytes) // m, int(S.min_iters), int(S.max_iters)))
        buf = np.full(m, rank, dtype=np.uint8)
        if rank == 0:  # correctness first: the echo must return the same bytes
            buf[:] = np.arange(m) % 251
        _round_trips(comm, rank, buf, 1)
        if rank == 0:
            assert np.array_equal(buf, np.arange(m) % 251), "echoed message differs"
        _round_trips(comm, rank, buf, max(1, iters // 10))  # warm-up
        trips = np.concatenate([_round_trips(comm, rank, buf, iters)
                                for _ in range(int(S.repeats))])
        t = Timing([float(x) for x in trips / 2])  # one way = half a round trip
        rows.append({"bytes": m, "median_s": t.median, "iqr_s": t.iqr,
                     "trips": int(trips.size), "GBps": m / t.median / 1e9})
    comm.Barrier()
    if rank != 0:
        return None  # only rank 0 reports (bench_main prints nothing for other ranks)
    fit = fit_alpha_beta([r["bytes"] for r in rows], [r["median_s"] for r in rows])
    return {"rows": rows, "alpha_us": fit["alpha_s"] * 1e6, "beta_GBps": fit["beta_Bps"] / 1e9,
            "median_abs_rel_residual": fit["median_abs_rel_residual"],
            "max_abs_rel_residual": fit["max_abs_rel_residual"],
            "ranks": size, "mpi": MPI.Get_library_version().splitlines()[0].strip(),
            "processor": MPI.Get_processor_name()}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check)
