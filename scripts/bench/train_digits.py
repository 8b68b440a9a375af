"""Train the digits MLP in PyTorch: chapter 8's training loop exported as one script.

    python scripts/bench/train_digits.py --profile cpu --json --batch 64 --optimizer adam
    BENCH=train_digits sbatch scripts/slurm/bench.sbatch --epochs 20

The settings sit at the top, one row per profile; every one of them is a ``--flag``. The
script loads scikit-learn's digits (shipped with the library: nothing is downloaded), holds
out a fixed fifth for testing, and trains an MLP 64 -> hidden -> 10 with minibatch SGD,
SGD with momentum 0.9 or Adam, at a constant learning rate or with a linear warm-up followed
by a cosine decay. It prints one line per epoch (mean training loss, test accuracy, training
samples per second) and, with ``--json``, one JSON object last: ``samples_per_s`` (median
over the epochs after the first), ``test_acc``, ``epochs``, ``wall_s``, the per-epoch
``history`` and the machine. With ``--profile gpu`` it trains on the GPU, synchronising
before every clock read.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from hpcai import nn
from hpcai.cli import bench_main

if TYPE_CHECKING:
    import torch

# ------------------------------------------------------------------ settings
SIZES = {
    "smoke": {"hidden": 32, "epochs": 3, "batch": 64, "lr": 0.05, "optimizer": "momentum",
              "schedule": "cosine", "warmup": 0, "seed": 0},
    "cpu": {"hidden": 128, "epochs": 10, "batch": 64, "lr": 0.05, "optimizer": "momentum",
            "schedule": "cosine", "warmup": 1, "seed": 0},
    "gpu": {"hidden": 512, "epochs": 20, "batch": 256, "lr": 0.1, "optimizer": "momentum",
            "schedule": "cosine", "warmup": 2, "seed": 0},
}
SIZES["cluster"] = SIZES["cpu"]
CHOICES = {"optimizer": ("sgd", "momentum", "adam"), "schedule": ("constant", "cosine")}


def check(S: Any) -> None:
    if S.warmup >= S.epochs:
        raise ValueError(f"--warmup ({S.warmup} epochs) must be smaller than --epochs "
                         f"({S.epochs})")


# ------------------------------------------------------------------ data and model
def load(device: str) -> tuple[Any, ...]:
    """Digits scaled to [0, 1], float32, split 80/20 with a fixed permutation.

    Without scikit-learn, :func:`hpcai.nn.digits_data` generates a stand-in of the same
    shapes; the fifth value (the result's ``data`` key) says which was used."""
    import torch
    X, y, source = nn.digits_data()
    X = X.astype(np.float32)
    order = np.random.default_rng(0).permutation(len(X))
    n_test = len(X) // 5
    te, tr = order[:n_test], order[n_test:]
    tensors = (torch.tensor(a, device=device) for a in (X[tr], y[tr], X[te], y[te]))
    return (*tensors, source)


def make_optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    import torch
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr)


def lr_at(step: int, S: Any, total: int, warmup: int) -> float:
    """Constant, or linear warm-up from lr/10 over ``warmup`` steps then cosine to 0."""
    if S.schedule == "constant":
        return S.lr
    if step < warmup:
        return S.lr * (0.1 + 0.9 * step / warmup)
    t = (step - warmup) / max(1, total - warmup)
    return S.lr * (1 + math.cos(math.pi * min(t, 1.0))) / 2


def accuracy(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    import torch
    model.eval()
    with torch.no_grad():
        acc = float((model(X).argmax(dim=1) == y).float().mean())
    model.train()
    return acc


# ------------------------------------------------------------------ the training loop
def run(S: Any) -> dict[str, Any]:
    import torch
    device = "cuda" if S.profile == "gpu" and torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(S.seed)
    X_tr, y_tr, X_te, y_te, source = load(device)
    sizes = [X_tr.shape[1], S.hidden, 10]
    model = nn.torch_mlp(sizes, params=nn.init_mlp(sizes, S.seed, np.float32)).to(device)
    opt = make_optimizer(S.optimizer, model.parameters(), S.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    n, per_epoch = len(X_tr), -(-len(X_tr) // S.batch)
    total, warmup = S.epochs * per_epoch, S.warmup * per_epoch
    gen = torch.Generator().manual_seed(S.seed)
    print(f"# training MLP {sizes} on {n} digits, {device}, batch {S.batch}, "
          f"{S.optimizer} lr {S.lr} ({S.schedule}, warm-up {S.warmup} epochs)", flush=True)
    history, step = [], 0
    t_start = time.perf_counter()
    for epoch in range(1, S.epochs + 1):
        order = torch.randperm(n, generator=gen).to(device)
        loss_sum = torch.zeros((), device=device)
        sync()
        t0 = time.perf_counter()
        for start in range(0, n, S.batch):
            idx = order[start:start + S.batch]
            for group in opt.param_groups:
                group["lr"] = lr_at(step, S, total, warmup)
            opt.zero_grad(set_to_none=True)          # forget the last step's gradients
            loss = loss_fn(model(X_tr[idx]), y_tr[idx])   # forward and loss
            loss.backward()                          # gradients of every parameter
            opt.step()                               # update the parameters
            loss_sum += loss.detach() * len(idx)
            step += 1
        sync()
        seconds = time.perf_counter() - t0
        acc = accuracy(model, X_te, y_te)
        row = {"epoch": epoch, "loss": float(loss_sum) / n, "test_acc": acc,
               "epoch_s": seconds, "samples_per_s": n / seconds,
               "lr": opt.param_groups[0]["lr"]}
        history.append(row)
        print(f"epoch {epoch:3d}/{S.epochs}  loss {row['loss']:.4f}  test acc {acc:.4f}  "
              f"{row['samples_per_s']:10,.0f} samples/s  lr {row['lr']:.3g}", flush=True)
    wall = time.perf_counter() - t_start
    timed = history[1:] or history            # the first epoch warms up (allocations, caches)
    rates = [r["samples_per_s"] for r in timed]
    q = statistics.quantiles(rates, n=4, method="inclusive") if len(rates) > 1 else rates * 2
    out = {"device": device, "data": source, "sizes": sizes, "n_train": n, "n_test": len(X_te),
           "samples_per_s": statistics.median(rates), "samples_per_s_iqr": q[-1] - q[0],
           "statistic": "median over the epochs after the first",
           "test_acc": history[-1]["test_acc"], "train_loss": history[-1]["loss"],
           "epochs": S.epochs, "steps": step, "train_s": sum(r["epoch_s"] for r in history),
           "wall_s": wall, "history": history, "torch_threads": torch.get_num_threads()}
    if device == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, choices=CHOICES, check=check)
