"""Data parallel by hand against ``DistributedDataParallel`` (chapter 12).

Run under torchrun, one process per rank (gloo on CPU, NCCL on GPUs):

    torchrun --standalone --nproc-per-node 2 scripts/bench/ddp.py --profile cpu --json
    ... --bucket-mb 4 --sweep-mb 1,4,25       # bucket cap of the rows; the sweep
    ... --trace /tmp/ddp-traces     # torch.profiler traces, one per impl and rank

(As a plain ``python`` program it runs in a world of one: the all-reduces then move
nothing, which checks the plumbing and nothing else.)

Three implementations train the same seeded MLP blocks of :mod:`hpcai.parallel.model`
on the same synthetic batches, each rank on its share of the global batch:

* ``torch``: ``torch.nn.parallel.DistributedDataParallel`` with ``bucket_cap_mb``;
* ``naive``: one all-reduce per gradient after backward
  (:func:`hpcai.parallel.ddp_hand.naive_sync`);
* ``bucketed``: buckets of ``bucket_mb`` MiB all-reduced from gradient hooks while the
  backward pass goes on (:class:`hpcai.parallel.ddp_hand.BucketedDDP`).

The three take their steps in turns (step ``i`` of each, in an order that rotates with
``i``), so a change of load on the machine falls on all of them alike. One row per impl:

* ``max_param_diff`` and ``max_loss_diff``: against the one-process run on the global
  batch (:func:`hpcai.parallel.model.reference_run`), fp32;
* ``step_median_s``, ``step_iqr_s``: over the ``steps`` steps after ``warmup``, each
  step's time the slowest rank's (:func:`hpcai.dist.slowest`);
* ``comm_bytes_per_step`` and ``n_allreduce_per_step``: counted from the collectives the
  last step issued (:class:`hpcai.parallel.tracking.CommCounter`).

``ratio_bucketed_over_torch`` is the bucketed median over the library's, same run.
``sweep`` repeats ``torch`` against ``bucketed`` for each cap of ``sweep_mb``. With
``--trace DIR`` each impl runs 4 more steps under ``torch.profiler`` (the last 2
recorded) and writes ``DIR/ddp_IMPL_rankR.json``. Each step is labelled ``forward``,
``backward``, ``optimizer`` (:data:`hpcai.trace.PHASES`); the hand-written impls'
gradient synchronisation is a ``grad_sync`` label inside ``backward`` (the naive
all-reduces; the bucketed wait), DDP's own wait is inside ``loss.backward()``. gloo's
all-reduces appear as ``gloo:all_reduce`` on gloo's worker threads. ``traces`` lists,
per rank, the files and ``overlap``: per impl, the share of the all-reduce time that
ran before the backward pass ended its computing
(:func:`hpcai.parallel.ddp_hand.overlap_fraction`; ``None`` without gloo events), for
``naive`` and ``bucketed`` (DDP waits inside ``loss.backward()``, which hides the cut).
A watchdog ends a hung run after ``hang_timeout_s`` (:func:`hpcai.dist.run_ranks`, the
frame of every distributed benchmark). Only rank 0 prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcai import dist as hd
from hpcai.cli import bench_main

if TYPE_CHECKING:  # torch is imported inside the functions: a refused value is fast
    from torch import nn

    from hpcai.parallel.model import ModelConfig, RunResult

IMPLS = ("torch", "naive", "bucketed")

SIZES = {
    "smoke": {"dim": 64, "hidden": 256, "n_blocks": 4, "global_batch": 32,
              "warmup": 2, "steps": 4, "bucket_mb": 0.25, "sweep_mb": [0.125, 1.0],
              "trace": "", "hang_timeout_s": 120, "backend": "gloo"},
    "cpu": {"dim": 256, "hidden": 1024, "n_blocks": 8, "global_batch": 64,
            "warmup": 3, "steps": 20, "bucket_mb": 4.0,
            "sweep_mb": [0.5, 1.0, 2.0, 4.0, 8.0, 25.0],
            "trace": "", "hang_timeout_s": 300, "backend": "gloo"},
    "gpu": {"dim": 1024, "hidden": 4096, "n_blocks": 8, "global_batch": 256,
            "warmup": 5, "steps": 30, "bucket_mb": 25.0,
            "sweep_mb": [1.0, 4.0, 16.0, 25.0, 64.0],
            "trace": "", "hang_timeout_s": 300, "backend": "auto"},
}

Step = Callable[[int], float]


def make_impl(name: str, world: hd.World, cfg: ModelConfig, global_batch: int,
              bucket_mb: float) -> tuple[Step, nn.Module]:
    """``step(i)`` (returns this rank's share of the global loss) and the replica."""
    from torch import nn
    from torch.profiler import record_function

    from hpcai.parallel.data import shard_rows
    from hpcai.parallel.ddp_hand import BucketedDDP, broadcast_params, naive_sync
    from hpcai.parallel.model import batch, build_model, loss_fn, make_optimizer

    net = build_model(cfg, world.device)
    rows = shard_rows(global_batch, world)
    model: nn.Module = net
    sync: Callable[[], object] = lambda: None  # noqa: E731
    if name == "torch":
        ids = [world.device.index] if world.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(net, device_ids=ids,
                                                    bucket_cap_mb=bucket_mb)
    elif name == "naive":
        broadcast_params(net)
        sync = lambda: naive_sync(net.parameters(), world.size)  # noqa: E731
    elif name == "bucketed":
        sync = BucketedDDP(net, bucket_mb).finish
    else:
        raise ValueError(f"unknown impl {name!r}; expected one of {IMPLS}")
    opt = make_optimizer(model.parameters(), cfg)

    def step(i: int) -> float:
        x, y = batch(cfg, i, global_batch, rows, world.device)
        opt.zero_grad(set_to_none=True)
        with record_function("forward"):
            loss = loss_fn(model(x), y)
        with record_function("backward"):
            loss.backward()
            with record_function("grad_sync"):
                sync()  # naive: every gradient; bucketed: wait for the buckets
        with record_function("optimizer"):
            opt.step()
        return loss.detach().item() / world.size

    return step, net


def race(impls: dict[str, tuple[Step, nn.Module]], world: hd.World, warmup: int,
         steps: int, ref: RunResult) -> list[dict[str, Any]]:
    """Train every impl ``warmup + steps + 1`` steps in turns; one row per impl."""
    import torch.distributed as dist

    from hpcai.measure import Timing
    from hpcai.parallel.data import replica_diff
    from hpcai.parallel.tracking import CommCounter

    names = list(impls)
    k = warmup + steps + 1
    times: dict[str, list[float]] = {n: [] for n in names}
    shares: dict[str, list[float]] = {n: [] for n in names}
    counters = {n: CommCounter() for n in names}
    for i in range(k):
        for j in range(len(names)):
            name = names[(i + j) % len(names)]  # rotate who goes first
            step = impls[name][0]
            world.sync()
            dist.barrier()
            if i == k - 1:  # the last step: count its collectives, do not time it
                with counters[name]:
                    shares[name].append(step(i))
                continue
            t0 = time.perf_counter()
            shares[name].append(step(i))
            world.sync()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    rows = []
    for name in names:
        slow = hd.reduce_floats(times[name], "max")  # each step: its slowest rank
        losses = hd.reduce_floats(shares[name], "sum")
        diff = hd.reduce_floats([replica_diff(impls[name][1])(ref.params)], "max")[0]
        t = Timing(slow)
        calls = counters[name].by_kind()
        rows.append({"impl": name, "max_param_diff": diff,
                     "max_loss_diff": max(abs(a - b) for a, b in zip(losses,
                                                                      ref.losses)),
                     "step_median_s": t.median, "step_iqr_s": t.iqr,
                     "step_min_s": t.min, "timed_steps": len(slow),
                     "comm_bytes_per_step": counters[name].bytes,
                     "n_allreduce_per_step": calls.get("allreduce", {}).get("calls", 0),
                     "calls": calls})
    return rows


def trace(S: Any, world: hd.World, cfg: ModelConfig,
          outdir: Path) -> dict[str, Any]:
    """Profile 2 steps (after 2 unrecorded) of each impl; one Chrome trace per rank.

    Returns this rank's trace paths and, per impl, the share of its all-reduce time
    that overlapped the backward pass (:func:`overlap_fraction`)."""
    import torch.distributed as dist
    from torch.profiler import ProfilerActivity, profile, schedule

    from hpcai.parallel.ddp_hand import overlap_fraction
    from hpcai.trace import trace_events

    acts = [ProfilerActivity.CPU]
    if world.device.type == "cuda":
        acts.append(ProfilerActivity.CUDA)
    outdir.mkdir(parents=True, exist_ok=True)
    paths, overlap = [], {}
    for name in IMPLS:
        step, _ = make_impl(name, world, cfg, int(S.global_batch), float(S.bucket_mb))
        with profile(activities=acts, schedule=schedule(wait=1, warmup=1, active=2)
                     ) as prof:
            for i in range(4):
                dist.barrier()
                step(i)
                world.sync()
                prof.step()
        path = outdir / f"ddp_{name}_rank{world.rank}.json"
        prof.export_chrome_trace(str(path))
        paths.append(str(path))
        if name != "torch":  # DDP waits inside loss.backward(): no label to cut at
            overlap[name] = overlap_fraction(trace_events(path))
    return {"rank": world.rank, "paths": paths, "overlap": overlap}


def check_settings(S: Any) -> None:
    from hpcai.parallel.model import ModelConfig

    ModelConfig(dim=int(S.dim), hidden=int(S.hidden), n_blocks=int(S.n_blocks))
    if int(S.steps) < 1:
        raise ValueError(f"--steps must be at least 1, got {S.steps}")


def check_world(S: Any) -> Callable[[hd.World], None]:
    """What must split over the ranks: the global batch."""
    def check(world: hd.World) -> None:
        if int(S.global_batch) % world.size:
            raise ValueError(f"--global-batch {S.global_batch} is not divisible by the "
                             f"{world.size} ranks")
    return check


def run(S: Any) -> dict[str, Any] | None:
    return hd.run_ranks(lambda world: measure(S, world), backend=str(S.backend),
                        hang_timeout_s=float(S.hang_timeout_s),
                        check_world=check_world(S))


def measure(S: Any, world: hd.World) -> dict[str, Any]:
    """Every rank: the race, the sweep, the traces; the result is rank 0's to print."""
    import torch
    import torch.distributed as dist

    from hpcai.parallel.ddp_hand import BucketedDDP
    from hpcai.parallel.model import (
        ModelConfig,
        build_model,
        param_bytes,
        reference_run,
    )

    cfg = ModelConfig(dim=int(S.dim), hidden=int(S.hidden), n_blocks=int(S.n_blocks))
    B, w, n = int(S.global_batch), int(S.warmup), int(S.steps)
    ref = reference_run(w + n + 1, B, cfg, world.device)
    mb = float(S.bucket_mb)
    rows = race({name: make_impl(name, world, cfg, B, mb) for name in IMPLS},
                world, w, n, ref)
    by = {r["impl"]: r for r in rows}
    sweep = []
    for cap in map(float, S.sweep_mb):
        pair = race({name: make_impl(name, world, cfg, B, cap)
                     for name in ("torch", "bucketed")}, world, w, n, ref)
        t, b = pair
        sweep.append({"bucket_mb": cap, "n_buckets": b["n_allreduce_per_step"],
                      "torch_n_allreduce": t["n_allreduce_per_step"],
                      "bucketed_step_median_s": b["step_median_s"],
                      "bucketed_step_iqr_s": b["step_iqr_s"],
                      "torch_step_median_s": t["step_median_s"],
                      "torch_step_iqr_s": t["step_iqr_s"],
                      "ratio_bucketed_over_torch":
                          b["step_median_s"] / t["step_median_s"],
                      "max_param_diff": max(b["max_param_diff"],
                                            t["max_param_diff"])})
    traced = trace(S, world, cfg, Path(str(S.trace))) if str(S.trace) else None
    traces: list[Any] = [None] * world.size
    if world.size > 1:  # every rank's paths and overlaps, on rank 0
        dist.all_gather_object(traces, traced)
    else:
        traces = [traced]
    buckets = BucketedDDP(build_model(cfg, world.device), mb).bucket_bytes
    full = build_model(cfg)
    return {"rows": rows, "impls": list(IMPLS), "sweep": sweep,
            "ratio_bucketed_over_torch":
                by["bucketed"]["step_median_s"] / by["torch"]["step_median_s"],
            "ratio_naive_over_torch":
                by["naive"]["step_median_s"] / by["torch"]["step_median_s"],
            "bucket_bytes": buckets, "n_buckets": len(buckets),
            "n_params": len(list(full.parameters())),
            "params": sum(p.numel() for p in full.parameters()),
            "param_bytes": param_bytes(full), "dtype": str(torch.float32),
            "reference_losses": ref.losses,
            "traces": [t for t in traces if t is not None],
            "max_param_diff": max(r["max_param_diff"] for r in rows)}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check_settings,
               choices={"backend": hd.BACKENDS})
