"""Tensor parallelism: each block's matrices split across ranks (Megatron-LM's MLP).

Megatron-LM (Shoeybi et al. 2019) splits the MLP ``fc2(tanh(fc1(x)))`` of a transformer
layer so that it needs one all-reduce in the forward pass and one in the backward pass:

* ``fc1`` is split **column-wise** (by output feature): rank ``r`` holds rows ``[r h/n,
  (r+1) h/n)`` of its weight and bias and computes its slice of the hidden activations
  from the whole input, with no communication (tanh acts element-wise);
* ``fc2`` is split **row-wise** (by input feature): rank ``r`` multiplies its hidden
  slice by its columns of the weight, giving a *partial* sum of the output; an
  all-reduce (the paper's operator ``g``) adds the partial sums, and the bias is added
  once, after it.

In the backward pass the gradient with respect to the block input is again a sum of
per-rank parts: the paper's operator ``f`` (identity forward, all-reduce backward).
Every rank sees the whole batch; what is split is the weights, so parameter, gradient
and optimiser memory fall by ``n`` while activations of the block's input and output are
replicated (sequence parallelism, Korthikanti et al. 2022, shards those as well).

Per step and rank: an all-reduce of the block output ``(B, dim)`` for every block in the
forward pass, and one of the input gradient for every block but the first (the data
needs no gradient), so buffer bytes ``(2 L - 1) B dim`` elements for ``L`` blocks.

* :func:`naive` writes ``f`` and ``g`` as two autograd functions around
  ``dist.all_reduce``.
* :func:`dtensor` asks ``parallelize_module`` with ``ColwiseParallel`` and
  ``RowwiseParallel`` for the same plan; the weights become ``Shard`` DTensors.
* :func:`dtensor_attention` does the same for transformer blocks: attention heads split
  across ranks (``q``, ``k``, ``v`` column-wise, ``o`` row-wise: Megatron's attention),
  two all-reduces forward and two backward per block, and optionally sequence
  parallelism (Korthikanti et al. 2022), which shards the layer norms and the residual
  stream along the sequence and replaces each all-reduce by a reduce-scatter and an
  all-gather.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .. import dist as hd
from .model import Block, ModelConfig, batch, build_model, loss_fn, make_optimizer
from .tracking import Strategy, max_abs_diff

__all__ = ["CopyToParallel", "ReduceFromParallel", "TPBlock", "dtensor", "naive"]


class CopyToParallel(torch.autograd.Function):
    """Megatron's ``f``: identity forward, all-reduce of the gradient backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


