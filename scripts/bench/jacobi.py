"""Distributed Jacobi for the 2-D Laplace equation: stripes, halo exchange, strong scaling.

The grid is ``n x n`` points including a fixed boundary (top edge 1, the other edges 0).
Each Jacobi sweep replaces every interior point by the mean of its four neighbours. The
interior rows are cut into horizontal stripes, one per rank; before each sweep a rank
swaps its first and last owned rows with its neighbours (the *halo exchange*).

In one launch the script solves every grid size on 1, 2, 4, ... ranks (the ranks
``0..p-1`` of the launch form a sub-group; the others wait), checks each distributed
result against a single-process solve with the same number of sweeps, and times compute
and communication separately. Each row reports the solve's ``median_s`` and ``iqr_s`` over
repeats (the slowest rank's), and the result names the node of every rank (``placement``)::

    torchrun --nproc-per-node 2 scripts/bench/jacobi.py --profile cpu --json

``scripts/bench/jacobi_mpi.py`` runs the same stripes (``hpcai.stencil``) over MPI, with a
compiled sweep and the exchange overlapped with the interior.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from hpcai import dist as hd
from hpcai.cli import bench_main
from hpcai.measure import Timing
from hpcai.stencil import halo_bytes, stripe_bounds  # the same stripes as jacobi_mpi.py

# torch takes seconds to import: each function imports it when it runs, so that a bad
# command-line value is refused at once
if TYPE_CHECKING:
    import torch

SIZES: dict[str, dict[str, Any]] = {
    # sizes: grid edge n (boundary included); iters: Jacobi sweeps per solve.
    "smoke": {"nproc": 2, "sizes": [32, 128], "iters": 20, "repeats": 2,
              "exchange": "nonblocking", "dtype": "float32", "backend": "gloo"},
    "cpu": {"nproc": 2, "sizes": [64, 256, 1024, 2048], "iters": 50, "repeats": 3,
            "exchange": "nonblocking", "dtype": "float32", "backend": "gloo"},
    "gpu": {"nproc": 0, "sizes": [1024, 4096, 8192, 16384], "iters": 1000, "repeats": 3,
            "exchange": "nonblocking", "dtype": "float32", "backend": "auto"},
    "cluster": {"nproc": 0, "sizes": [4096, 8192, 16384, 32768], "iters": 1000,
                "repeats": 3, "exchange": "nonblocking", "dtype": "float32",
                "backend": "auto"},
}
DTYPES = ("float32", "float64")  # torch dtypes by name; torch is imported where it is used
EXCHANGES = ("nonblocking", "blocking")


# --------------------------------------------------------------------------- the numerics
def initial_grid(n: int, dtype: torch.dtype | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """An ``n x n`` grid: zeros inside, top edge held at 1, other edges at 0 (float32 unless
    ``dtype`` says otherwise)."""
    import torch

    u = torch.zeros(n, n, dtype=torch.float32 if dtype is None else dtype, device=device)
    u[0, :] = 1.0
    return u


def jacobi_step(u: torch.Tensor, out: torch.Tensor) -> None:
    """One sweep: ``out[i, j] = (up + down + left + right) / 4`` on the interior of ``u``.

    Works on a whole grid and on a stripe with ghost rows alike (shape ``rows x n``).
    Writes into ``out`` without temporaries; rows 0 and -1 and the edge columns of
    ``out`` are left alone.
    """
    import torch

    inner = out[1:-1, 1:-1]
    torch.add(u[:-2, 1:-1], u[2:, 1:-1], out=inner)  # up + down
    inner.add_(u[1:-1, :-2]).add_(u[1:-1, 2:]).mul_(0.25)  # + left + right, / 4


def jacobi_reference(n: int, iters: int, dtype: torch.dtype | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """The single-process solve every distributed result is checked against."""
    u = initial_grid(n, dtype, device)
    out = u.clone()
    for _ in range(iters):
        jacobi_step(u, out)
        u, out = out, u
    return u


def local_stripe(n: int, p: int, r: int, dtype: torch.dtype | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Rank ``r``'s rows plus one ghost row above and below (boundary rows where they exist)."""
    start, stop = stripe_bounds(n, p, r)
    return initial_grid(n, dtype, device)[start - 1:stop + 1].clone()


