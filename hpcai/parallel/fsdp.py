"""Sharded data parallelism: ZeRO-3 and a ZeRO-2-like setting, FSDP2 ``fully_shard``.

Data parallelism keeps ``n`` copies of the parameters, gradients and optimiser state.
ZeRO (Rajbhandari et al. 2020) keeps one: each rank owns ``1/n`` of every tensor (here
dim-0 shards, ``Shard(0)`` DTensors) and the rest is fetched when needed.

* **ZeRO-3** (``reshard_after_forward=True``): a block's parameters are all-gathered
  just before its forward, freed after it, all-gathered again for its backward; the
  gradients are reduce-scattered, so each rank receives the mean of its own shard and
  updates only that shard (and only its shard of the optimiser state). Per step and
  rank: buffer bytes ``3 P`` (two all-gathers and one reduce-scatter of the full
  parameter size ``P``), wire bytes ``3 P (n-1)/n``: 1.5 times data parallelism's ``2 P
  (n-1)/n``.
* **ZeRO-2-like** (``reshard_after_forward=False``): the parameters gathered for the
  forward stay until the backward is done, so there is one all-gather, ``2 P`` of buffer
  bytes, the traffic of data parallelism; the memory saved is that of gradients and
  optimiser state, not of parameters during the step (ZeRO-2 proper keeps the parameters
  replicated and all-gathers the updated ones after the step; the bytes are the same).

Every block is its own FSDP unit (one all-gather per block, so at most about one block
is unsharded at a time under ZeRO-3), and so is the whole model, as FSDP2 asks.
"""

from __future__ import annotations

import torch
from torch.distributed.fsdp import fully_shard

from .. import dist as hd
from .data import shard_rows
from .model import ModelConfig, batch, build_model, loss_fn, make_optimizer, param_bytes
from .tracking import Strategy, max_abs_diff

__all__ = ["fsdp"]


def fsdp(world: hd.World, cfg: ModelConfig, global_batch: int,
         reshard_after_forward: bool = True) -> Strategy:
    """FSDP2: ZeRO-3 with ``reshard_after_forward=True``, ZeRO-2-like with ``False``."""
    net = build_model(cfg, world.device)
    full_bytes = param_bytes(net)
    for block in net.blocks:
        fully_shard(block, reshard_after_forward=reshard_after_forward)
    fully_shard(net, reshard_after_forward=reshard_after_forward)
    opt = make_optimizer(net.parameters(), cfg)  # over the shards: 1/n of the state
    rows = shard_rows(global_batch, world)

    def step(i: int) -> float:
        x, y = batch(cfg, i, global_batch, rows, world.device)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()  # reduce-scatter: each rank gets the mean gradient of its shard
        opt.step()
        return loss.detach().item() / world.size

    def param_diff(ref: dict[str, torch.Tensor]) -> float:
        return max(max_abs_diff(p.full_tensor(), ref[name])  # type: ignore[operator]
                   for name, p in net.named_parameters())

    name = "fsdp" if reshard_after_forward else "zero2"
    gathers = 2 if reshard_after_forward else 1
    return Strategy(name, step, param_diff, (net, opt),
                    # (in a world of one FSDP2 issues no collective at all)
                    predicted_comm_bytes=(gathers + 1) * full_bytes * (world.size > 1),
                    extra={"sharded_param_bytes": param_bytes(net)})