class ReduceFromParallel(torch.autograd.Function):
    """Megatron's ``g``: all-reduce of the partial sums forward, identity backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous().clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


class TPBlock(nn.Module):
    """Rank ``rank``'s part of a :class:`~.model.Block` split ``n`` ways."""

    def __init__(self, full: Block, rank: int, n: int) -> None:
        super().__init__()
        hidden = full.fc1.out_features
        if hidden % n:
            raise ValueError(f"hidden size {hidden} is not divisible by {n} ranks")
        self.cols = slice(rank * hidden // n, (rank + 1) * hidden // n)
        self.w1 = nn.Parameter(full.fc1.weight.detach()[self.cols].clone())
        self.b1 = nn.Parameter(full.fc1.bias.detach()[self.cols].clone())
        self.w2 = nn.Parameter(full.fc2.weight.detach()[:, self.cols].clone())
        self.b2 = nn.Parameter(full.fc2.bias.detach().clone())  # replicated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(F.linear(CopyToParallel.apply(x), self.w1, self.b1))
        return x + ReduceFromParallel.apply(F.linear(h, self.w2)) + self.b2

    def shard_of(self, prefix: str,
                 ref: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's slices of the full parameters ``ref`` of block ``prefix``."""
        return {"w1": ref[f"{prefix}.fc1.weight"][self.cols],
                "b1": ref[f"{prefix}.fc1.bias"][self.cols],
                "w2": ref[f"{prefix}.fc2.weight"][:, self.cols],
                "b2": ref[f"{prefix}.fc2.bias"]}


def _predicted(cfg: ModelConfig, global_batch: int) -> int:
    return (2 * cfg.n_blocks - 1) * global_batch * cfg.dim * 4  # fp32 activations


def naive(world: hd.World, cfg: ModelConfig, global_batch: int) -> Strategy:
    """Column- then row-parallel blocks written by hand around ``dist.all_reduce``."""
    full = build_model(cfg, world.device)
    blocks = nn.ModuleList(
        TPBlock(b, world.rank, world.size)  # type: ignore[arg-type]
        for b in full.blocks)
    opt = make_optimizer(blocks.parameters(), cfg)

    def step(i: int) -> float:
        x, y = batch(cfg, i, global_batch, device=world.device)  # the whole batch
        opt.zero_grad(set_to_none=True)
        for block in blocks:
            x = block(x)
        loss = loss_fn(x, y)
        loss.backward()
        opt.step()
        # the same loss on every rank: count it once
        return loss.detach().item() if world.is_root else 0.0

    def param_diff(ref: dict[str, torch.Tensor]) -> float:
        diffs = []
        for j, block in enumerate(blocks):
            want = block.shard_of(f"blocks.{j}", ref)  # type: ignore[operator]
            diffs += [max_abs_diff(p, want[name])
                      for name, p in block.named_parameters()]
        return max(diffs)

    return Strategy("tp_naive", step, param_diff, (blocks, opt),
                    predicted_comm_bytes=_predicted(cfg, global_batch))


def dtensor(world: hd.World, cfg: ModelConfig, global_batch: int) -> Strategy:
    """``parallelize_module``: ``ColwiseParallel`` fc1, ``RowwiseParallel`` fc2."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    mesh = init_device_mesh(world.device.type, (world.size,))
    net = build_model(cfg, world.device)
    for block in net.blocks:
        plan = {"fc1": ColwiseParallel(), "fc2": RowwiseParallel()}
        parallelize_module(block, mesh, plan)
    opt = make_optimizer(net.parameters(), cfg)

    def step(i: int) -> float:
        x, y = batch(cfg, i, global_batch, device=world.device)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss.detach().item() if world.is_root else 0.0

    def param_diff(ref: dict[str, torch.Tensor]) -> float:
        return max(max_abs_diff(p.full_tensor(), ref[name])  # type: ignore[operator]
                   for name, p in net.named_parameters())

    # in a world of one DTensor has nothing to reduce and issues no collective
    return Strategy("tp", step, param_diff, (net, opt),
                    predicted_comm_bytes=_predicted(cfg, global_batch)
                    * (world.size > 1))


def _attention_plan(sequence_parallel: bool) -> dict[str, Any]:
    """Megatron's plan for a transformer block, optionally with sequence parallelism."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
    )

    # Each half (attention, MLP) takes its input as one replicated DTensor, so that the
    # backward pass all-reduces its input gradient once, not once per q, k and v.
    outside = Shard(1) if sequence_parallel else Replicate()
    plan: dict[str, Any] = {}
    for half, cols, row in (("attn", ("q", "k", "v"), "o"), ("mlp", ("fc1",), "fc2")):
        plan[half] = PrepareModuleInput(input_layouts=(outside,),
                                        desired_input_layouts=(Replicate(),),
                                        use_local_output=False)
        plan.update({f"{half}.{c}": ColwiseParallel() for c in cols})
        plan[f"{half}.{row}"] = RowwiseParallel(output_layouts=outside)
    if sequence_parallel:  # norms (and residual adds) on the local sequence shard
        plan.update({"norm1": SequenceParallel(), "norm2": SequenceParallel()})
    return plan


def dtensor_attention(world: hd.World, cfg: ModelConfig, global_batch: int,
                      sequence_parallel: bool = False) -> Strategy:
    """Transformer blocks (``cfg.seq > 0``) under DTensor tensor parallelism: heads
    split across ranks (q, k, v column-wise, o row-wise), the MLP as
    :func:`dtensor` splits it.

    With ``sequence_parallel`` (Korthikanti et al. 2022) the layer norms and residual
    stream hold only this rank's ``seq / n`` positions: each all-reduce becomes a
    reduce-scatter (leaving a half) and an all-gather (entering the next), the same
    wire bytes, and the activations outside the halves are no longer replicated; the
    norms' weights are replicated DTensors whose gradients are all-reduced.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import parallelize_module

    if not cfg.seq:
        raise ValueError("dtensor_attention needs a transformer config (cfg.seq > 0)")
    if cfg.heads % world.size or cfg.seq % world.size:
        raise ValueError(f"{cfg.heads} heads and {cfg.seq} positions must split "
                         f"over {world.size} ranks")
    mesh = init_device_mesh(world.device.type, (world.size,))
    net = build_model(cfg, world.device)
    for block in net.blocks:
        parallelize_module(block, mesh, _attention_plan(sequence_parallel))
    opt = make_optimizer(net.parameters(), cfg)
    n = world.size
    part = cfg.seq // n
    positions = slice(world.rank * part, (world.rank + 1) * part)

    def step(i: int) -> float:
        x, y = batch(cfg, i, global_batch, device=world.device)
        if sequence_parallel:  # this rank's positions of every sequence
            x, y = x[:, positions].contiguous(), y[:, positions]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        # with sequence parallelism each rank has the mean over its own positions, and
        # the mean over all positions is the mean of the ranks' means
        share = loss / n if sequence_parallel else loss
        share.backward()
        opt.step()
        if sequence_parallel:
            return share.detach().item()
        return loss.detach().item() if world.is_root else 0.0  # counted once

    def param_diff(ref: dict[str, torch.Tensor]) -> float:
        return max(max_abs_diff(_full(p), ref[name])
                   for name, p in net.named_parameters())

    # per block and step: 2 all-reduces forward (attention out, MLP out), 2 backward
    # (their input gradients); sequence parallel turns each into a reduce-scatter and an
    # all-gather of the same full size (twice the buffer bytes, the same wire bytes) and
    # all-reduces the gradients of the norms (weight and bias of two, per block)
    act = global_batch * cfg.seq * cfg.dim * 4
    predicted = 4 * cfg.n_blocks * act
    if sequence_parallel:
        predicted = 2 * predicted + cfg.n_blocks * 4 * cfg.dim * 4
    predicted *= n > 1
    return Strategy("tp_sp" if sequence_parallel else "tp_attn", step, param_diff,
                    (net, opt), predicted_comm_bytes=predicted,
                    extra={"seq": cfg.seq, "heads": cfg.heads})


def _full(p: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a DTensor parameter (a collective), or ``p`` itself."""
    from torch.distributed.tensor import DTensor

    return p.full_tensor() if isinstance(p, DTensor) else p
