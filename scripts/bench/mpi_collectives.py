"""The eight MPI collectives, each checked against its definition, then timed.

Run:   mpiexec -n 4 python scripts/bench/mpi_collectives.py --profile smoke --json

Part 1 (check). Every rank builds the same small, recognisable input: rank r
holds ``P`` blocks of ``k`` integers, block j of rank r filled with
``100 r + 10 j + i`` (i = 0 .. k-1). Each collective runs on these buffers, and
every rank asserts that what it received equals the result computed with NumPy
from the definition of the operation (:func:`reference`). The before/after
buffers of all ranks are gathered to rank 0 and returned, so that a notebook can
draw what each collective *actually did*.

Part 2 (time). Each collective moves a message of ``nbytes`` per rank;
median time over repeats, with algbw and, where nccl-tests defines it, busbw.
Only rank 0 prints.
"""

from __future__ import annotations

import statistics

import numpy as np

from hpcai.cli import bench_main

OPS = ("bcast", "scatter", "gather", "reduce", "allreduce", "allgather",
       "reduce_scatter", "alltoall")
ROOT = 0
EMPTY = -1  # marks a slot a rank does not hold (inputs are never negative)

SIZES = {
    "smoke": {"k": 2, "nbytes": 64 * 1024, "repeats": 5},
    "cpu": {"k": 2, "nbytes": 1024 * 1024, "repeats": 11},
    "cluster": {"k": 2, "nbytes": 16 * 1024 * 1024, "repeats": 11},
}


def initial(op: str, rank: int, p: int, k: int) -> np.ndarray:
    """Rank ``rank``'s buffer before ``op``: ``p`` blocks of ``k`` int64, EMPTY where unused.

    Rooted operations that *distribute* (bcast, scatter) start with data only on
    the root; gather and allgather start with each rank's own block only.
    """
    full = np.array([[100 * rank + 10 * j + i for i in range(k)] for j in range(p)],
                    dtype=np.int64)  # (p, k)
    buf = np.full((p, k), EMPTY, dtype=np.int64)
    if op in ("bcast", "scatter"):
        if rank == ROOT:
            buf[:] = full
    elif op in ("gather", "allgather"):
        buf[rank] = full[rank]
    else:  # reduce, allreduce, reduce_scatter, alltoall: every rank starts full
        buf[:] = full
    return buf


def reference(op: str, before: list[np.ndarray]) -> list[np.ndarray]:
    """What every rank must hold after ``op``, from the definition alone. (p, k) per rank."""
    p = len(before)
    after = [b.copy() for b in before]
    total = np.sum(before, axis=0) if op in ("reduce", "allreduce", "reduce_scatter") else None
    for r in range(p):
        if op == "bcast":
            after[r] = before[ROOT].copy()
        elif op == "scatter":  # rank r receives block r of the root
            after[r] = np.full_like(before[r], EMPTY)
            after[r][r] = before[ROOT][r]
            if r == ROOT:
                after[r] = before[ROOT].copy()  # the root keeps its send buffer
        elif op == "gather" and r == ROOT:
            after[r] = np.stack([before[q][q] for q in range(p)])
        elif op == "reduce" and r == ROOT:
            after[r] = total.copy()
        elif op == "allreduce":
            after[r] = total.copy()
        elif op == "allgather":
            after[r] = np.stack([before[q][q] for q in range(p)])
        elif op == "reduce_scatter":  # rank r receives the sum of everybody's block r
            after[r] = np.full_like(before[r], EMPTY)
            after[r][r] = total[r]
        elif op == "alltoall":  # block j of rank r lands in slot r of rank j
            after[r] = np.stack([before[q][r] for q in range(p)])
    return after


