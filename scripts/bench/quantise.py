"""Dynamic int8 quantisation of a trained MLP's linear layers: accuracy, size, latency.

    python scripts/bench/quantise.py --profile cpu --json

A multilayer perceptron on scikit-learn's digits (64 pixels in, ``depth`` hidden layers
of ``hidden`` units, 10 classes out; wide enough at ``cpu`` that its ``nn.Linear``
layers hold almost all the arithmetic) is trained from a fixed seed, then quantised with
``torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)``:

* the weights are stored as int8 with a scale (one per tensor, the default; one per
  output row, ``per_row``, with ``per_channel_dynamic_qconfig``);
* at every call the input of each layer is quantised to unsigned integers (7 bits on
  x86) with a scale and zero point from its own minimum and maximum (hence *dynamic*),
  multiplied with the
  int8 weights accumulating in int32, and the result is turned back to fp32.

Before anything is timed, ``int8_linear`` (the same arithmetic written out in a few
lines of torch) is checked against every quantised layer, on the inputs that layer sees.

Reported: accuracy of fp32 and int8 on the held-out fifth of the digits, the change,
the largest |logit| difference, the serialised ``state_dict`` bytes of each model, and
the latency (median and inter-quartile range of ``repeats`` samples after ``warmup``
calls, the models taking turns) at batch 1 and at ``large_batch``, with the speed-up
of each int8 model over fp32 (``speedup``: of the medians; ``speedup_best``: of the best
samples, the less disturbed by other work on the machine). ``width_sweep`` holds the
same batch-1 comparison for untrained MLPs of each width in ``sweep_hidden``.
``threads`` is the intra-op thread count of the timed passes (0: torch's default; the
JSON reports the number used). It is 1 at ``smoke`` and ``cpu``: on two cores shared
with other work, a second thread makes the quantised kernels' times depend on that work
(with the cores oversubscribed, int8 at batch 1 was seen to run over ten times slower on two
threads than on one, fp32 far less so); one thread is also what a small edge device
often gives a model.

Dynamic quantisation of this kind has CPU kernels only (FBGEMM/oneDNN on x86, QNNPACK
on ARM): with ``--profile gpu`` the script runs the same CPU measurement and says so in
``note``.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Any

from hpcai.cli import bench_main

# torch loads inside the functions that use it: --help and a refused value answer first

SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"hidden": 256, "depth": 2, "epochs": 4, "batch": 64, "lr": 1e-3,
              "large_batch": 256, "warmup": 2, "repeats": 5, "calls": 10,
              "threads": 1, "seed": 0, "sweep_hidden": [64, 512], "sweep_calls": 10},
    "cpu": {"hidden": 2048, "depth": 2, "epochs": 8, "batch": 64, "lr": 1e-3,
            "large_batch": 1024, "warmup": 3, "repeats": 11, "calls": 100,
            "threads": 1, "seed": 0,
            "sweep_hidden": [64, 128, 256, 512, 1024, 2048, 4096], "sweep_calls": 50},
}
# a GPU node's host has cores to spare: all of them (0: torch's default)
SIZES["gpu"] = {**SIZES["cpu"], "threads": 0}
SIZES["cluster"] = {**SIZES["cpu"], "threads": 0}

GPU_NOTE = ("dynamic int8 quantisation (torch.ao quantize_dynamic) has CPU kernels "
            "only; this is the CPU measurement, not a GPU one")
# layer-by-layer agreement of int8_linear with the library: both do the same integer
# arithmetic, so only the fp32 rounding of the final rescale (a few ulps) may differ
REF_RTOL = 1e-5


def check(S: Any) -> None:
    """Rules of this benchmark, before any work."""
    if int(S.depth) > 8:
        raise ValueError(f"--depth must be in 1..8, got {S.depth}")
    if int(S.hidden) > 8192:
        raise ValueError(f"--hidden must be in 1..8192, got {S.hidden}")
    if any(int(h) > 8192 for h in S.sweep_hidden):
        raise ValueError(f"--sweep-hidden must hold widths in 1..8192, got "
                         f"{S.sweep_hidden}")


# --- reference: start
def int8_linear(x: Any, weight: Any, bias: Any, per_row: bool, x_max: int = 127) -> Any:
    """y = x @ weight.T + bias the way dynamic int8 quantisation computes it.

    Weights: symmetric int8, scale = max|w| / 127.5 per tensor (or per output row).
    Input: asymmetric unsigned, 0..x_max (127: the reduced range of the x86 engines;
    255 elsewhere), scale and zero point from this batch's own minimum and maximum. Products accumulate in
    int32; one multiply by both scales turns the sum back to fp32.
    """
    import torch

    amax = weight.abs().amax(dim=1, keepdim=True) if per_row else weight.abs().amax()
    w_scale = amax / 127.5
    w_q = torch.clamp(torch.round(weight * (1.0 / w_scale)), -128, 127)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    x_scale = torch.tensor((hi - lo) / x_max if hi > lo else 0.1)   # float32, as x
    zero = int(min(x_max, max(0, round(-lo / float(x_scale)))))
    x_q = torch.clamp(torch.round(x * (1.0 / x_scale)) + zero, 0, x_max)
    acc = (x_q.to(torch.int32) - zero) @ w_q.to(torch.int32).T   # int32 accumulate
    return acc.to(torch.float32) * (x_scale * w_scale.reshape(1, -1)) + bias
# --- reference: end


def quantise(model: Any, per_row: bool = False) -> Any:
    """The library's dynamic int8 quantisation of every nn.Linear of ``model``."""
    import torch
    from torch import nn
    from torch.ao.quantization import per_channel_dynamic_qconfig

    spec = {nn.Linear: per_channel_dynamic_qconfig} if per_row else {nn.Linear}
    with warnings.catch_warnings():
        # torch 2.13 marks torch.ao.quantization deprecated in favour of torchao (and
        # warns that quantised tensor types will go); the API still runs, so the two
        # warnings are silenced here and named in the JSON (``deprecated``)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantiz.*deprecated.*")
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)


