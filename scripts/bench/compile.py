"""torch.compile on one device (chapter 11): what the compilation costs, what it buys.

    python scripts/bench/compile.py --profile cpu --json
    python scripts/bench/compile.py --profile gpu --json      # on a GPU
    BENCH=compile sbatch scripts/slurm/bench.sbatch           # SLURM

Two models, each trained with SGD, eager and then ``torch.compile``-d (TorchInductor,
[ansel2024pytorch2]); the optimiser step stays eager in both:

* ``pointwise``: residual blocks ``x + 0.5 * gelu(layer_norm(x @ W)) * sigmoid(x)``,
  the GELU written out in its tanh form, on a narrow width and a tall batch, so most of
  a step is element-wise work that eager mode runs as one kernel per operation, each
  reading and writing the whole activation. Inductor can fuse these into a few loops.
* ``gemm``: a stack of wide ``Linear`` + ReLU layers, where the matrix products (which
  Inductor hands to the same BLAS or cuBLAS that eager mode calls) are almost all the
  time, so fusion has little left to save.

Per model: ``eager_step_s`` (median over ``steps`` steps after ``warmup``),
``first_compiled_step_s`` (the first call of the compiled model: tracing, code
generation and C++ or Triton compilation, then one step), ``compiled_step_s``
(median after its own warm-up), ``speedup`` = eager / compiled, ``compile_s`` =
first compiled step minus one eager step, and ``break_even_steps`` = ``compile_s``
over the time saved per step (``None`` when compiled steps are not faster).
``max_loss_diff``: the compiled run's losses against the eager run's, same seed, same
batches. Inductor's on-disk cache is a fresh temporary directory per run
(``--fresh-cache 0`` keeps the default one), so ``compile_s`` is a cold compile.
``--compile 0`` skips the compiled runs (eager rows only) and says so.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any

from hpcai.cli import bench_main

SIZES = {
    "smoke": {"models": ["pointwise", "gemm"], "pw_dim": 64, "pw_blocks": 2,
              "pw_batch": 2048, "gemm_dim": 256, "gemm_layers": 2, "gemm_batch": 128,
              "warmup": 2, "steps": 5, "lr": 0.01, "compile": 0, "fresh_cache": 1,
              "device": "cpu"},
    "cpu": {"models": ["pointwise", "gemm"], "pw_dim": 128, "pw_blocks": 4,
            "pw_batch": 8192, "gemm_dim": 1024, "gemm_layers": 3, "gemm_batch": 256,
            "warmup": 2, "steps": 8, "lr": 0.01, "compile": 1, "fresh_cache": 1,
            "device": "cpu"},
    "gpu": {"models": ["pointwise", "gemm"], "pw_dim": 1024, "pw_blocks": 8,
            "pw_batch": 65536, "gemm_dim": 8192, "gemm_layers": 4, "gemm_batch": 8192,
            "warmup": 3, "steps": 20, "lr": 0.01, "compile": 1, "fresh_cache": 1,
            "device": "auto"},
}
MODELS = ("pointwise", "gemm")
CHOICES = {"models": MODELS, "device": ("auto", "cpu", "cuda")}


def check(S: Any) -> None:
    if int(S.compile) not in (0, 1) or int(S.fresh_cache) not in (0, 1):
        raise ValueError("--compile and --fresh-cache must be 0 or 1")
    if str(S.device) == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda, but no CUDA GPU is available here; "
                             "use --device cpu or auto")


def build(name: str, S: Any, device: Any) -> tuple[Any, Any, Any]:
    """The model, a batch and its targets, from seed 0."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    if name == "pointwise":
        d = int(S.pw_dim)

        class Block(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc = nn.Linear(d, d)
                self.norm = nn.LayerNorm(d)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                h = self.norm(self.fc(x))
                # GELU written out (tanh form): seven element-wise operations
                h = 0.5 * h * (1.0 + torch.tanh(0.7978845608 * (h + 0.044715 * h**3)))
                return x + 0.5 * h * torch.sigmoid(x)

        net = nn.Sequential(*[Block() for _ in range(int(S.pw_blocks))])
        x = torch.randn(int(S.pw_batch), d)
    else:
        d = int(S.gemm_dim)
        layers: list[nn.Module] = []
        for _ in range(int(S.gemm_layers)):
            layers += [nn.Linear(d, d), nn.ReLU()]
        net = nn.Sequential(*layers)
        x = torch.randn(int(S.gemm_batch), d)
    y = torch.randn_like(x)
    return net.to(device), x.to(device), y.to(device)


def train(name: str, S: Any, device: Any, compiled: bool) -> dict[str, Any]:
    import torch

    net, x, y = build(name, S, device)
    fn = torch.compile(net) if compiled else net
    opt = torch.optim.SGD(net.parameters(), lr=float(S.lr))
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    times, losses = [], []
    for _ in range(int(S.warmup) + int(S.steps)):
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(fn(x), y)
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    timed = times[int(S.warmup):]
    return {"first_step_s": times[0], "step_s": statistics.median(timed),
            "times_s": times, "losses": losses}


def run(S: Any) -> dict[str, Any]:
    if int(S.fresh_cache) and int(S.compile):
        cache = tempfile.mkdtemp(prefix="hpcai-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    import torch

    want = str(S.device)
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(want)
    rows = []
    for name in S.models:
        eager = train(name, S, device, False)
        row: dict[str, Any] = {"model": name, "eager_step_s": eager["step_s"],
                               "eager_first_step_s": eager["first_step_s"]}
        if int(S.compile):
            comp = train(name, S, device, True)
            saved = eager["step_s"] - comp["step_s"]
            compile_s = comp["first_step_s"] - eager["step_s"]
            row.update({
                "first_compiled_step_s": comp["first_step_s"],
                "compiled_step_s": comp["step_s"], "compile_s": compile_s,
                "speedup": eager["step_s"] / comp["step_s"],
                "break_even_steps": compile_s / saved if saved > 0 else None,
                "max_loss_diff": max(abs(a - b) for a, b in
                                     zip(eager["losses"], comp["losses"])),
                "compiled_times_s": comp["times_s"]})
            print(f"{name:10s} eager {eager['step_s'] * 1e3:8.2f} ms  compiled "
                  f"{comp['step_s'] * 1e3:8.2f} ms  x{row['speedup']:.2f}  compile "
                  f"{compile_s:6.1f} s", flush=True)
        else:
            print(f"{name:10s} eager {eager['step_s'] * 1e3:8.2f} ms (not compiled)",
                  flush=True)
        row["eager_times_s"] = eager["times_s"]
        rows.append(row)
    out: dict[str, Any] = {"rows": rows, "device": str(device),
                           "compiled": bool(int(S.compile)),
                           "torch_threads": torch.get_num_threads(),
                           "load_average": list(os.getloadavg())}
    if not int(S.compile):
        out["skip_reason"] = ("--compile 0: a cold compile takes tens of seconds, "
                              "beyond this profile's budget; the cpu and gpu "
                              "profiles compile")
    return out


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check, choices=CHOICES)