def apply(comm, op: str, buf: np.ndarray) -> np.ndarray:
    """Run collective ``op`` with mpi4py's buffer interface; returns this rank's (p, k) result."""
    from mpi4py import MPI

    rank, p = comm.Get_rank(), comm.Get_size()
    k = buf.shape[1]
    out = buf.copy()
    if op == "bcast":
        comm.Bcast(out, root=ROOT)
    elif op == "scatter":
        mine = np.empty(k, dtype=np.int64)
        comm.Scatter(buf if rank == ROOT else None, mine, root=ROOT)
        out[rank] = mine
    elif op == "gather":
        got = np.empty((p, k), dtype=np.int64) if rank == ROOT else None
        comm.Gather(buf[rank].copy(), got, root=ROOT)
        if rank == ROOT:
            out = got
    elif op == "reduce":
        got = np.empty_like(buf) if rank == ROOT else None
        comm.Reduce(buf, got, op=MPI.SUM, root=ROOT)
        if rank == ROOT:
            out = got
    elif op == "allreduce":
        comm.Allreduce(buf, out, op=MPI.SUM)
    elif op == "allgather":
        comm.Allgather(buf[rank].copy(), out)
    elif op == "reduce_scatter":
        mine = np.empty(k, dtype=np.int64)
        comm.Reduce_scatter_block(buf, mine, op=MPI.SUM)
        out = np.full_like(buf, EMPTY)
        out[rank] = mine
    elif op == "alltoall":
        comm.Alltoall(buf, out)
    else:
        raise ValueError(f"unknown collective {op!r}; known: {OPS}")
    return out


def check_all(comm, k: int) -> dict:
    """Run every collective on the labelled buffers; assert on every rank; gather for rank 0."""
    rank, p = comm.Get_rank(), comm.Get_size()
    results = {}
    for op in OPS:
        before_all = [initial(op, r, p, k) for r in range(p)]  # every rank can build all inputs
        expected = reference(op, before_all)[rank]
        got = apply(comm, op, before_all[rank])
        assert np.array_equal(got, expected), f"rank {rank}: {op} gave {got.tolist()}"
        after_all = comm.gather(got, root=0)
        if rank == 0:  # check every rank's result again, here, from the gathered buffers
            ok = all(np.array_equal(a, e) for a, e in zip(after_all, reference(op, before_all)))
            results[op] = {"before": [b.tolist() for b in before_all],
                           "after": [a.tolist() for a in after_all], "ok": bool(ok)}
    return results


def time_all(comm, nbytes: int, repeats: int) -> list[dict]:
    """Median time of each collective for a float32 message of about ``nbytes`` per rank."""
    from mpi4py import MPI

    from hpcai.collectives import algbw_GBps, busbw_factor  # imports torch: only when timing

    p = comm.Get_size()
    count = max(p, nbytes // 4 // p * p)  # a multiple of p float32 elements
    send = np.ones(count, dtype=np.float32)
    recv = np.empty(count, dtype=np.float32)
    block = count // p
    small = np.empty(block, dtype=np.float32)
    calls = {
        "bcast": lambda: comm.Bcast(send, root=ROOT),
        "scatter": lambda: comm.Scatter(send, small, root=ROOT),
        "gather": lambda: comm.Gather(send[:block], recv, root=ROOT),
        "reduce": lambda: comm.Reduce(send, recv, op=MPI.SUM, root=ROOT),
        "allreduce": lambda: comm.Allreduce(send, recv, op=MPI.SUM),
        "allgather": lambda: comm.Allgather(send[:block], recv),
        "reduce_scatter": lambda: comm.Reduce_scatter_block(send, small, op=MPI.SUM),
        "alltoall": lambda: comm.Alltoall(send, recv),
    }
    rows = []
    for op in OPS:
        times = []
        for rep in range(repeats + 1):
            comm.Barrier()
            t0 = MPI.Wtime()
            calls[op]()
            t = comm.allreduce(MPI.Wtime() - t0, op=MPI.MAX)
            if rep > 0:
                times.append(t)
        t = statistics.median(times)
        nb = count * 4  # nccl-tests counts the full buffer (p blocks) for every op here
        row = {"op": op, "bytes": nb, "time_s": t, "algbw_GBps": algbw_GBps(nb, t)}
        try:
            row["busbw_GBps"] = row["algbw_GBps"] * busbw_factor(op, p)
        except ValueError:  # scatter and gather: nccl-tests' PERFORMANCE.md defines no factor
            row["busbw_GBps"] = None
        rows.append(row)
    return rows


def run(S) -> dict | None:
    from mpi4py import MPI

    if int(S.k) < 1 or int(S.nbytes) < 4 or int(S.repeats) < 1:
        raise SystemExit("k and repeats must be >= 1 and nbytes >= 4")
    comm = MPI.COMM_WORLD
    checks = check_all(comm, int(S.k))
    rows = time_all(comm, int(S.nbytes), int(S.repeats))
    if comm.Get_rank() != 0:
        return None
    return {"ranks": comm.Get_size(), "checks": checks, "rows": rows,
            "all_ok": all(c["ok"] for c in checks.values()),
            "mpi": MPI.Get_library_version().splitlines()[0].strip()}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__)
