"""The eight MPI collectives, each checked against its definition, then timed.

Run:   mpiexec -n 4 python scripts/bench/mpi_collectives.py --profile smoke --json

Part 1 (check). Every rank builds the same small, recognisable input: rank r
holds ``P`` blocks of ``k`` integers, block j of rank r filled with
``100 r + 10 j + i`` (i = 0 .. k-1). Each collective runs on these buffers, and
every rank asserts that what it received equals the result computed with NumPy
from the definition of the operation (``hpcai.mpi_reference``). The before/after
buffers of all ranks are gathered to rank 0 and returned, so that a notebook can
draw what each collective *actually did*.

Part 2 (time). Each collective moves a message of ``nbytes`` per rank;
``median_s`` and ``iqr_s`` over repeats, with algbw and, where nccl-tests defines it, busbw.
Only rank 0 prints.
"""

from __future__ import annotations

import numpy as np

from hpcai.cli import bench_main
from hpcai.dist import algbw_GBps, busbw_factor
from hpcai.measure import Timing
from hpcai.mpi_reference import EMPTY, OPS, ROOT, initial, reference

SIZES = {
    "smoke": {"k": 2, "nbytes": 64 * 1024, "repeats": 5},
    "cpu": {"k": 2, "nbytes": 1024 * 1024, "repeats": 11},
    "cluster": {"k": 2, "nbytes": 16 * 1024 * 1024, "repeats": 11},
}


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
    """Median and IQR of each collective for a float32 message of about ``nbytes`` per rank."""
    from mpi4py import MPI

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
        timing = Timing(times)  # each sample: the slowest rank's time
        t = timing.median
        nb = count * 4  # nccl-tests counts the full buffer (p blocks) for every op here
        row = {"op": op, "bytes": nb, "median_s": t, "iqr_s": timing.iqr,
               "algbw_GBps": algbw_GBps(nb, t)}
        try:
            row["busbw_GBps"] = row["algbw_GBps"] * busbw_factor(op, p)
        except ValueError:  # scatter and gather: nccl-tests' PERFORMANCE.md defines no factor
            row["busbw_GBps"] = None
        rows.append(row)
    return rows


def check_settings(S) -> None:
    """Refuse a message too small to hold one float32 (bench_main checks k, repeats > 0)."""
    if int(S.nbytes) < 4:
        raise ValueError(f"--nbytes must be at least 4 (one float32), got {S.nbytes}")


def run(S) -> dict | None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    checks = check_all(comm, int(S.k))
    rows = time_all(comm, int(S.nbytes), int(S.repeats))
    if comm.Get_rank() != 0:
        return None
    return {"ranks": comm.Get_size(), "checks": checks, "rows": rows,
            "all_ok": all(c["ok"] for c in checks.values()),
            "mpi": MPI.Get_library_version().splitlines()[0].strip()}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check_settings)
