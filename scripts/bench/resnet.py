"""Training throughput of a small ResNet, one process or data parallel (chapter 10).

    python scripts/bench/resnet.py --profile cpu --json
    python scripts/bench/resnet.py --profile gpu --json          # on a CUDA GPU
    torchrun --standalone --nproc-per-node 2 scripts/bench/resnet.py --profile cpu --json

The model and images are :mod:`hpcai.resnet` (He et al. 2016, [he2016deep]). The
``global_batch`` is fixed and split over the ranks; with ``--lr-scale linear`` the SGD
learning rate is ``base_lr * global_batch / base_batch`` (Goyal et al. 2017,
[goyal2017accurate]). Under torchrun the model is wrapped in
``DistributedDataParallel`` (gloo on CPU, NCCL on GPUs, :func:`hpcai.dist.init`).

Reports ``samples_per_s`` (global: ``global_batch`` over the median step time, each
step the slowest rank's, over ``steps`` steps after ``warmup``) with ``sps_iqr``,
``step_times_s``, ``peak_bytes`` (``torch.cuda.max_memory_allocated`` on a GPU, else
``None``), ``final_loss``, ``world_size``, ``global_batch``, ``lr``, ``device`` and
``max_param_diff``: the parameters after the first ``check_steps`` steps against a
one-process run on the global batch (fp32). Later steps are timed but not compared: the
two runs add the same numbers in different orders (each rank's half batch, then the
all-reduce), and a few steps on, a rounding difference that flips one ReLU grows like any
difference in a chaotic system (ten steps turned 1e-7 into 5e-5 on an AVX-512 CPU). That
later gap is reported as ``final_param_diff``, not checked. The check is exact only with ``--norm group`` (the default):
GroupNorm's statistics are per sample, BatchNorm's per rank's shard. With
``--norm batch`` the diff is reported but not expected to be small. On a GPU the
clock is read after ``torch.cuda.synchronize``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from hpcai.cli import bench_main

SIZES = {
    "smoke": {"width": 8, "blocks": 1, "image": 16, "global_batch": 8, "warmup": 1,
              "steps": 3, "base_lr": 0.05, "base_batch": 8, "lr_scale": "linear",
              "norm": "group", "device": "cpu", "check": 1, "check_steps": 4},
    "cpu": {"width": 16, "blocks": 1, "image": 32, "global_batch": 32, "warmup": 2,
            "steps": 8, "base_lr": 0.05, "base_batch": 32, "lr_scale": "linear",
            "norm": "group", "device": "cpu", "check": 1, "check_steps": 4},
    "gpu": {"width": 64, "blocks": 2, "image": 32, "global_batch": 256, "warmup": 5,
            "steps": 30, "base_lr": 0.05, "base_batch": 32, "lr_scale": "linear",
            "norm": "group", "device": "auto", "check": 1, "check_steps": 4},
}


def check_settings(S: Any) -> None:
    if int(S.global_batch) < 1 or int(S.steps) < 1:
        raise ValueError("--global-batch and --steps must be at least 1")
    if int(S.check_steps) < 1:
        raise ValueError("--check-steps must be at least 1")
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun, before any work
    if int(S.global_batch) % world:
        raise ValueError(f"--global-batch {S.global_batch} is not divisible by the "
                         f"{world} ranks; choose a multiple of {world}")
    if str(S.device) == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda, but no CUDA GPU is available here; "
                             "use --device cpu or auto")


def train(S: Any, device: Any, rank: int, world: int, ddp: bool
          ) -> tuple[list[float], float, Any, list[Any]]:
    """Train ``warmup + steps`` steps; also return a copy of the parameters after the
    first ``check_steps``."""
    import torch

    from hpcai.resnet import build_resnet, synthetic_images

    B = int(S.global_batch)
    rows = B // world
    lr = float(S.base_lr) * (B / int(S.base_batch) if S.lr_scale == "linear" else 1.0)
    net = build_resnet(int(S.width), int(S.blocks), norm=str(S.norm)).to(device)
    model: Any = net
    if ddp:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    n = int(S.warmup) + int(S.steps)
    keep = min(int(S.check_steps), n)
    times, loss, kept = [], torch.zeros(()), []
    for i in range(n):
        x, y = synthetic_images(B, int(S.image), seed=1000 + i)
        x = x[rank * rows:(rank + 1) * rows].to(device)
        y = y[rank * rows:(rank + 1) * rows].to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= int(S.warmup):
            times.append(time.perf_counter() - t0)
        if i == keep - 1:
            kept = [p.detach().clone() for p in net.parameters()]
    return times, lr, (net, loss.detach()), kept


def run(S: Any) -> dict[str, Any] | None:
    import os

    import torch

    from hpcai import dist as hd

    torch.manual_seed(0)
    under_torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    want = str(S.device)
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but no CUDA GPU is available")
    world = hd.init("nccl" if want == "cuda" else "gloo") if under_torchrun else None
    size = world.size if world else 1
    rank = world.rank if world else 0
    if int(S.global_batch) % size:
        raise SystemExit(f"error: --global-batch {S.global_batch} not divisible by "
                         f"{size} ranks")
    device = world.device if world else torch.device(want)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, lr, (net, loss), kept = train(S, device, rank, size, world is not None)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    if world:
        times = hd.reduce_floats(times, "max")
        loss_t = loss.reshape(1).clone()
        torch.distributed.all_reduce(loss_t)
        final = float(loss_t) / size
    else:
        final = float(loss)
    diff = final_diff = None
    if int(S.check) and rank == 0:
        _, _, (ref, _), ref_kept = train(S, device, 0, 1, False)
        diff = max(float((a - b).abs().max()) for a, b in zip(kept, ref_kept))
        final_diff = max(float((a - b).detach().abs().max()) for a, b in
                         zip(net.parameters(), ref.parameters()))
    if world:
        hd.teardown()
        if rank != 0:
            return None
    med = statistics.median(times)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [med, med, med]
    B = int(S.global_batch)
    return {"samples_per_s": B / med, "sps_iqr": B / q[0] - B / q[2],
            "step_median_s": med, "step_times_s": times, "peak_bytes": peak,
            "device": str(device), "final_loss": final, "world_size": size,
            "global_batch": B, "lr": lr, "max_param_diff": diff,
            "check_steps": min(int(S.check_steps), int(S.warmup) + int(S.steps)),
            "final_param_diff": final_diff,
            "params": sum(p.numel() for p in net.parameters()), "norm": str(S.norm)}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check_settings,
               choices={"lr_scale": ("linear", "none"), "norm": ("batch", "group"),
                        "device": ("cpu", "cuda", "auto")})
