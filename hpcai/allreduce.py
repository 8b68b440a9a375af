"""All-reduce written by hand, and the alpha-beta costs of the algorithms.

Chapter 4 writes these algorithms and chapter 6 times them against NCCL or gloo; the
bandwidth bookkeeping they are reported with (algbw, busbw) lives in :mod:`hpcai.dist`.

1. **All-reduce by hand** over ``torch.distributed`` point-to-point messages, summing in
   place on the default process group:

   * :func:`naive_allreduce_` -- rank 0 receives and adds every other rank's buffer, then
     sends the total back to each rank (reduce + broadcast).
   * :func:`ring_allreduce_` -- reduce-scatter around a ring followed by an all-gather
     around the same ring; works for any world size.
   * :func:`recursive_doubling_allreduce_` -- pairwise exchanges with partners at distance
     1, 2, 4, ...; non-powers of two are folded onto the nearest smaller power of two first.

   Every algorithm leaves bit-identical results on all ranks. Simultaneous send-receive
   steps go through :func:`hpcai.dist.exchange`, which is correct on NCCL and gloo alike.
   ``torch`` is imported only when an algorithm runs, so the cost models are cheap to import.

2. **Alpha-beta (Hockney) cost models** of those algorithms. A message of ``m`` bytes costs
   ``t(m) = alpha + m / beta``: ``alpha`` is the latency in seconds, ``beta`` the link
   bandwidth in bytes per second (:func:`beta_from_GBps` converts from GB/s). The
   models ignore the time spent adding numbers, so they are lower bounds when the reduction
   itself is not free.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from .dist import exchange

if TYPE_CHECKING:  # torch is imported lazily: the cost models do not need it
    import torch

__all__ = [
    "ALLREDUCE_ALGORITHMS",
    "COST_MODELS",
    "beta_from_GBps",
    "cost_naive",
    "cost_recursive_doubling",
    "cost_ring",
    "cost_tree",
    "library_allreduce_",
    "naive_allreduce_",
    "recursive_doubling_allreduce_",
    "ring_allreduce_",
]


# --------------------------------------------------------------------------
# 1. All-reduce by hand over point-to-point messages
# --------------------------------------------------------------------------


def _exchange(send: torch.Tensor, dst: int, recv: torch.Tensor, src: int) -> None:
    """Send ``send`` to ``dst`` while receiving ``recv`` from ``src`` (both posted at once)."""
    exchange([(send, dst)], [(recv, src)])


def _flat_work(t: torch.Tensor) -> torch.Tensor:
    """A contiguous 1-D view of ``t`` (or of a contiguous copy of it)."""
    return t.view(-1) if t.is_contiguous() else t.contiguous().view(-1)


def _finish(t: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """Copy ``flat`` back into ``t`` if we had to work on a copy."""
    if flat.data_ptr() != t.data_ptr() or not t.is_contiguous():
        t.copy_(flat.view(t.shape))
    return t


def _check(t: torch.Tensor) -> None:
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call init_process_group first")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(t).__name__}")


def naive_allreduce_(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all ranks in place: reduce to rank 0, then broadcast.

    Rank 0 receives each other rank's whole buffer in turn and adds it, then
    sends the total back to every rank, one after the other. Rank 0's link
    carries ``2 (p-1)`` full messages, which is why this algorithm scales
    badly. Returns ``t``.
    """
    import torch
    import torch.distributed as dist

    _check(t)
    p, rank = dist.get_world_size(), dist.get_rank()
    if p == 1:
        return t
    flat = _flat_work(t)
    if rank == 0:
        buf = torch.empty_like(flat)
        for src in range(1, p):  # reduce: p-1 messages into the root
            dist.recv(buf, src=src)
            flat += buf
        for dst in range(1, p):  # broadcast: p-1 messages out of the root
            dist.send(flat, dst=dst)
    else:
        dist.send(flat, dst=0)
        dist.recv(flat, src=0)
    return _finish(t, flat)


