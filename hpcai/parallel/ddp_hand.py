"""Distributed data parallel by hand: naive, then bucketed and overlapped (chapter 12).

Every rank holds the whole model and trains on its ``b`` rows of the global batch of
``n b`` rows; the loss is a mean over rows, so the gradient of the global batch is the
mean of the ``n`` ranks' gradients. Two ways to form that mean:

* :func:`naive_sync`: after ``loss.backward()`` has finished, one ``all_reduce`` per
  parameter gradient (``p.grad``, the shape of ``p``), then a division by ``n``. Nothing
  overlaps: the network waits for the whole backward pass, and the processors wait for
  the whole exchange. ``len(params)`` all-reduces a step, one small message per tensor.
* :class:`BucketedDDP`: the parameters, in *reverse* registration order (the order in
  which the backward pass of a feed-forward stack produces their gradients: last layer
  first), are grouped into buckets of at least ``bucket_mb`` MiB each
  (:func:`assign_buckets`). Each bucket owns one flat 1-D buffer holding the gradients
  of its parameters back to back (``p.grad.reshape(-1)`` at offsets
  ``0, p0.numel(), ...``). A ``register_post_accumulate_grad_hook`` on every parameter
  copies its fresh gradient into the buffer, scaled by ``1 / n``; when the last gradient
  of a bucket has arrived, the bucket's all-reduce is launched with ``async_op=True``
  and the backward pass goes on computing the gradients of earlier layers while the
  message travels. :meth:`BucketedDDP.finish` waits for every handle and copies the
  summed buffers back into ``p.grad`` before the optimiser step.

This is the design of ``torch.nn.parallel.DistributedDataParallel`` (Li et al. 2020,
"PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB 13(12)),
without its refinements: a smaller first bucket, the rebuild of buckets in the order
gradients were actually ready after the first iteration, gradients as views of the
buckets, unused parameters, ``no_sync`` for gradient accumulation, and a C++ reducer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["BucketedDDP", "assign_buckets", "broadcast_params", "naive_sync",
           "overlap_fraction"]

MiB = 2 ** 20


def broadcast_params(module: nn.Module, group: Any = None) -> None:
    """Make every replica start from the parameters of the group's first rank."""
    for p in module.parameters():
        dist.broadcast(p.detach(), group=group, group_src=0)


def naive_sync(params: Iterable[nn.Parameter], world_size: int,
               group: Any = None) -> int:
    """All-reduce every gradient, one tensor at a time, into the mean over ranks.

    Call after ``backward()``. Returns the number of all-reduces issued (one per
    parameter with a gradient)."""
    count = 0
    for p in params:
        if p.grad is None:
            continue
        dist.all_reduce(p.grad, group=group)  # the sum over ranks ...
        p.grad /= world_size  # ... into their mean
        count += 1
    return count


def assign_buckets(sizes: Sequence[int], cap_bytes: int) -> list[list[int]]:
    """Group tensors of ``sizes`` bytes, in the order given, into buckets.

    A bucket is closed as soon as it holds at least ``cap_bytes`` (the rule of DDP's
    ``compute_bucket_assignment_by_size``): every bucket but the last holds at least
    the cap, and less than the cap before its last tensor. Returns lists of indices
    into ``sizes``, in order; ``[]`` for no tensors."""
    if cap_bytes < 1:
        raise ValueError(f"bucket cap must be at least one byte, got {cap_bytes}")
    buckets: list[list[int]] = []
    current: list[int] = []
    filled = 0
    for i, size in enumerate(sizes):
        current.append(i)
        filled += size
        if filled >= cap_bytes:
            buckets.append(current)
            current, filled = [], 0
    if current:
        buckets.append(current)
    return buckets


