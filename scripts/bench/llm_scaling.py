"""A small LLaMA trained with DDP and with FSDP2 on N processes (chapter 15): tokens/s
per process and in total, peak memory per process, and the loss against one process.

Run under torchrun, one process per rank (gloo on CPU, NCCL on GPUs), or through
``scripts/slurm/torchrun.sbatch`` on N nodes:

    torchrun --standalone --nproc-per-node 2 scripts/bench/llm_scaling.py \\
        --profile cpu --json
    BENCH=llm_scaling NPROC=1 sbatch -N 2 scripts/slurm/torchrun.sbatch

(As a plain ``python`` program it runs in a world of one: the baseline of the
efficiency.) The model and data are :mod:`hpcai.llm_train`'s: ``LlamaForCausalLM``
from a small config with SDPA attention, seeded synthetic tokens. Every rank keeps
``batch_per_rank`` sequences (the reference's way of scaling: the batch per GPU
fixed), so the global batch of step ``i`` is ``N * batch_per_rank`` sequences, and
rank ``r`` trains on its slice ``r`` of it.

For each of ``strategies``:

* ``ddp``: ``DistributedDataParallel`` (every rank holds the whole model, gradients
  averaged by a bucketed all-reduce);
* ``fsdp``: FSDP2 ``fully_shard`` on every decoder layer and on the whole model
  (ZeRO-3: parameters, gradients and AdamW's state sharded, parameters all-gathered
  per layer when needed).

A row of ``runs`` holds ``tokens_per_s`` (all ranks, ``global_batch * seq`` over the
median of the slowest rank's step times after ``warmup`` steps),
``tokens_per_s_per_process``, ``median_s``, ``iqr_s``, ``peak_bytes_per_process`` (MemTracker's peak of the first
step on a CPU, ``torch.cuda.max_memory_allocated`` on a GPU; the largest over ranks),
``losses`` (the global loss of every step, the mean of the ranks' losses) and
``max_loss_diff`` against one process trained on the same global batches
(:func:`one_process_losses`, run in every rank's process first). Only rank 0 prints.
"""

from __future__ import annotations

import os
import time
from typing import Any

from hpcai import dist as hd
from hpcai.cli import bench_main

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SIZES = {
    "smoke": {"strategies": ["ddp", "fsdp"], "hidden": 64, "layers": 2, "heads": 2,
              "vocab": 512, "seq": 64, "batch_per_rank": 2, "warmup": 1, "steps": 3,
              "lr": 3e-4, "seed": 0, "hang_timeout_s": 120, "backend": "gloo"},
    # wide and short: the persistent state (16 bytes per parameter with AdamW in fp32)
    # outweighs the activations, as in a large model, so that sharding it shows
    "cpu": {"strategies": ["ddp", "fsdp"], "hidden": 256, "layers": 4, "heads": 4,
            "vocab": 2048, "seq": 64, "batch_per_rank": 2, "warmup": 2, "steps": 6,
            "lr": 3e-4, "seed": 0, "hang_timeout_s": 300, "backend": "gloo"},
    "gpu": {"strategies": ["ddp", "fsdp"], "hidden": 2048, "layers": 16, "heads": 32,
            "vocab": 32000, "seq": 1024, "batch_per_rank": 4, "warmup": 3, "steps": 10,
            "lr": 3e-4, "seed": 0, "hang_timeout_s": 600, "backend": "auto"},
}
SIZES["cluster"] = SIZES["cpu"]
STRATEGIES = ("ddp", "fsdp")


def check(S: Any) -> None:
    if int(S.hidden) % int(S.heads):
        raise ValueError(f"--hidden {S.hidden} must be a multiple of --heads {S.heads}")


