"""The eight MPI collectives by definition: labelled inputs and the results they must give.

Shared by ``scripts/bench/mpi_collectives.py`` (which checks what MPI really did against
:func:`reference`), by ``figures/ch04_collectives.py`` (which draws the definitions) and by the
chapter 4 notebook. Only NumPy is needed.

Every rank holds ``p`` blocks of ``k`` integers; block ``j`` of rank ``r`` is filled with
``100 r + 10 j + i`` (``i = 0 .. k-1``), so any value tells where it came from. A slot a rank
does not hold is :data:`EMPTY`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EMPTY", "OPS", "ROOT", "initial", "reference"]

OPS = ("bcast", "scatter", "gather", "reduce", "allreduce", "allgather",
       "reduce_scatter", "alltoall")
"""The collectives, in the order the book presents them."""
ROOT = 0
"""The root rank of the rooted collectives (bcast, scatter, gather, reduce)."""
EMPTY = -1
"""Marks a slot a rank does not hold (inputs are never negative)."""


def initial(op: str, rank: int, p: int, k: int) -> np.ndarray:
    """Rank ``rank``'s buffer before ``op``: ``p`` blocks of ``k`` int64, EMPTY where unused.

    Rooted operations that *distribute* (bcast, scatter) start with data only on the root;
    gather and allgather start with each rank's own block only.
    """
    if op not in OPS:
        raise ValueError(f"unknown collective {op!r}; known: {', '.join(OPS)}")
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
    """What every rank must hold after ``op``, from the definition alone; (p, k) per rank."""
    if op not in OPS:
        raise ValueError(f"unknown collective {op!r}; known: {', '.join(OPS)}")
    p = len(before)
    after = [b.copy() for b in before]
    reducing = op in ("reduce", "allreduce", "reduce_scatter")
    total = np.sum(before, axis=0) if reducing else None
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
