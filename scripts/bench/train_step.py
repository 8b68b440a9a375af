"""One training step in several precisions: samples per second, peak memory, loss.

    python scripts/bench/train_step.py --profile cpu --json
    python scripts/bench/train_step.py --profile gpu --json      # on a GPU

The model is the residual MLP of :mod:`hpcai.parallel.model` (``n_blocks`` blocks
``x + fc2(tanh(fc1(x)))``), wide enough that its matrix products dominate a step,
trained with Adam on the seeded synthetic regression of that module. One row per
``precision``:

* ``fp32``: everything in float32;
* ``bf16``: ``torch.autocast`` to bfloat16 (the matrix products run in bf16, the
  weights, gradients and optimiser stay fp32);
* ``bf16_weights``: ``model.to(torch.bfloat16)``, weights, gradients and Adam's moments
  all in bf16 (no master copy: small updates can be lost to rounding);
* ``fp16``: ``torch.autocast`` to float16 with a gradient scaler, where the device has
  fp16 arithmetic (a GPU); on a CPU whose only fp16 unit converts (F16C), the row is
  ``skipped`` with the reason.

Each row holds ``samples_per_s`` (the median over ``timed_steps`` steps after
``warmup`` steps, with the inter-quartile range), ``peak_bytes`` (MemTracker's peak
over one step on a CPU; ``torch.cuda.max_memory_allocated`` on a GPU) and
``final_loss`` after ``warmup + timed_steps`` steps from the same seed;
``samples_per_s_best`` (the fastest step) and ``times_s`` show how far other work on
the machine moved the median (``load_average`` is recorded at the end). ``ratio`` is
each row's samples/s over fp32's. On a GPU the clock is read after
``torch.cuda.synchronize``.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from hpcai.cli import bench_main

# torch (and the modules of hpcai that import it) load inside the functions that use
# them, so --help and a refused value answer before torch loads

# ------------------------------------------------------------------ settings
SIZES = {
    "smoke": {"precisions": "all", "dim": 128, "hidden": 512, "n_blocks": 2,
              "batch": 32, "warmup": 2, "timed_steps": 5, "lr": 1e-3},
    # small enough for a CPU without bf16 units, where autocast runs many times slower
    "cpu": {"precisions": "all", "dim": 256, "hidden": 1024, "n_blocks": 2,
            "batch": 256, "warmup": 2, "timed_steps": 5, "lr": 1e-3},
    "gpu": {"precisions": "all", "dim": 4096, "hidden": 16384, "n_blocks": 4,
            "batch": 2048, "warmup": 5, "timed_steps": 20, "lr": 1e-3},
}
SIZES["cluster"] = SIZES["cpu"]
PRECISIONS = ("fp32", "bf16", "bf16_weights", "fp16")


def parse_precisions(text: str) -> list[str]:
    if text == "all":
        return list(PRECISIONS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in PRECISIONS]
    if not names or bad:
        raise ValueError("--precisions must be all or a comma-separated list drawn "
                         f"from {', '.join(PRECISIONS)}; got {text!r}")
    return names


def check(S: Any) -> None:
    parse_precisions(S.precisions)


def fp16_skip_reason(device: str) -> str | None:
    """Why fp16 is not run here, or ``None``: a CPU needs an fp16 arithmetic unit."""
    from hpcai.precision import cpu_flags, cpu_units

    if device == "cuda":
        return None
    units = cpu_units(cpu_flags()).get("fp16", [])
    if any("conversions only" not in u for u in units):
        return None
    return ("this CPU has no fp16 arithmetic unit (its fp16 support: "
            + (", ".join(units) or
            "none") + "): fp16 would be converted to fp32 around every operation")


# ------------------------------------------------------------------ one precision
def run_precision(precision: str, S: Any, device: str) -> dict[str, Any]:
    import torch

    from hpcai.parallel.model import ModelConfig, batch, build_model, loss_fn
    from hpcai.parallel.tracking import measure_peak

    cfg = ModelConfig(dim=S.dim, hidden=S.hidden, n_blocks=S.n_blocks)
    net = build_model(cfg, device)
    dtype = torch.bfloat16 if precision == "bf16_weights" else torch.float32
    net = net.to(dtype)
    opt = torch.optim.Adam(net.parameters(), lr=S.lr, foreach=False)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")
    x, y = batch(cfg, 0, S.batch, device=device)
    x, y = x.to(dtype), y.to(dtype)
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=amp or torch.bfloat16,
                            enabled=amp is not None):
            out = net(x)
        loss = loss_fn(out.float(), y.float())
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss.detach()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
        step()
        sync()
        peak = torch.cuda.max_memory_allocated()
        method = "torch.cuda.max_memory_allocated over the first step"
    else:
        _, snap = measure_peak(step, net, opt, x, y)
        peak = snap["Total"]
        method = "MemTracker peak over the first step"
    for _ in range(S.warmup - 1):
        step()
    times = []
    loss = torch.zeros(())
    for _ in range(S.timed_steps):
        sync()
        t0 = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t0)
    rates = [S.batch / t for t in times]
    q = (statistics.quantiles(rates, n=4, method="inclusive") if len(rates) > 1
         else rates * 2)
    return {"precision": precision, "samples_per_s": statistics.median(rates),
            "samples_per_s_iqr": q[-1] - q[0],
            "step_median_s": statistics.median(times),
            "samples_per_s_best": S.batch / min(times), "times_s": times,
            "peak_bytes": int(peak), "peak_method": method,
            "final_loss": float(loss), "steps": S.warmup + S.timed_steps}


def run(S: Any) -> dict[str, Any]:
    import torch

    from hpcai.precision import cpu_flags, cpu_units

    device = "cuda" if S.profile == "gpu" and torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    rows = []
    for precision in parse_precisions(S.precisions):
        reason = fp16_skip_reason(device) if precision == "fp16" else None
        if reason:
            rows.append({"precision": precision, "skipped": True, "reason": reason})
            print(f"{precision:13s} skipped: {reason}", flush=True)
            continue
        row = run_precision(precision, S, device)
        rows.append(row)
        print(f"{precision:13s} {row['samples_per_s']:10,.0f} samples/s  peak "
              f"{row['peak_bytes']:13,d} B  loss {row['final_loss']:.5f}", flush=True)
    base = next((r["samples_per_s"] for r in rows if r["precision"] == "fp32"), None)
    for r in rows:
        if base and "samples_per_s" in r:
            r["ratio"] = r["samples_per_s"] / base
    out: dict[str, Any] = {"rows": rows, "device": device,
                           "model": {"dim": S.dim, "hidden": S.hidden,
                                     "n_blocks": S.n_blocks, "batch": S.batch},
                           "statistic": "median over the timed steps after warm-up",
                           "torch_threads": torch.get_num_threads(),
                           "load_average": list(os.getloadavg())}
    if device == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
    else:
        out["cpu_units"] = cpu_units(cpu_flags())
    return out


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check)
