"""Training on PNG-encoded images with a DataLoader (chapter 11): the input pipeline and
the largest batch that fits.

    python scripts/bench/train_images.py --profile cpu --json
    python scripts/bench/train_images.py --profile cpu --json --model heavy
    python scripts/bench/train_images.py --profile cpu --json --mode maxbatch
    BENCH=train_images sbatch scripts/slurm/bench.sbatch --model heavy   # SLURM

The data set is :class:`hpcai.pipeline.EncodedImages`: PNG bytes in memory, decoded and
augmented in every ``__getitem__``. ``--model light`` is a linear classifier (almost no
compute per sample, so the loader sets the pace; on a CPU it runs on one thread, which is all
one small product can use); ``--model heavy`` is the ResNet of
:mod:`hpcai.resnet` (GroupNorm), whose compute dwarfs the decoding.

``--mode sweep`` (the default) measures, in this order:

* ``loader_rate``: samples/s of the DataLoader alone, ``num_workers=0``, no model
  (median of three epochs after a warm-up);
* ``model_rate``: samples/s of the training step alone, on those batches kept in memory
  (median of at least three passes after a warm-up, and of enough to fill 0.1 s);
* one row per ``--workers`` value: a DataLoader with that many persistent worker
  processes feeds the training step for ``epochs`` epochs; each epoch's samples/s counts
  the whole epoch; the first epoch, which also starts the workers, is the warm-up and is
  excluded from ``samples_per_s`` (the median of the others); beside it ``predicted``,
  from :func:`hpcai.pipeline.predict_throughput`. Every row trains the same model from
  the same seed on the same samples in the same order, so ``final_loss`` agrees.

``--mode maxbatch`` finds the largest batch that fits
(:func:`hpcai.pipeline.largest_batch`): on a GPU, a training step that does not raise
``torch.cuda.OutOfMemoryError``; on a CPU, which does not fail but swaps, a MemTracker
peak of one step within ``--budget-mib``.

Memory: ``peak_bytes`` is MemTracker's peak over one training step on a CPU (tensors
that PyTorch allocated: parameters, gradients, optimiser state, activations,
temporaries; not the interpreter, the libraries or the encoded data set) and
``torch.cuda.max_memory_allocated`` on a GPU; ``rss_max_bytes`` is the main process's
high-water resident memory since it started (``getrusage``; it never goes down, and the
workers' memory is not in it). One JSON line per run with ``--json``.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from typing import Any

from hpcai.cli import bench_main

SIZES = {
    "smoke": {"mode": "sweep", "model": "light", "n_images": 128, "image": 32,
              "batch": 32, "epochs": 2, "workers": [0, 2], "width": 8, "blocks": 1,
              "lr": 0.01, "device": "cpu", "budget_mib": 16, "batch_limit": 4096},
    "cpu": {"mode": "sweep", "model": "light", "n_images": 768, "image": 32,
            "batch": 32, "epochs": 3, "workers": [0, 1, 2], "width": 16, "blocks": 1,
            "lr": 0.01, "device": "cpu", "budget_mib": 64, "batch_limit": 4096},
    "gpu": {"mode": "sweep", "model": "light", "n_images": 8192, "image": 64,
            "batch": 256, "epochs": 3, "workers": [0, 1, 2, 4, 8], "width": 64,
            "blocks": 2, "lr": 0.01, "device": "auto", "budget_mib": 65536,
            "batch_limit": 1 << 16},
}
CHOICES = {"mode": ("sweep", "maxbatch"), "model": ("light", "heavy"),
           "device": ("auto", "cpu", "cuda")}


def check(S: Any) -> None:
    if min(S.workers) < 0:
        raise ValueError("--workers must be integers >= 0")
    if int(S.epochs) < 2:
        raise ValueError("--epochs must be at least 2 (the first is the warm-up)")
    if int(S.image) < 8:
        raise ValueError("--image must be at least 8 pixels")
    if int(S.batch) > int(S.n_images):
        raise ValueError(f"--batch {S.batch} is larger than --n-images {S.n_images}")
    if str(S.device) == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda, but no CUDA GPU is available here; "
                             "use --device cpu or auto")


def build_model(S: Any, device: Any) -> Any:
    import torch

    from hpcai.resnet import build_resnet

    torch.manual_seed(0)
    if S.model == "light":
        net = torch.nn.Sequential(torch.nn.Flatten(),
                                  torch.nn.Linear(3 * int(S.image) ** 2, 10))
    else:
        net = build_resnet(int(S.width), int(S.blocks), norm="group")
    return net.to(device)


def make_step(net: Any, lr: float) -> Any:
    import torch

    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)

    def step(x: Any, y: Any) -> Any:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return step, opt


def step_peak(S: Any, device: Any, batch: int) -> int:
    """Peak bytes of one training step at ``batch`` (MemTracker on a CPU)."""
    import torch

    from hpcai.parallel.tracking import measure_peak

    net = build_model(S, device)
    step, opt = make_step(net, float(S.lr))
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 3, int(S.image), int(S.image), generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        step(x, y)
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))
    _, snap = measure_peak(lambda: step(x, y), net, opt, x, y)
    return int(snap["Total"])


def rss_max_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


def loader(data: Any, S: Any, workers: int, device: Any) -> Any:
    import torch

    # the order comes from the sampler's own generator: the loader also draws worker
    # seeds from its generator, once per iterator, and persistent workers make one
    gen = torch.Generator().manual_seed(0)
    order = torch.utils.data.RandomSampler(data, generator=gen)
    return torch.utils.data.DataLoader(
        data, batch_size=int(S.batch), sampler=order, num_workers=workers,
        drop_last=True, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0)


def sweep(S: Any, device: Any) -> dict[str, Any]:
    import torch

    from hpcai.pipeline import EncodedImages, predict_throughput

    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    t0 = time.perf_counter()
    data = EncodedImages(int(S.n_images), int(S.image), seed=0)
    build_s = time.perf_counter() - t0
    n_used = (len(data) // int(S.batch)) * int(S.batch)

    # the loader alone: one process decodes, augments and collates; epoch 0 warms up,
    # the median of the next three is the rate
    batches: list[Any] = []
    load_s: list[float] = []
    for epoch in range(4):
        data.set_epoch(epoch)
        t0 = time.perf_counter()
        batches = list(loader(data, S, 0, device))
        if epoch > 0:
            load_s.append(time.perf_counter() - t0)
    loader_rate = n_used / statistics.median(load_s)

    # the model alone, on those batches already in memory (one warm-up pass)
    net = build_model(S, device)
    step, opt = make_step(net, float(S.lr))
    dev_batches = [(x.to(device), y.to(device)) for x, y in batches]
    # a pass of the light model lasts well under a millisecond: one pass read once is
    # at the mercy of the scheduler, so take the median of at least three passes, and of
    # as many as fill a tenth of a second
    pass_s: list[float] = []
    spent = 0.0
    for i in range(1000):
        sync()
        t0 = time.perf_counter()
        for x, y in dev_batches:
            step(x, y)
        sync()
        dt = time.perf_counter() - t0
        if i > 0:  # the first pass is the warm-up
            pass_s.append(dt)
            spent += dt
        if len(pass_s) >= 3 and spent >= 0.1:
            break
    model_rate = n_used / statistics.median(pass_s)
    del dev_batches, batches

    cores = os.cpu_count() or 1
    rows = []
    for w in S.workers:
        net = build_model(S, device)
        step, opt = make_step(net, float(S.lr))
        epoch_sps, loss = [], torch.zeros(())
        data.set_epoch(0)
        feed = loader(data, S, int(w), device)  # workers start with the first epoch
        for epoch in range(int(S.epochs)):
            data.set_epoch(epoch)
            sync()
            t0 = time.perf_counter()
            for x, y in feed:
                loss = step(x.to(device, non_blocking=True),
                            y.to(device, non_blocking=True))
            sync()
            epoch_sps.append(n_used / (time.perf_counter() - t0))
        row = {"workers": int(w), "epoch_samples_per_s": epoch_sps,
               "samples_per_s": statistics.median(epoch_sps[1:]),
               "predicted": predict_throughput(loader_rate, model_rate, int(w), cores),
               "final_loss": float(loss)}
        del feed  # ends the persistent workers
        rows.append(row)
        print(f"workers {w}: {row['samples_per_s']:9,.0f} samples/s (predicted "
              f"{row['predicted']:9,.0f})  epochs {[round(v) for v in epoch_sps]}",
              flush=True)
    peak = step_peak(S, device, int(S.batch))
    return {"loader_rate": loader_rate, "model_rate": model_rate, "rows": rows,
            "samples_per_epoch": n_used, "build_s": build_s,
            "encoded_bytes": data.encoded_bytes,
            "decoded_bytes": len(data) * 3 * int(S.image) ** 2,
            "peak_bytes": peak, "rss_max_bytes": rss_max_bytes(), "cores": cores,
            "statistic": "median of the epochs after the first (the warm-up)"}


def maxbatch(S: Any, device: Any) -> dict[str, Any]:
    from hpcai.pipeline import budget_fits, cuda_step_fits, largest_batch

    peaks: dict[int, int] = {}
    if device.type == "cuda":
        import torch

        def run_step(b: int) -> None:
            net = build_model(S, device)
            step, _ = make_step(net, float(S.lr))
            x = torch.randn(b, 3, int(S.image), int(S.image), device=device)
            y = torch.randint(0, 10, (b,), device=device)
            step(x, y)

        fits = cuda_step_fits(run_step, peaks)
        criterion = "a training step runs without torch.cuda.OutOfMemoryError"
        budget = None
    else:
        budget = int(S.budget_mib) << 20
        fits = budget_fits(lambda b: step_peak(S, device, b), budget, peaks)
        criterion = ("MemTracker peak of one training step <= budget (a CPU does not "
                     "refuse memory: past the RAM it swaps)")
    best, tried = largest_batch(fits, 1, int(S.batch_limit))
    return {"max_batch": best, "tried": [{"batch": b, "fits": ok, "peak_bytes":
                                          peaks.get(b)} for b, ok in tried],
            "budget_bytes": budget, "criterion": criterion,
            "rss_max_bytes": rss_max_bytes()}


def run(S: Any) -> dict[str, Any]:
    import torch

    want = str(S.device)
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(want)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    if S.model == "light" and device.type == "cpu":
        # One product of (batch, 3 H W) by (3 H W, 10) has nothing to share between
        # threads, and on busy cores each parallel region waits for a thread the
        # scheduler has put aside: under load two threads made this step a hundred
        # times slower than one.
        torch.set_num_threads(1)
    try:
        out = sweep(S, device) if S.mode == "sweep" else maxbatch(S, device)
        net = build_model(S, device)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)  # run() may be called in a notebook's kernel
    return {**out, "mode": str(S.mode), "model": str(S.model), "device": str(device),
            "params": sum(p.numel() for p in net.parameters()),
            "torch_threads": used, "load_average": list(os.getloadavg())}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check, choices=CHOICES)
