"""Data parallelism: every rank a full replica, its own shard of the batch.

Each of ``n`` ranks holds the whole model and takes rows ``[r b, (r + 1) b)`` of the
global batch of ``n b`` rows. The loss is a mean over rows, so the gradient of the
global batch is the mean of the ranks' gradients: after the backward pass an all-reduce
sums them and a division by ``n`` makes the mean, and every replica takes the same
optimiser step.

* :func:`naive` writes exactly that: one ``all_reduce`` per gradient tensor.
* :func:`ddp` lets ``torch.nn.parallel.DistributedDataParallel`` do it: gradients are
  packed into buckets (25 MiB by default) whose all-reduce is launched from autograd
  hooks while the backward pass goes on (Li et al. 2020, "PyTorch Distributed").

Either way the buffer bytes all-reduced per step are the parameter bytes ``P`` (one copy
of every gradient); a ring moves ``2 P (n-1)/n`` per rank.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from .. import dist as hd
from .model import ModelConfig, batch, build_model, loss_fn, make_optimizer, param_bytes
from .tracking import Strategy, max_abs_diff

__all__ = ["ddp", "naive", "replica_diff", "shard_rows"]


def shard_rows(global_batch: int, world: hd.World) -> slice:
    """The rows of the global batch that rank ``world.rank`` trains on."""
    if global_batch % world.size:
        raise ValueError(f"global batch {global_batch} is not divisible by "
                         f"{world.size} ranks")
    b = global_batch // world.size
    return slice(world.rank * b, (world.rank + 1) * b)


def replica_diff(net: nn.Module) -> Callable[[dict[str, torch.Tensor]], float]:
    """``param_diff`` of a rank holding every parameter of ``net`` (a full replica)."""
    def diff(ref: dict[str, torch.Tensor]) -> float:
        return max(max_abs_diff(p, ref[name]) for name, p in net.named_parameters())
    return diff


def naive(world: hd.World, cfg: ModelConfig, global_batch: int) -> Strategy:
    """Data parallel by hand: backward, then ``all_reduce`` each gradient and divide."""
    net = build_model(cfg, world.device)
    for p in net.parameters():  # replicas start equal (they do already: same seed)
        dist.broadcast(p.detach(), src=0)
    opt = make_optimizer(net.parameters(), cfg)
    rows = shard_rows(global_batch, world)

    def step(i: int) -> float:
        x, y = batch(cfg, i, global_batch, rows, world.device)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        for p in net.parameters():
            assert p.grad is not None
            dist.all_reduce(p.grad)  # sum of the ranks' gradients ...
            p.grad /= world.size  # ... into their mean
        opt.step()
        return loss.detach().item() / world.size

    return Strategy("dp_naive", step, replica_diff(net), (net, opt),
                    predicted_comm_bytes=param_bytes(net))


def ddp(world: hd.World, cfg: ModelConfig, global_batch: int) -> Strategy:
    """``DistributedDataParallel`` (gradients as views of its buckets)."""
    net = build_model(cfg, world.device)
    ids = [world.device.index] if world.device.type == "cuda" else None
    model = nn.parallel.DistributedDataParallel(net, device_ids=ids,
                                                gradient_as_bucket_view=True)
    opt = make_optimizer(model.parameters(), cfg)
    rows = shard_rows(global_batch, world)

    def step(i: int) -> float:
        x, y = batch(cfg, i, global_batch, rows, world.device)
        opt.zero_grad(set_to_none=False)  # keep the bucket views
        loss = loss_fn(model(x), y)
        loss.backward()  # bucketed all-reduce of the mean, overlapped with backward
        opt.step()
        return loss.detach().item() / world.size

    return Strategy("ddp", step, replica_diff(net), (model, opt),
                    predicted_comm_bytes=param_bytes(net))