def ring_allreduce_(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all ranks in place with the ring algorithm.

    The buffer is cut into ``p`` chunks. In the reduce-scatter phase
    (``p-1`` steps) every rank sends one chunk to its right neighbour and
    adds the chunk arriving from its left neighbour; afterwards rank ``r``
    holds the complete sum of chunk ``(r+1) mod p``. The all-gather phase
    (another ``p-1`` steps) passes the finished chunks around the ring.
    Each rank sends ``2 (p-1)/p`` of the buffer in total, independent of
    ``p``: the property that makes the ring bandwidth-optimal. Works for any
    world size and any number of elements. Returns ``t``.
    """
    import torch
    import torch.distributed as dist

    _check(t)
    p, rank = dist.get_world_size(), dist.get_rank()
    if p == 1:
        return t
    flat = _flat_work(t)
    chunks = list(torch.tensor_split(flat, p))  # p views, sizes differ by <= 1
    right, left = (rank + 1) % p, (rank - 1) % p
    recv_buf = torch.empty_like(chunks[0])

    # Phase 1: reduce-scatter. At step s rank r sends chunk (r - s) and
    # receives chunk (r - s - 1), which it accumulates.
    for s in range(p - 1):
        send_idx = (rank - s) % p
        recv_idx = (rank - s - 1) % p
        incoming = recv_buf[: chunks[recv_idx].numel()]
        _exchange(chunks[send_idx], right, incoming, left)
        chunks[recv_idx] += incoming

    # Phase 2: all-gather. Rank r owns the finished chunk (r + 1); at step s
    # it sends chunk (r + 1 - s) and overwrites chunk (r - s) with what
    # arrives.
    for s in range(p - 1):
        send_idx = (rank + 1 - s) % p
        recv_idx = (rank - s) % p
        _exchange(chunks[send_idx], right, chunks[recv_idx], left)
    return _finish(t, flat)


def recursive_doubling_allreduce_(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all ranks in place by recursive doubling.

    With ``p`` a power of two, step ``k`` pairs rank ``r`` with rank
    ``r XOR 2**k``; the two swap their whole buffers and both add. After
    ``log2 p`` steps every rank holds the total. For other ``p`` the
    ``2 * (p - q)`` lowest ranks (``q`` the largest power of two below
    ``p``) first pair up: each even rank hands its buffer to the odd rank
    above it and sits out; at the end it receives the result back. Returns
    ``t``.
    """
    import torch
    import torch.distributed as dist

    _check(t)
    p, rank = dist.get_world_size(), dist.get_rank()
    if p == 1:
        return t
    flat = _flat_work(t)
    buf = torch.empty_like(flat)
    q = 1 << (p.bit_length() - 1)  # largest power of two <= p
    extra = p - q

    # Fold: ranks 0, 2, ..., 2*extra-2 give their data to the next odd rank.
    if rank < 2 * extra:
        if rank % 2 == 0:
            dist.send(flat, dst=rank + 1)
            new_rank = -1  # sits out the doubling
        else:
            dist.recv(buf, src=rank - 1)
            flat += buf
            new_rank = rank // 2
    else:
        new_rank = rank - extra

    def real(r: int) -> int:  # participant index -> real rank
        return 2 * r + 1 if r < extra else r + extra

    if new_rank >= 0:
        mask = 1
        while mask < q:
            partner = real(new_rank ^ mask)
            _exchange(flat, partner, buf, partner)
            flat += buf  # a + b == b + a exactly, so partners stay identical
            mask <<= 1

    # Unfold: hand the result back to the ranks that sat out.
    if rank < 2 * extra:
        if rank % 2 == 0:
            dist.recv(flat, src=rank + 1)
        else:
            dist.send(flat, dst=rank - 1)
    return _finish(t, flat)


def library_allreduce_(t: torch.Tensor) -> torch.Tensor:
    """The backend's own all-reduce (``dist.all_reduce``, sum), for comparison."""
    import torch.distributed as dist

    _check(t)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


ALLREDUCE_ALGORITHMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "library": library_allreduce_,
    "ring": ring_allreduce_,
    "recursive_doubling": recursive_doubling_allreduce_,
    "naive": naive_allreduce_,
}
"""Name -> in-place all-reduce, as used by ``scripts/bench/allreduce.py --algo``."""


# --------------------------------------------------------------------------
# 2. Alpha-beta cost models (alpha in s, beta in bytes/s): t(m) = alpha + m / beta
# --------------------------------------------------------------------------


def beta_from_GBps(bandwidth_GBps: float) -> float:
    """The bandwidth ``beta`` in bytes per second of a link of ``bandwidth_GBps`` GB/s (1e9 B)."""
    if bandwidth_GBps <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth_GBps!r}")
    return bandwidth_GBps * 1e9


def _check_model(n_bytes: float, p: int, alpha: float, beta: float) -> None:
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p!r}")
    if n_bytes < 0 or alpha < 0:
        raise ValueError("n_bytes and alpha must be non-negative")
    if not beta > 0:
        raise ValueError(f"the bandwidth beta must be positive (math.inf: no transfer "
                         f"cost), got {beta!r}")


def cost_naive(n_bytes: float, p: int, alpha: float, beta: float) -> float:
    """Flat reduce to a root then flat broadcast: ``2 (p-1) (alpha + n / beta)`` seconds."""
    _check_model(n_bytes, p, alpha, beta)
    return 2 * (p - 1) * (alpha + n_bytes / beta)


def cost_ring(n_bytes: float, p: int, alpha: float, beta: float) -> float:
    """Ring all-reduce: ``2 (p-1) alpha + 2 (p-1)/p * n / beta`` seconds."""
    _check_model(n_bytes, p, alpha, beta)
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * n_bytes / beta


def cost_recursive_doubling(n_bytes: float, p: int, alpha: float, beta: float) -> float:
    """Recursive doubling: ``log2 q (alpha + n / beta)`` seconds, ``q`` the largest power of two <= p.

    When ``p`` is not a power of two the fold and unfold add two more full
    messages: ``(log2 q + 2) (alpha + n / beta)``.
    """
    _check_model(n_bytes, p, alpha, beta)
    if p == 1:
        return 0.0
    q = 1 << (p.bit_length() - 1)
    steps = int(math.log2(q)) + (0 if q == p else 2)
    return steps * (alpha + n_bytes / beta)


def cost_tree(n_bytes: float, p: int, alpha: float, beta: float) -> float:
    """Binomial-tree reduce then binomial-tree broadcast: ``2 ceil(log2 p) (alpha + n / beta)``."""
    _check_model(n_bytes, p, alpha, beta)
    if p == 1:
        return 0.0
    return 2 * math.ceil(math.log2(p)) * (alpha + n_bytes / beta)


COST_MODELS: dict[str, Callable[[float, int, float, float], float]] = {
    "naive": cost_naive,
    "ring": cost_ring,
    "recursive_doubling": cost_recursive_doubling,
    "tree": cost_tree,
}
"""Name -> alpha-beta model ``f(n_bytes, p, alpha, beta) -> seconds``."""
