"""One training job on N processes: throughput, time per epoch, loss per epoch (chapter 12).

Run under torchrun, one process per rank (gloo on CPU, NCCL on GPUs), or through
``scripts/slurm/torchrun.sbatch`` on N nodes x G GPUs:

    torchrun --standalone --nproc-per-node 2 scripts/bench/ddp_scaling.py \\
        --profile cpu --json
    ... --scaling weak    # only the run with the batch per rank fixed
    BENCH=ddp_scaling NPROC=1 sbatch -N 2 scripts/slurm/torchrun.sbatch --scaling strong

``--scaling strong,weak`` (the default) runs the job twice in one launch, once each way.
The job: the residual MLP blocks of :mod:`hpcai.parallel.model`, wrapped in
``DistributedDataParallel``, trained for ``epochs`` epochs on a fixed synthetic data set
of ``n_samples`` samples (made in memory from the seed; nothing is read from disk).
Each epoch a ``DistributedSampler`` (``set_epoch(epoch)`` first) deals every rank its
share of a fresh permutation; rank ``r`` trains on its ``b``-row slices of it.

* ``--scaling strong``: the global batch stays ``global_batch`` whatever the number of
  ranks (``b = global_batch / N``). The global batch of every step is then the same set
  of samples as in a one-process run, so the losses match it (``max_loss_diff`` against
  :func:`one_process_losses`, run in every rank's process before the job).
* ``--scaling weak``: every rank keeps ``b = global_batch``, the global batch is ``N``
  times larger, and the learning rate follows it (the linear rule, ``lr = N lr0``);
  an epoch has ``N`` times fewer steps.

Reported, one row of ``runs`` per scaling: ``epoch_s`` (each epoch's wall time, slowest rank), ``epoch_loss`` (the mean
training loss of the epoch over all ranks, one ``all_reduce`` per epoch), ``train_s``
(all epochs), ``samples_per_s`` (epochs after the first, which pays the warm-up),
``steps_per_epoch``, ``global_batch``, ``lr``. A watchdog ends a hung run
(:func:`hpcai.dist.run_ranks`). Only rank 0 prints.
"""

from __future__ import annotations

import time
from typing import Any

from hpcai import dist as hd
from hpcai.cli import bench_main

SIZES = {
    "smoke": {"dim": 32, "hidden": 128, "n_blocks": 2, "n_samples": 128,
              "global_batch": 32, "epochs": 2, "scaling": ["strong", "weak"], "lr": 0.05,
              "seed": 0, "hang_timeout_s": 120, "backend": "gloo"},
    "cpu": {"dim": 128, "hidden": 512, "n_blocks": 4, "n_samples": 2048,
            "global_batch": 32, "epochs": 4, "scaling": ["strong", "weak"], "lr": 0.05,
            "seed": 0, "hang_timeout_s": 300, "backend": "gloo"},
    "gpu": {"dim": 1024, "hidden": 4096, "n_blocks": 8, "n_samples": 65536,
            "global_batch": 256, "epochs": 4, "scaling": ["strong", "weak"], "lr": 0.05,
            "seed": 0, "hang_timeout_s": 300, "backend": "auto"},
}
SCALINGS = ("strong", "weak")


def dataset(cfg: Any, n: int, device: Any) -> tuple[Any, Any]:
    """The fixed data set: ``n`` samples of the model's seeded teacher."""
    from hpcai.parallel.model import batch

    return batch(cfg, 10_000, n, device=device)  # step 10,000: not a training batch


def global_batch(S: Any, world_size: int, scaling: str) -> int:
    """The global batch of a run: fixed (strong) or ``global_batch`` per rank (weak)."""
    return int(S.global_batch) * (world_size if scaling == "weak" else 1)