# --------------------------------------------------------------------------- halo exchange
def exchange_nonblocking(u: torch.Tensor, up: int | None, down: int | None,
                         group: Any = None) -> None:
    """Post both receives and both sends, then wait for all four: no ordering, no deadlock.

    ``hpcai.dist.exchange`` hands the four over as one batch on NCCL (where a lone send or
    receive would block its neighbour) and one by one on gloo.
    """
    sends = [(u[1], up), (u[-2], down)]  # my first row up, my last row down
    recvs = [(u[0], up), (u[-1], down)]  # ghost row above, ghost row below
    hd.exchange([(t, peer) for t, peer in sends if peer is not None],
                [(t, peer) for t, peer in recvs if peer is not None], group)


def exchange_blocking(u: torch.Tensor, up: int | None, down: int | None, rank: int,
                      group: Any = None) -> None:
    """Blocking send/recv, ordered by rank parity so that two sends never face each other.

    Even ranks send first and then receive; odd ranks receive first and then send.
    Correct, but every transfer waits for the one before it.
    """
    import torch.distributed as dist

    pairs = [(nb, row, ghost) for nb, row, ghost in ((up, 1, 0), (down, -2, -1))
             if nb is not None]
    for nb, row, ghost in pairs:
        if rank % 2 == 0:
            dist.send(u[row], dst=nb, group=group)
            dist.recv(u[ghost], src=nb, group=group)
        else:
            dist.recv(u[ghost], src=nb, group=group)
            dist.send(u[row], dst=nb, group=group)


def solve(n: int, iters: int, p: int, rank: int, group: Any, exchange: str,
          dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, float, float, float]:
    """Run ``iters`` sweeps on this rank's stripe; return (stripe, total, compute, comm) s."""
    import torch

    u = local_stripe(n, p, rank, dtype, device)
    out = u.clone()  # ghost rows that hold the boundary are fixed in both buffers
    up = rank - 1 if rank > 0 else None
    down = rank + 1 if rank < p - 1 else None
    cuda = device.type == "cuda"
    compute = comm = 0.0
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        t0 = time.perf_counter()
        if exchange == "nonblocking":
            exchange_nonblocking(u, up, down, group)
        else:
            exchange_blocking(u, up, down, rank, group)
        if cuda:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        jacobi_step(u, out)
        if cuda:
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        comm += t1 - t0
        compute += t2 - t1
        u, out = out, u
    total = time.perf_counter() - start
    return u, total, compute, comm


def gather_to_root(u: torch.Tensor, n: int, p: int, rank: int, group: Any) -> torch.Tensor | None:
    """Assemble the full grid on rank 0 from every rank's owned rows (None elsewhere)."""
    import torch
    import torch.distributed as dist

    if rank != 0:
        dist.send(u[1:-1].contiguous(), dst=0, group=group)
        return None
    full = initial_grid(n, u.dtype, u.device)
    start, stop = stripe_bounds(n, p, 0)
    full[start:stop] = u[1:-1]
    for r in range(1, p):
        start, stop = stripe_bounds(n, p, r)
        buf = torch.empty(stop - start, n, dtype=u.dtype, device=u.device)
        dist.recv(buf, src=r, group=group)
        full[start:stop] = buf
    return full


def rank_counts(world: int) -> list[int]:
    """1, 2, 4, ... up to the world size, and the world size itself."""
    counts, p = [], 1
    while p < world:
        counts.append(p)
        p *= 2
    return counts + [world]


# --------------------------------------------------------------------------- the benchmark
def check_settings(S: Any, world: int | None = None) -> None:
    """Grids too small for the ranks, refused before any work (``world``: $WORLD_SIZE)."""
    if world is None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    too_small = [n for n in S.sizes if n - 2 < 2 * world]
    if not S.sizes or too_small:
        raise ValueError(f"every grid needs at least {2 * world + 2} rows for {world} ranks "
                         f"(two interior rows per rank); got sizes {list(S.sizes)}")


