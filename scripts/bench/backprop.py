"""Backpropagation by hand, checked against autograd, and its operations counted two ways.

The network is chapter 7's multilayer perceptron on scikit-learn's digits: 64 inputs, the
hidden widths of ``--hidden``, 10 outputs, ReLU (or tanh) between the layers, softmax with
cross-entropy at the end. The script does three things with it:

* ``max_rel_err``: the gradients written by hand in NumPy (``hpcai.nn.backward``) against
  ``torch.autograd`` on a copy of the same weights, in float64, on ``--batch`` real digits.
  Per parameter tensor the error is max |ours - autograd| / max |autograd|; the largest one is
  reported. On the ``gpu`` profile autograd runs on the CUDA device.
* ``flops_counted``: ``torch.utils.flop_counter.FlopCounterMode`` around one forward and
  backward pass of the same PyTorch network, and ``flops_formula``, the same count by hand from
  the shapes (``hpcai.nn.layer_costs``): 2 B n_in n_out per linear layer forward, twice that
  backward (the weight-gradient GEMM and the input-gradient GEMM), once for the first layer
  (the images need no gradient). Both count matrix products only: FlopCounterMode registers
  formulas for matmul-like operators (mm, addmm, bmm, convolution, attention) and nothing
  else, so bias adds, activations, softmax and the loss are in neither count.
* ``rows``: one float32 training step's forward + backward timed per batch size in
  ``--batches``, the hand-written NumPy version and the PyTorch one (on the GPU with ``gpu``,
  synchronising before every clock read): median and inter-quartile range of ``--repeats``
  samples, and the achieved GFLOP/s of the formula's count. The NumPy version runs only up
  to ``--numpy-max-batch`` (on the CPU, it would dominate the ``gpu`` profile's time).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcai import nn
from hpcai.cli import bench_main
from hpcai.measure import time_it

SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"hidden": [128, 32], "batch": 32, "batches": [1, 64], "repeats": 3,
              "numpy_max_batch": 64, "activation": "relu", "seed": 0},
    "cpu": {"hidden": [256, 64], "batch": 32, "batches": [1, 8, 32, 128, 512, 1024],
            "repeats": 7, "numpy_max_batch": 1024, "activation": "relu", "seed": 0},
    "gpu": {"hidden": [4096, 1024], "batch": 32,
            "batches": [1, 32, 256, 1024, 4096, 16384], "repeats": 10,
            "numpy_max_batch": 256, "activation": "relu", "seed": 0},
}
SIZES["cluster"] = SIZES["gpu"]
N_IN, N_CLASSES = 64, 10     # the digits: 8 x 8 pixels, ten classes
FLOPS_TERMS = ("matrix products only, as FlopCounterMode counts them: per linear layer "
               "2*B*n_in*n_out forward (addmm), 2x that backward (dW = X.T @ dZ and "
               "dX = dZ @ W.T), 1x for the first layer (no gradient for the input); bias "
               "adds, bias gradients, activations, softmax and cross-entropy left out")


def layer_sizes(hidden: list[int]) -> list[int]:
    """Widths from input to output: ``[64, *hidden, 10]``."""
    return [N_IN, *(int(h) for h in hidden), N_CLASSES]


def digits_batch(batch: int, seed: int) -> tuple[Any, Any, str]:
    """``batch`` real digits (pixels scaled to [0, 1], float64), their labels, and "digits".

    Where scikit-learn is not installed (a GPU machine's own Python), the stand-in of
    :func:`hpcai.nn.digits_data` is used, and the third value says so."""
    X, y, source = nn.digits_data(seed)
    order = np.random.default_rng(seed).permutation(len(y))[:batch]
    return X[order], y[order], source


def gradient_error(sizes: list[int], X: Any, y: Any, activation: str, seed: int,
                   device: str) -> dict[str, float]:
    """Hand-written gradients against autograd, both in float64; relative errors."""
    import torch

    params = nn.init_mlp(sizes, seed=seed)                  # float64
    loss, grads = nn.loss_and_grads(params, X, y, activation)
    model = nn.torch_mlp(sizes, activation, params=params).to(device)
    ref = torch.nn.functional.cross_entropy(
        model(torch.from_numpy(X).to(device)), torch.from_numpy(y).to(device))
    ref.backward()
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    rel = []
    for (dW, db), lin in zip(grads, linears):
        for ours, theirs in ((dW, lin.weight.grad.cpu().numpy().T),
                             (db, lin.bias.grad.cpu().numpy())):
            rel.append(float(np.abs(ours - theirs).max() / np.abs(theirs).max()))
    return {"max_rel_err": max(rel), "rel_err_per_tensor": rel,
            "loss": loss, "loss_abs_err": abs(loss - ref.item())}


def counted_flops(sizes: list[int], batch: int, activation: str, device: str
                  ) -> dict[str, Any]:
    """FlopCounterMode around one forward and one backward pass (float32, random data)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    gen = torch.Generator().manual_seed(0)
    model = nn.torch_mlp(sizes, activation).to(device)
    x = torch.randn(batch, sizes[0], generator=gen).to(device)
    y = torch.randint(0, sizes[-1], (batch,), generator=gen).to(device)
    with FlopCounterMode(display=False) as fc:
        out = model(x)
        forward = fc.get_total_flops()
        torch.nn.functional.cross_entropy(out, y).backward()
    by_op = {str(op): int(n) for op, n in fc.get_flop_counts()["Global"].items()}
    return {"flops_counted": int(fc.get_total_flops()),
            "flops_forward_counted": int(forward), "flops_counted_by_op": by_op}


def formula_flops(sizes: list[int], batch: int) -> dict[str, Any]:
    """The same count from the shapes alone, layer by layer (``hpcai.nn.layer_costs``)."""
    costs = nn.layer_costs(sizes, batch)
    layers = [{"n_in": c.n_in, "n_out": c.n_out, "forward_flops": c.forward_flops,
               "backward_flops": c.backward_flops} for c in costs]
    return {"flops_formula": sum(c.forward_flops + c.backward_flops for c in costs),
            "flops_forward_formula": sum(c.forward_flops for c in costs),
            "layers": layers, "flops_terms": FLOPS_TERMS}


def step_numpy(params: nn.Params, X: Any, y: Any, activation: str) -> Any:
    """One forward + backward pass by hand: ``loss_and_grads``."""
    return lambda: nn.loss_and_grads(params, X, y, activation)


def step_torch(model: Any, x: Any, y: Any) -> Any:
    """One forward + backward pass in PyTorch; gradients dropped, not accumulated."""
    import torch

    def step() -> None:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()

    return step


def timed_rows(sizes: list[int], batches: list[int], repeats: int, activation: str,
               device: str, seed: int, numpy_max_batch: int) -> list[dict[str, Any]]:
    """float32 forward + backward per batch size, by hand (CPU) and in PyTorch (device)."""
    import torch

    rng = np.random.default_rng(seed)
    params = nn.init_mlp(sizes, seed=seed, dtype=np.float32)
    model = nn.torch_mlp(sizes, activation, params=params).to(device)
    sync = "cuda" if device == "cuda" else None
    rows = []
    for b in batches:
        X = rng.random((b, sizes[0]), dtype=np.float32)
        y = rng.integers(0, sizes[-1], b)
        flops = formula_flops(sizes, b)["flops_formula"]
        fns = {("torch", device): step_torch(model, torch.from_numpy(X).to(device),
                                             torch.from_numpy(y).to(device))}
        if b <= numpy_max_batch:
            fns[("numpy", "cpu")] = step_numpy(params, X, y, activation)
        for (impl, dev), fn in fns.items():
            t = time_it(fn, warmup=2, repeats=repeats, sync=sync if dev == "cuda" else None)
            rows.append({"impl": impl, "device": dev, "batch": b, "flops": flops,
                         "median_s": t.median, "iqr_s": t.iqr, "min_s": t.min,
                         "GFLOPs": flops / t.median / 1e9,
                         "samples_per_s": b / t.median})
    return rows


def check(S: Any) -> None:
    """Knobs beyond positivity, refused before any work."""
    if not S.hidden or not S.batches:
        raise ValueError("--hidden and --batches must be non-empty lists")
    if max(S.batches) > 1 << 20 or S.batch > 1797:
        raise ValueError(f"--batch must be <= 1797 (the digits) and --batches <= 1048576; "
                         f"got {S.batch} and {max(S.batches)}")
    if max(S.hidden) > 1 << 16:
        raise ValueError(f"--hidden widths must be <= 65536, got {max(S.hidden)}")


def run(S: Any) -> dict[str, Any]:
    import torch

    device = "cuda" if S.profile in ("gpu", "cluster") else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("profile gpu needs CUDA; torch.cuda.is_available() is False")
    sizes = layer_sizes(S.hidden)
    X, y, data = digits_batch(int(S.batch), int(S.seed))
    grad = gradient_error(sizes, X, y, S.activation, int(S.seed), device)
    counted = counted_flops(sizes, int(S.batch), S.activation, device)
    formula = formula_flops(sizes, int(S.batch))
    rows = timed_rows(sizes, [int(b) for b in S.batches], int(S.repeats), S.activation,
                      device, int(S.seed), int(S.numpy_max_batch))
    extra = {}
    if device == "cuda":
        extra = {"gpu": torch.cuda.get_device_name(0),
                 "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32)}
    print(f"# MLP {sizes}, batch {S.batch}, {S.activation}, autograd on {device}: "
          f"max_rel_err {grad['max_rel_err']:.1e}; FlopCounterMode "
          f"{counted['flops_counted']:,} vs formula {formula['flops_formula']:,}")
    for r in rows:
        print(f"#  {r['impl']:>5} {r['device']:>4} B={r['batch']:>6}: "
              f"{r['median_s'] * 1e6:10.1f} us  {r['GFLOPs']:8.2f} GFLOP/s", flush=True)
    return {"device": device, "sizes": sizes, "batch": int(S.batch), "data": data,
            "activation": S.activation, "dtype_check": "float64",
            "dtype_timing": "float32", "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), **grad, **counted, **formula,
            "flops_match": counted["flops_counted"] == formula["flops_formula"],
            "statistic": "rows: median and IQR of repeats", "rows": rows, **extra}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check,
               choices={"activation": nn.ACTIVATIONS})