def one_process_losses(S: Any, cfg: Any, device: Any) -> list[float]:
    """The same epochs in one process on the same global batches: per-step losses."""
    import torch

    from hpcai.parallel.model import build_model, loss_fn, make_optimizer

    x, y = dataset(cfg, int(S.n_samples), device)
    net = build_model(cfg, device)
    opt = make_optimizer(net.parameters(), cfg)
    B, losses = int(S.global_batch), []
    for epoch in range(int(S.epochs)):
        g = torch.Generator().manual_seed(int(S.seed) + epoch)  # DistributedSampler's
        perm = torch.randperm(len(x), generator=g).tolist()
        for k in range(len(x) // B):
            idx = perm[k * B:(k + 1) * B]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def measure(S: Any, world: hd.World) -> dict[str, Any]:
    """Every rank: one run per entry of ``scaling``, in that order."""
    return {"runs": [train(S, world, str(sc)) for sc in S.scaling]}


def train(S: Any, world: hd.World, scaling: str) -> dict[str, Any]:
    """One training job (``strong`` or ``weak``) on every rank; the result's row."""
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.utils.data import DistributedSampler

    from hpcai.parallel.model import ModelConfig, build_model, loss_fn, make_optimizer

    n, B = int(S.n_samples), global_batch(S, world.size, scaling)
    b = B // world.size
    lr = float(S.lr) * (world.size if scaling == "weak" else 1)
    cfg = ModelConfig(dim=int(S.dim), hidden=int(S.hidden), n_blocks=int(S.n_blocks),
                      lr=lr)
    ref = (one_process_losses(S, ModelConfig(dim=cfg.dim, hidden=cfg.hidden,
                                             n_blocks=cfg.n_blocks, lr=float(S.lr)),
                              world.device)
           if scaling == "strong" else None)
    x, y = dataset(cfg, n, world.device)
    ids = [world.device.index] if world.device.type == "cuda" else None
    model = nn.parallel.DistributedDataParallel(build_model(cfg, world.device),
                                                device_ids=ids)
    opt = make_optimizer(model.parameters(), cfg)
    sampler = DistributedSampler(range(n), num_replicas=world.size, rank=world.rank,
                                 shuffle=True, seed=int(S.seed), drop_last=False)
    steps = n // B
    epoch_s, epoch_loss, step_losses = [], [], []
    for epoch in range(int(S.epochs)):
        sampler.set_epoch(epoch)
        mine = list(sampler)
        world.sync()
        dist.barrier()
        t0 = time.perf_counter()
        total = torch.zeros(1, dtype=torch.float64, device=world.device)
        for k in range(steps):
            idx = mine[k * b:(k + 1) * b]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()  # DDP: the bucketed all-reduce of the gradients
            opt.step()
            total += loss.detach()
            if ref is not None:
                step_losses.append(loss.detach())
        dist.all_reduce(total)  # the epoch's loss over every rank: one collective
        world.sync()
        epoch_s.append(time.perf_counter() - t0)
        epoch_loss.append(float(total.item()) / (steps * world.size))
    slow = hd.reduce_floats(epoch_s, "max")
    diff = None
    if ref is not None:  # the step's global loss: the mean of the ranks' losses
        glob = torch.stack(step_losses).to(torch.float64)
        dist.all_reduce(glob)
        diff = max(abs(a - r) for a, r in zip((glob / world.size).tolist(), ref))
    later = slow[1:] or slow
    return {"scaling": scaling, "world": world.size, "global_batch": B, "batch_per_rank": b,
            "lr": lr, "steps_per_epoch": steps, "epochs": int(S.epochs),
            "epoch_s": slow, "epoch_loss": epoch_loss, "train_s": sum(slow),
            "samples_per_s": n * len(later) / sum(later),
            "final_loss": epoch_loss[-1], "max_loss_diff": diff,
            "params": sum(p.numel() for p in model.parameters())}


def check_settings(S: Any) -> None:
    from hpcai.parallel.model import ModelConfig

    ModelConfig(dim=int(S.dim), hidden=int(S.hidden), n_blocks=int(S.n_blocks))
    if int(S.n_samples) % int(S.global_batch):
        raise ValueError(f"--n-samples {S.n_samples} is not a multiple of "
                         f"--global-batch {S.global_batch}")


def run(S: Any) -> dict[str, Any] | None:
    def check(world: hd.World) -> None:
        for scaling in S.scaling:
            B = global_batch(S, world.size, str(scaling))
            if B % world.size or int(S.n_samples) % B:
                raise ValueError(f"the {scaling} global batch {B} must split over the "
                                 f"{world.size} ranks and divide --n-samples "
                                 f"{S.n_samples}")
    return hd.run_ranks(lambda world: measure(S, world), backend=str(S.backend),
                        hang_timeout_s=float(S.hang_timeout_s), check_world=check)


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check_settings,
               choices={"backend": hd.BACKENDS, "scaling": SCALINGS})
