"""Pipeline parallelism: consecutive blocks on consecutive ranks, microbatches flowing.

Rank ``s`` of ``p`` holds blocks ``[s L/p, (s+1) L/p)`` (a *stage*). The global batch is
cut into ``m`` microbatches; stage ``s`` receives a microbatch's activations from stage
``s - 1``, runs its blocks and sends the result to stage ``s + 1``; the last stage
computes the loss, and gradients with respect to the boundary activations travel back
the same way. Gradients of the ``m`` microbatches accumulate, so one optimiser step per
batch matches the one-process run (the loss of each microbatch is its mean, divided by
``m``).

* **GPipe** (Huang et al. 2019): every forward first, then every backward. With equal
  stages a stage is idle for ``p - 1`` of the ``m + p - 1`` slots of each phase: the
  *bubble* fraction ``(p - 1) / (m + p - 1)``, which falls as microbatches are added;
  the activations of all ``m`` microbatches are alive at the turn.
* **1F1B** (PipeDream, Narayanan et al. 2019, 2021): after ``p - s`` warm-up forwards
  each stage alternates one forward and one backward, the same bubble but at most ``p -
  s`` microbatches' activations alive.

Per step, a boundary carries the activations forward and their gradients back: buffer
bytes ``B dim`` elements each way, so a rank sends ``B dim`` elements (an end stage) or
``2 B dim`` (an inner one).

* :func:`naive` writes GPipe with ``dist.send`` / ``dist.recv`` and records how long
  each rank computes (:func:`bubble_study` turns that into the measured bubble);
* :func:`library` runs ``torch.distributed.pipelining``'s ``PipelineStage`` under
  ``ScheduleGPipe`` or ``Schedule1F1B`` (pytorch#132644 reports hangs of pipelining over
  gloo; the benchmark runs each schedule under a time limit and records one that fails).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .. import dist as hd
from .model import ModelConfig, batch, build_model, loss_fn, make_optimizer
from .tracking import Strategy, max_abs_diff

__all__ = ["SCHEDULES", "Stage", "bubble_formula", "bubble_study", "library", "naive",
           "stage_blocks"]

SCHEDULES = ("gpipe", "1f1b")


def stage_blocks(cfg: ModelConfig, world: hd.World) -> range:
    """The indices of the blocks that stage ``world.rank`` holds."""
    if cfg.n_blocks % world.size:
        raise ValueError(f"{cfg.n_blocks} blocks do not split into {world.size} stages")
    per = cfg.n_blocks // world.size
    return range(world.rank * per, (world.rank + 1) * per)


class Stage(nn.Module):
    """Consecutive blocks of the model; ``first`` is the index of the first of them."""

    def __init__(self, blocks: list[nn.Module], first: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.first = first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def param_diff(self, ref: dict[str, torch.Tensor]) -> float:
        """Largest difference from the same blocks of the full model ``ref``."""
        diffs = []
        for name, p in self.named_parameters():
            _, j, rest = name.split(".", 2)
            diffs.append(max_abs_diff(p, ref[f"blocks.{int(j) + self.first}.{rest}"]))
        return max(diffs)


def _stage(cfg: ModelConfig, world: hd.World) -> Stage:
    mine = stage_blocks(cfg, world)
    full = build_model(cfg, world.device)
    return Stage([full.blocks[j] for j in mine], mine.start)


def _microbatch(global_batch: int, m: int) -> int:
    if m < 1 or global_batch % m:
        raise ValueError(f"global batch {global_batch} does not split into {m} "
                         "microbatches")
    return global_batch // m


def _predicted(cfg: ModelConfig, global_batch: int, world: hd.World) -> int:
    boundary = global_batch * cfg.dim * 4  # fp32 activations (or their gradients)
    return 0 if world.size == 1 else boundary * (1 if world.size == 2 else 2)


def naive(world: hd.World, cfg: ModelConfig, global_batch: int,
          microbatches: int) -> Strategy:
    """GPipe by hand: all forwards (send activations on), then all backwards."""
    s, p, dev = world.rank, world.size, world.device
    m = microbatches
    mb = _microbatch(global_batch, m)
    stage = _stage(cfg, world)
    opt = make_optimizer(stage.parameters(), cfg)
    busy: list[float] = []  # seconds this rank computed, per step

    def step(i: int) -> float:
        x, y = batch(cfg, i, global_batch, device=dev)
        opt.zero_grad(set_to_none=True)
        saved: list[tuple[torch.Tensor, torch.Tensor]] = []
        computing = 0.0
        for j in range(m):  # forward of every microbatch
            rows = slice(j * mb, (j + 1) * mb)
            if s == 0:
                inp = x[rows]
            else:
                inp = torch.empty(mb, cfg.dim, device=dev)
                dist.recv(inp, s - 1)
                inp.requires_grad_()
            t0 = time.perf_counter()
            out = stage(inp)
            if s == p - 1:
                out = loss_fn(out, y[rows]) / m
            computing += time.perf_counter() - t0
            if s < p - 1:
                dist.send(out.detach(), s + 1)
            saved.append((inp, out))
        total = 0.0
        for inp, out in saved:  # backward of every microbatch, same order
            if s == p - 1:
                grad = None
                total += out.detach().item()
            else:
                grad = torch.empty_like(out)
                dist.recv(grad, s + 1)
            t0 = time.perf_counter()
            out.backward(grad)
            computing += time.perf_counter() - t0
            if s > 0:
                assert inp.grad is not None
                dist.send(inp.grad, s - 1)
        opt.step()
        busy.append(computing)
        return total

    return Strategy("pp_naive", step, stage.param_diff, (stage, opt),
                    predicted_comm_bytes=_predicted(cfg, global_batch, world),
                    extra={"microbatches": m, "schedule": "gpipe", "busy_s": busy})


def library(world: hd.World, cfg: ModelConfig, global_batch: int, microbatches: int,
            schedule: str = "gpipe") -> Strategy:
    """``torch.distributed.pipelining``: a ``PipelineStage`` per rank and a schedule."""
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, "
                         f"not {schedule!r}")
    s, p, dev = world.rank, world.size, world.device
    m = microbatches
    _microbatch(global_batch, m)
    stage = _stage(cfg, world)
    opt = make_optimizer(stage.parameters(), cfg)
    pipe_stage = PipelineStage(stage, s, p, dev)
    kind: Any = ScheduleGPipe if schedule == "gpipe" else Schedule1F1B
    # each microbatch's loss is its mean; scale_grads divides the summed gradients by m
    sched = kind(pipe_stage, n_microbatches=m, loss_fn=loss_fn, scale_grads=True)

    def step(i: int) -> float:
        x, y = batch(cfg, i, global_batch, device=dev)
        opt.zero_grad(set_to_none=True)
        losses: list[torch.Tensor] = []
        args = (x,) if s == 0 else ()
        if s == p - 1:
            sched.step(*args, target=y, losses=losses)
        else:
            sched.step(*args)
        opt.step()
        return sum(v.detach().item() for v in losses) / m

    name = "pp" if schedule == "gpipe" else "pp_1f1b"
    return Strategy(name, step, stage.param_diff, (stage, opt),
                    predicted_comm_bytes=_predicted(cfg, global_batch, world),
                    module_hooks=False,  # they break the stage's autograd.grad
                    extra={"microbatches": m, "schedule": schedule})


def bubble_formula(p: int, m: int) -> float:
    """GPipe's idle fraction with ``p`` equal stages and ``m`` microbatches."""
    return (p - 1) / (m + p - 1)


def bubble_study(world: hd.World, cfg: ModelConfig, global_batch: int,
                 microbatches: list[int], steps: int) -> list[dict[str, float]]:
    """Measured idle fraction ``1 - compute / step time`` of the hand-written GPipe.

    For each ``m``: ``steps`` steps after one warm-up; per step, the slowest rank's wall
    time and the mean over ranks of the time spent computing. The median step decides.
    """
    rows = []
    for m in microbatches:
        strat = naive(world, cfg, global_batch, m)
        walls, fracs = [], []
        for i in range(steps + 1):
            world.sync()
            dist.barrier()
            t0 = time.perf_counter()
            strat.step(i)
            world.sync()
            wall = hd.slowest(time.perf_counter() - t0)
            busy = hd.reduce_floats([strat.extra["busy_s"][-1]], "sum")[0] / world.size
            if i > 0:
                walls.append(wall)
                fracs.append(1.0 - busy / wall)
        order = sorted(range(len(walls)), key=walls.__getitem__)
        mid = order[len(order) // 2]
        rows.append({"microbatches": m, "step_s": walls[mid], "bubble": fracs[mid],
                     "formula": bubble_formula(world.size, m)})
    return rows
