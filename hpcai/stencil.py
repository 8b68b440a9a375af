"""The Jacobi stencil of chapter 6 in NumPy and numba, shared by both Jacobi benchmarks.

``scripts/bench/jacobi.py`` (torch.distributed) and ``scripts/bench/jacobi_mpi.py`` (mpi4py)
cut the same grid into the same stripes (:func:`stripe_bounds`). The MPI benchmark computes
with the numba kernels below and checks every result against :func:`reference`, a NumPy
solve that adds the four neighbours in the same order as ``jacobi.jacobi_step`` (up + down,
then left, then right, then times 1/4), so every correct result agrees bit for bit.

The grid is ``n x n`` points including a fixed boundary: top edge 1, the other edges 0.
A *stripe* is a rank's owned rows plus one ghost row above and one below.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["halo_bytes", "initial_grid", "local_stripe", "reference", "stripe_bounds",
           "sweep_parallel", "sweep_rows"]


def initial_grid(n: int, dtype: type | np.dtype = np.float32) -> np.ndarray:
    """An ``n x n`` grid: zeros inside, top edge held at 1, other edges at 0."""
    u = np.zeros((n, n), dtype=dtype)
    u[0, :] = 1.0
    return u


def stripe_bounds(n: int, p: int, r: int) -> tuple[int, int]:
    """Global rows ``[start, stop)`` of the interior that rank ``r`` of ``p`` owns.

    The ``n - 2`` interior rows are shared as evenly as possible (sizes differ by <= 1).
    """
    interior = n - 2
    if not 0 <= r < p or interior < p:
        raise ValueError(f"cannot cut {interior} interior rows into {p} stripes (rank {r})")
    base, extra = divmod(interior, p)
    start = 1 + r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def local_stripe(n: int, p: int, r: int, dtype: type | np.dtype = np.float32) -> np.ndarray:
    """Rank ``r``'s rows plus one ghost row above and below (boundary rows where they exist)."""
    start, stop = stripe_bounds(n, p, r)
    return initial_grid(n, dtype)[start - 1:stop + 1].copy()


def halo_bytes(n: int, p: int, r: int, itemsize: int) -> int:
    """Bytes rank ``r`` sends per sweep: one row of ``n`` values to each neighbour."""
    neighbours = (r > 0) + (r < p - 1)
    return neighbours * n * itemsize


def reference(n: int, iters: int, dtype: type | np.dtype = np.float32) -> np.ndarray:
    """The single-process NumPy solve that every other result is checked against."""
    u = initial_grid(n, dtype)
    out = u.copy()
    quarter = np.asarray(0.25, dtype=u.dtype)
    for _ in range(iters):
        inner = out[1:-1, 1:-1]
        np.add(u[:-2, 1:-1], u[2:, 1:-1], out=inner)  # up + down
        inner += u[1:-1, :-2]  # + left
        inner += u[1:-1, 2:]  # + right
        inner *= quarter
        u, out = out, u
    return u


@njit(cache=True)
def sweep_rows(u: np.ndarray, out: np.ndarray, i0: int, i1: int) -> None:  # pragma: no cover
    """One sweep of rows ``i0 .. i1-1`` of ``u`` into ``out``; one thread, one pass.

    Row ``i`` reads rows ``i-1`` and ``i+1``; columns 0 and -1 stay fixed.
    """
    m = u.shape[1]
    q = u.dtype.type(0.25)
    for i in range(i0, i1):
        for j in range(1, m - 1):
            out[i, j] = (u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1]) * q


@njit(parallel=True, cache=True)
def sweep_parallel(u: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """The same sweep on every interior row, rows shared among numba's threads (prange)."""
    n, m = u.shape
    q = u.dtype.type(0.25)
    for i in prange(1, n - 1):
        for j in range(1, m - 1):
            out[i, j] = (u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1]) * q