def run(S: Any) -> dict[str, Any] | None:
    import torch
    import torch.distributed as dist

    w = hd.init(S.backend)
    backend, device, world, rank = w.backend, w.device, w.size, w.rank
    dtype = getattr(torch, S.dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    counts = rank_counts(world)
    # every rank must take part in creating every group, members or not
    groups = {p: (None if p == world else dist.new_group(list(range(p)))) for p in counts}

    rows: list[dict[str, Any]] = []
    blocking_err = 0.0
    for n in S.sizes:
        reference = jacobi_reference(n, S.iters, dtype, device) if rank == 0 else None
        for p in counts:
            g = groups[p]
            stats = [0.0] * 6
            if rank < p:  # a member of the p-rank group
                # 1. correctness first: one untimed solve, gathered and compared on rank 0
                err = 0.0
                u, *_ = solve(n, S.iters, p, rank, g, S.exchange, dtype, device)
                full = gather_to_root(u, n, p, rank, g)
                if rank == 0:
                    err = float((full - reference).abs().max())
                if n == S.sizes[0]:  # the blocking variant must agree too
                    u, *_ = solve(n, S.iters, p, rank, g, "blocking", dtype, device)
                    full = gather_to_root(u, n, p, rank, g)
                    if rank == 0:
                        blocking_err = max(blocking_err, float((full - reference).abs().max()))
                # 2. then time: `repeats` solves; compute and comm of the median solve
                runs = []
                for _ in range(S.repeats):
                    dist.barrier(group=g)
                    _, total, compute, comm = solve(n, S.iters, p, rank, g, S.exchange,
                                                    dtype, device)
                    runs.append((total, compute, comm))
                timing = Timing([r[0] for r in runs])
                _, compute, comm = sorted(runs)[len(runs) // 2]
                # slowest median, IQR, largest comm, error; compute and comm as rank means
                mx = hd.reduce_floats([timing.median, timing.iqr, comm, err], "max", g)
                sm = hd.reduce_floats([compute / p, comm / p], "sum", g)
                stats = [mx[0], mx[1], sm[0], sm[1], mx[2], mx[3]]
            dist.barrier()  # non-members wait here
            if rank == 0:
                median, iqr, compute, comm, comm_max, err = stats
                rows.append({
                    "n": n, "ranks": p, "iters": S.iters, "median_s": median, "iqr_s": iqr,
                    "compute_s": compute, "comm_s": comm, "comm_max_s": comm_max,
                    "time_per_iter_s": median / S.iters,
                    "halo_bytes_per_iter": max(halo_bytes(n, p, r, itemsize) for r in range(p)),
                    "points_per_rank": (n - 2) ** 2 / p,
                    "mlups": (n - 2) ** 2 * S.iters / median / 1e6,
                    "max_err_vs_reference": err,
                })
    placement = hd.placement()
    hd.teardown()
    if rank != 0:
        return None
    for row in rows:  # strong scaling relative to one rank on the same grid
        one = next(r for r in rows if r["n"] == row["n"] and r["ranks"] == 1)
        row["speedup"] = one["median_s"] / row["median_s"]
        row["efficiency"] = row["speedup"] / row["ranks"]
        row["comm_over_compute"] = row["comm_s"] / row["compute_s"]
    max_err = max([r["max_err_vs_reference"] for r in rows] + [blocking_err])
    if max_err > 0.0:
        raise SystemExit(f"distributed Jacobi differs from the reference by {max_err:g}")
    big = next(r for r in rows if r["n"] == max(S.sizes) and r["ranks"] == world)
    print(f"# Jacobi, world {world}, backend {backend}, {S.dtype}, {S.iters} sweeps")
    print(f"#{'n':>6} {'ranks':>5} {'time(s)':>9} {'compute':>9} {'comm':>9} "
          f"{'speedup':>8} {'eff':>6} {'err':>8}")
    for r in rows:
        print(f" {r['n']:>6} {r['ranks']:>5} {r['median_s']:>9.4f} {r['compute_s']:>9.4f} "
              f"{r['comm_s']:>9.4f} {r['speedup']:>8.2f} {r['efficiency']:>6.2f} "
              f"{r['max_err_vs_reference']:>8.1e}", flush=True)
    return {
        "world": world, "backend": backend, "device": device.type, "dtype": S.dtype,
        "exchange": S.exchange, "rank_counts": counts, "placement": placement,
        "median_s": big["median_s"], "iqr_s": big["iqr_s"],
        "compute_s": big["compute_s"], "comm_s": big["comm_s"],
        "max_err_vs_reference": max_err, "blocking_max_err": blocking_err, "rows": rows,
    }


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check_settings,
               choices={"exchange": EXCHANGES, "dtype": tuple(DTYPES), "backend": hd.BACKENDS})