def input_max() -> int:
    """The largest quantised input value of this engine: x86's FBGEMM and oneDNN use
    7 bits (PyTorch's ``reduce_range``), QNNPACK (ARM) all 8."""
    import torch

    return 127 if torch.backends.quantized.engine in ("x86", "fbgemm", "onednn") else 255


def check_reference(qmodel: Any, model: Any, x: Any, per_row: bool) -> float:
    """Largest |int8_linear - library| / max|library| over the quantised layers, each
    fed the input it sees inside the quantised model."""
    import torch

    seen: list[Any] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((i[0], o)))
             for m in qmodel if not isinstance(m, (torch.nn.ReLU,))]
    with torch.inference_mode():
        qmodel(x)
    for h in hooks:
        h.remove()
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    worst = 0.0
    with torch.inference_mode():
        for (inp, out), lin in zip(seen, linears):
            ref = int8_linear(inp, lin.weight, lin.bias, per_row, input_max())
            worst = max(worst, float((ref - out).abs().max() / out.abs().max()))
    return worst


def state_bytes(model: Any) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what a device would download."""
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def train(S: Any) -> tuple[Any, Any, Any, str]:
    """The seeded MLP trained on 4/5 of the digits; the held-out fifth; the data name.

    Minibatch Adam written out (PyTorch's update rule, without ``torch.optim``: creating
    any torch optimiser imports the compiler stack, seconds per process), on one
    intra-op thread (the model is small: a second thread would mostly wait)."""
    import numpy as np
    import torch

    from hpcai.nn import digits_data, torch_mlp

    X, y, name = digits_data(seed=int(S.seed))
    order = np.random.default_rng(int(S.seed)).permutation(len(X))
    cut = len(X) * 4 // 5
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    Xtr, ytr = Xt[order[:cut]], yt[order[:cut]]
    torch.manual_seed(int(S.seed))
    model = torch_mlp([64] + [int(S.hidden)] * int(S.depth) + [10])
    params = list(model.parameters())
    m1 = [torch.zeros_like(p) for p in params]
    m2 = [torch.zeros_like(p) for p in params]
    lr, b1, b2, eps = float(S.lr), 0.9, 0.999, 1e-8
    gen = torch.Generator().manual_seed(int(S.seed))
    threads, step = torch.get_num_threads(), 0
    torch.set_num_threads(1)
    try:
        for _ in range(int(S.epochs)):
            perm = torch.randperm(cut, generator=gen)
            for start in range(0, cut, int(S.batch)):
                idx = perm[start:start + int(S.batch)]
                loss = torch.nn.functional.cross_entropy(model(Xtr[idx]), ytr[idx])
                grads = torch.autograd.grad(loss, params)
                step += 1
                with torch.no_grad():
                    for p, g, a, v in zip(params, grads, m1, m2):
                        a.mul_(b1).add_(g, alpha=1 - b1)
                        v.mul_(b2).addcmul_(g, g, value=1 - b2)
                        denom = (v / (1 - b2**step)).sqrt_().add_(eps)
                        p.addcdiv_(a, denom, value=-lr / (1 - b1**step))
    finally:
        torch.set_num_threads(threads)
    return model.eval(), Xt[order[cut:]], yt[order[cut:]], name


def latencies(models: dict[str, Any], x: Any, S: Any, calls: int
              ) -> dict[str, dict[str, float]]:
    """Median, IQR and best of one forward pass (inference mode) on ``x``, per model.

    The models take turns within each of the ``repeats`` rounds (each sample the mean of
    ``calls`` calls), so a change in the machine's load falls on all of them alike."""
    import time

    import torch

    from hpcai.measure import Timing

    samples: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            for _ in range(int(S.warmup)):
                m(x)
        for _ in range(int(S.repeats)):
            for k, m in models.items():
                start = time.perf_counter()
                for _ in range(calls):
                    m(x)
                samples[k].append((time.perf_counter() - start) / calls)
    out = {}
    for k, times in samples.items():
        t = Timing(times)
        out[k] = {"median_s": t.median, "iqr_s": t.iqr, "min_s": t.min}
    return out


