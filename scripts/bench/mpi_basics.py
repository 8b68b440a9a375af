"""MPI basics in one SPMD program: ranks, point-to-point messages, communicators, barriers.

Run:   mpiexec -n 4 python scripts/bench/mpi_basics.py --profile smoke --json

Every rank runs this same file (single program, multiple data); what differs is
the rank each process learns from ``MPI.COMM_WORLD``. The program

1. reports who it is (rank, size, host, process id);
2. passes a token around a ring with blocking ``send``/``recv``: rank 0 starts
   it, each rank appends its own number and forwards it to ``rank + 1``; the
   token that comes back to rank 0 must list every rank in order;
3. swaps a NumPy buffer with its neighbours using non-blocking ``Isend``/``Irecv``
   (every rank sends to the right and receives from the left at the same time,
   which with two blocking calls facing each other could deadlock);
4. splits ``COMM_WORLD`` into an even and an odd communicator with
   ``Split(color=rank % 2)`` and sums the world ranks inside each;
5. measures how long a barrier takes (median over ``repeats``).

Every check is an ``assert`` on the rank that can make it. Only rank 0 prints.
"""

from __future__ import annotations

import os
import socket

import numpy as np

from hpcai.cli import bench_main
from hpcai.measure import Timing

SIZES = {
    "smoke": {"buffer_elems": 1024, "repeats": 20},
    "cpu": {"buffer_elems": 1 << 16, "repeats": 200},
}


def run(S) -> dict | None:
    from mpi4py import MPI

    if int(S.buffer_elems) < 1 or int(S.repeats) < 1:
        raise SystemExit("buffer_elems and repeats must be >= 1")
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    right, left = (rank + 1) % size, (rank - 1) % size

    # 1. who am I? (gathered so that rank 0 can report everybody)
    me = {"rank": rank, "size": size, "host": socket.gethostname(), "pid": os.getpid()}
    everybody = comm.gather(me, root=0)

    # 2. a token around the ring with blocking, pickled messages (lower-case API)
    if size == 1:
        token = [0]
    elif rank == 0:
        comm.send([0], dest=right, tag=1)
        token = comm.recv(source=left, tag=1)
    else:
        token = comm.recv(source=left, tag=1)
        token.append(rank)
        comm.send(token, dest=right, tag=1)
    if rank == 0:
        assert token == list(range(size)), f"token came back as {token}"

    # 3. neighbour exchange with non-blocking buffer messages (upper-case API)
    n = int(S.buffer_elems)
    send = np.full(n, rank, dtype=np.float64)
    recv = np.empty(n, dtype=np.float64)
    reqs = [comm.Irecv(recv, source=left, tag=2), comm.Isend(send, dest=right, tag=2)]
    MPI.Request.Waitall(reqs)
    assert np.all(recv == left), f"rank {rank} expected data of rank {left}"

    # 4. communicators: split the world into evens and odds
    sub = comm.Split(color=rank % 2, key=rank)
    sub_sum = sub.allreduce(rank, op=MPI.SUM)
    expected = sum(r for r in range(size) if r % 2 == rank % 2)
    assert sub_sum == expected, f"rank {rank}: sub-communicator sum {sub_sum} != {expected}"
    split = comm.gather({"world_rank": rank, "color": rank % 2, "sub_rank": sub.Get_rank(),
                         "sub_size": sub.Get_size(), "sub_sum": sub_sum}, root=0)
    sub.Free()

    # 5. what a barrier costs
    times = []
    for _ in range(int(S.repeats) + 1):
        t0 = MPI.Wtime()
        comm.Barrier()
        times.append(MPI.Wtime() - t0)
    mine = Timing(times[1:])
    per_rank = comm.gather((mine.median, mine.iqr), root=0)  # report the slowest rank

    if rank != 0:
        return None
    median_s, iqr_s = max(per_rank)
    return {"ranks": size, "processes": everybody, "token": token,
            "neighbour_exchange_ok": True, "split": split,
            "median_s": median_s, "iqr_s": iqr_s,  # one barrier, the slowest rank's median
            "wtick_s": MPI.Wtick(),
            "mpi": MPI.Get_library_version().splitlines()[0].strip(),
            "mpi_standard": "{}.{}".format(*MPI.Get_version())}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__)