class _Bucket:
    """One flat buffer and the parameters whose gradients it holds."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        p0 = params[0]
        self.params = params
        self.offsets = [0]
        for p in params:
            self.offsets.append(self.offsets[-1] + p.numel())
        self.flat = torch.zeros(self.offsets[-1], dtype=p0.dtype, device=p0.device)
        self.pending = len(params)
        self.handle: Any = None

    def view(self, j: int) -> torch.Tensor:
        """The slice of the buffer that holds parameter ``j``, in its shape."""
        p = self.params[j]
        return self.flat[self.offsets[j]:self.offsets[j + 1]].view_as(p)


class BucketedDDP:
    """Bucketed gradient all-reduce, launched from autograd hooks during backward.

    ``BucketedDDP(net, bucket_mb)`` broadcasts rank 0's parameters and installs the
    hooks; each step is then ``loss.backward(); ddp.finish(); opt.step()``. Gradients
    must be fresh each step (``zero_grad(set_to_none=True)``, or zeroed), and every
    parameter must receive one (no unused parameters)."""

    def __init__(self, module: nn.Module, bucket_mb: float, group: Any = None) -> None:
        self.group = group
        self.world_size = dist.get_world_size(group)
        params = [p for p in module.parameters() if p.requires_grad]
        broadcast_params(module, group)
        order = params[::-1]  # gradients of the last layers are ready first
        sizes = [p.numel() * p.element_size() for p in order]
        self.cap_bytes = max(1, int(bucket_mb * MiB))
        self.buckets = [_Bucket([order[i] for i in idx])
                        for idx in assign_buckets(sizes, self.cap_bytes)]
        self._where: dict[nn.Parameter, tuple[_Bucket, int]] = {}
        for bucket in self.buckets:
            for j, p in enumerate(bucket.params):
                self._where[p] = (bucket, j)
                p.register_post_accumulate_grad_hook(self._ready)
        self.launched = 0  # all-reduces issued since the last finish()

    def _ready(self, p: torch.Tensor) -> None:
        """Autograd calls this once ``p.grad`` holds this step's gradient."""
        bucket, j = self._where[p]  # type: ignore[index]
        assert p.grad is not None
        torch.mul(p.grad, 1.0 / self.world_size, out=bucket.view(j))
        bucket.pending -= 1
        if bucket.pending == 0:  # the last gradient of the bucket: send it now
            bucket.handle = dist.all_reduce(bucket.flat, group=self.group,
                                            async_op=True)
            self.launched += 1

    def finish(self) -> int:
        """Wait for every bucket's all-reduce and copy the means into ``p.grad``.

        Returns the number of all-reduces of this step (the number of buckets)."""
        for bucket in self.buckets:
            if bucket.handle is None:
                raise RuntimeError("a bucket never became ready: some parameter got "
                                   "no gradient in this backward pass")
            bucket.handle.wait()
            for j, p in enumerate(bucket.params):
                assert p.grad is not None
                p.grad.copy_(bucket.view(j))
            bucket.handle, bucket.pending = None, len(bucket.params)
        launched, self.launched = self.launched, 0
        return launched

    @property
    def bucket_bytes(self) -> list[int]:
        """Bytes of each bucket, in launch order."""
        return [b.flat.numel() * b.flat.element_size() for b in self.buckets]


def overlap_fraction(events: Sequence[dict[str, Any]],
                     comm: str = "gloo:all_reduce") -> float | None:
    """Share of the all-reduce time that ran while the backward pass still computed.

    ``events`` are the rows of :func:`hpcai.trace.trace_events` of one rank's trace
    (``name``, ``ts``, ``end``); each step has a ``backward`` label with a
    ``grad_sync`` label inside it (the wait of the hand-written impls). Of every
    ``comm`` event (gloo runs it on a worker thread of its own), the part before the
    ``grad_sync`` of the ``backward`` it starts in (or before that backward's end) is
    overlapped. ``None`` when there is no ``comm`` event (an NCCL trace holds the
    collectives as GPU kernels instead)."""
    backs = [e for e in events if e["name"] == "backward"]
    syncs = [e for e in events if e["name"] == "grad_sync"]
    total = overlapped = 0.0
    for e in (e for e in events if e["name"] == comm):
        total += e["end"] - e["ts"]
        back = next((b for b in backs if b["ts"] <= e["ts"] < b["end"]), None)
        if back is None:
            continue
        cut = min((g["ts"] for g in syncs if back["ts"] <= g["ts"] < back["end"]),
                  default=back["end"])
        overlapped += max(0.0, min(e["end"], cut) - e["ts"])
    return overlapped / total if total > 0 else None