def width_sweep(S: Any) -> list[dict[str, Any]]:
    """Batch-1 latency of fp32 and int8 for untrained MLPs of each width in
    ``sweep_hidden`` (latency does not depend on the values of the weights)."""
    import torch

    from hpcai.nn import torch_mlp

    rows = []
    x = torch.rand(1, 64, generator=torch.Generator().manual_seed(int(S.seed)))
    for h in S.sweep_hidden:
        torch.manual_seed(int(S.seed))
        fp32 = torch_mlp([64] + [int(h)] * int(S.depth) + [10]).eval()
        t = latencies({"fp32": fp32, "int8": quantise(fp32)}, x, S, int(S.sweep_calls))
        rows.append({"hidden": int(h), "fp32_s": t["fp32"]["median_s"],
                     "int8_s": t["int8"]["median_s"],
                     "fp32_iqr_s": t["fp32"]["iqr_s"], "int8_iqr_s": t["int8"]["iqr_s"],
                     "speedup": t["fp32"]["median_s"] / t["int8"]["median_s"],
                     "speedup_best": t["fp32"]["min_s"] / t["int8"]["min_s"],
                     "fp32_weight_bytes": 4 * sum(p.numel() for p in fp32.parameters())})
    return rows


def run(S: Any) -> dict[str, Any]:
    import torch

    from hpcai.caches import last_level_cache
    from hpcai.precision import cpu_flags, cpu_units

    if int(S.threads) > 0:
        torch.set_num_threads(int(S.threads))
    model, Xte, yte, data_name = train(S)
    models = {"fp32": model, "int8": quantise(model), "int8_per_row": quantise(model, True)}
    with torch.inference_mode():
        logits = {k: m(Xte) for k, m in models.items()}
    acc = {k: float((v.argmax(1) == yte).float().mean()) for k, v in logits.items()}
    ref_err = {k: check_reference(models[k], model, Xte, k == "int8_per_row")
               for k in ("int8", "int8_per_row")}
    if max(ref_err.values()) > REF_RTOL:
        raise AssertionError(f"int8_linear differs from quantize_dynamic: {ref_err}")
    big = Xte.repeat(-(-int(S.large_batch) // len(Xte)), 1)[: int(S.large_batch)]
    batches = {"1": (Xte[:1], int(S.calls)), str(int(S.large_batch)): (big, 1)}
    rows = []
    for bname, (x, calls) in batches.items():
        for k, t in latencies(models, x, S, calls).items():
            rows.append({"model": k, "batch": int(bname), **t})
    for r in rows:
        base = next(b for b in rows if b["model"] == "fp32" and b["batch"] == r["batch"])
        r["speedup"] = base["median_s"] / r["median_s"]
        r["speedup_best"] = base["min_s"] / r["min_s"]
        r["samples_per_s"] = r["batch"] / r["median_s"]
    lin = [m for m in model if isinstance(m, torch.nn.Linear)]
    out: dict[str, Any] = {
        "data": data_name, "n_test": len(yte),
        "layers": [[m.in_features, m.out_features] for m in lin],
        "parameters": sum(p.numel() for p in model.parameters()),
        "linear_fraction": sum(m.weight.numel() + m.bias.numel() for m in lin)
        / sum(p.numel() for p in model.parameters()),
        "accuracy": acc,
        "accuracy_change": {k: acc[k] - acc["fp32"] for k in ("int8", "int8_per_row")},
        "agreement": {k: float((logits[k].argmax(1) == logits["fp32"].argmax(1))
                               .float().mean()) for k in ("int8", "int8_per_row")},
        "max_logit_diff": {k: float((logits[k] - logits["fp32"]).abs().max())
                           for k in ("int8", "int8_per_row")},
        "max_abs_logit": float(logits["fp32"].abs().max()),
        "reference_rel_err": ref_err, "reference_rtol": REF_RTOL,
        "bytes": {k: state_bytes(m) for k, m in models.items()},
        "rows": rows, "large_batch": int(S.large_batch),
        "width_sweep": width_sweep(S),
        "statistic": "median, IQR and best of repeats after warm-up, the models taking "
                     "turns; batch 1: each sample the mean of `calls` calls",
        "threads": torch.get_num_threads(),
        "engine": torch.backends.quantized.engine,
        "int8_units": cpu_units(cpu_flags()).get("int8", []),
        "llc": last_level_cache(),
        "load_average": list(os.getloadavg()),
        "deprecated": "torch.ao.quantization (deprecated in favour of torchao)",
    }
    out["size_ratio"] = out["bytes"]["fp32"] / out["bytes"]["int8"]
    if S.profile in ("gpu", "cluster"):
        out["note"] = GPU_NOTE
    for r in rows:
        print(f"{r['model']:13s} batch {r['batch']:5d}  {r['median_s'] * 1e3:9.3f} ms"
              f"  x{r['speedup']:.2f}", flush=True)
    print("accuracy", acc, "bytes", out["bytes"], flush=True)
    return out


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check)