def one_process_losses(S: Any, cfg: Any, world_size: int, device: Any) -> list[float]:
    """The same steps in one process on the whole global batch: the loss of each."""
    from hpcai.llm_train import build_model, make_adamw, make_step, token_batch

    model = build_model(cfg, device, int(S.seed))
    opt, _ = make_adamw(model.parameters(), "default", float(S.lr))
    step = make_step(model, opt, "fp32", device.type)
    B = world_size * int(S.batch_per_rank)
    return [float(step(token_batch(i, B, int(S.seq), int(S.vocab), device,
                                   int(S.seed))))
            for i in range(int(S.warmup) + int(S.steps))]


def wrap(strategy: str, model: Any, world: hd.World) -> Any:
    """``model`` under DDP, or sharded by FSDP2 per decoder layer and as a whole."""
    from torch import nn

    if strategy == "ddp":
        ids = [world.device.index] if world.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                   gradient_as_bucket_view=True)
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def train(S: Any, world: hd.World, strategy: str, ref: list[float]) -> dict[str, Any]:
    """One strategy on every rank; rank 0's row of ``runs``."""
    import torch
    import torch.distributed as dist

    from hpcai.llm_train import build_model, llama_config, make_adamw, quartiles
    from hpcai.llm_train import token_batch as tokens_of
    from hpcai.parallel.tracking import measure_peak

    cfg = llama_config(int(S.hidden), int(S.layers), int(S.heads), int(S.vocab),
                       int(S.seq), "sdpa")
    b, T, n = int(S.batch_per_rank), int(S.seq), world.size
    model = wrap(strategy, build_model(cfg, world.device, int(S.seed)), world)
    opt, _ = make_adamw(model.parameters(), "default", float(S.lr))
    cuda = world.device.type == "cuda"

    def step(i: int) -> Any:
        tokens = tokens_of(i, n * b, T, int(S.vocab), world.device, int(S.seed))
        mine = tokens[world.rank * b:(world.rank + 1) * b]
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=mine, labels=mine).loss
        loss.backward()  # DDP: all-reduce; FSDP2: reduce-scatter of the gradients
        opt.step()
        return loss.detach()

    losses = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        losses.append(step(0))
        torch.cuda.synchronize()
        peak = int(torch.cuda.max_memory_allocated())
    else:
        loss, snap = measure_peak(lambda: step(0), model, opt)
        losses.append(loss)
        peak = int(snap["Total"])
    times = []
    for i in range(1, int(S.warmup) + int(S.steps)):
        world.sync()
        t0 = time.perf_counter()
        losses.append(step(i))
        world.sync()
        if i > int(S.warmup) - 1:
            times.append(time.perf_counter() - t0)
    glob = torch.stack(losses).to(torch.float64)
    dist.all_reduce(glob)  # the global loss of a step: the mean of the ranks' losses
    glob = (glob / n).tolist()
    slow = hd.reduce_floats(times, "max")
    q1, med, q3 = quartiles(slow)
    return {"strategy": strategy, "world": n, "batch_per_rank": b,
            "global_batch": n * b, "seq": T, "median_s": med, "iqr_s": q3 - q1,
            "times_s": slow, "tokens_per_s": n * b * T / med,
            "tokens_per_s_per_process": b * T / med,
            "peak_bytes_per_process": int(hd.reduce_floats([peak], "max")[0]),
            "losses": glob, "max_loss_diff": max(abs(a - r) for a, r in zip(glob, ref)),
            "params": sum(p.numel() for p in model.parameters())}


def measure(S: Any, world: hd.World) -> dict[str, Any]:
    """Every rank: the one-process reference, then each strategy."""
    from hpcai.llm_train import llama_config

    cfg = llama_config(int(S.hidden), int(S.layers), int(S.heads), int(S.vocab),
                       int(S.seq), "sdpa")
    ref = one_process_losses(S, cfg, world.size, world.device)
    runs = [train(S, world, str(s), ref) for s in S.strategies]
    return {"runs": runs, "reference_losses": ref}


def run(S: Any) -> dict[str, Any] | None:
    return hd.run_ranks(lambda world: measure(S, world), backend=str(S.backend),
                        hang_timeout_s=float(S.hang_timeout_s))


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check,
               choices={"backend": hd.BACKENDS, "strategies": STRATEGIES})
