"""Energy per unit of work: fp32 against bf16, one core against two, measured/modelled.

Three workloads, each in fp32 and in bf16:

* ``matmul``: square ``torch.matmul`` products of ``n x n`` matrices, repeated for at
  least ``min_seconds``; work is counted in FLOPs (2 n^3 a product), energy in J/GFLOP;
* ``mlp``: training steps (Adam) of a two-layer perceptron on seeded data, fp32 against
  bf16 autocast; work is counted in samples, energy per unit in J/sample (torch only,
  which keeps the smoke profile free of the transformers import);
* ``llm``: training steps of the small LLaMA of chapter 15 (``hpcai.llm_train``), fp32
  against bf16 autocast; work is counted in tokens, energy per unit in mJ/token.

On a CPU each row runs with ``torch.set_num_threads(t)`` for every ``t`` in
``--threads``. The energy of the timed interval comes from, in this order: the package
RAPL counters (``method: rapl``, the whole package, other processes included); on a GPU
the board power from NVML, sampled and integrated (``method: nvml ...``; the host CPU is
not counted); else the model ``(fixed_w + busy cores x watts_per_core) x seconds x
pue`` on a CPU or ``gpu_watts x seconds x pue`` on a GPU (``method: model``), whose
parameters are assumptions that the JSON repeats under ``power_model``. A measured
energy is multiplied by ``pue`` too: every row counts energy at the facility's meter.
"""

from __future__ import annotations

import os
import time
from typing import Any

from hpcai.cli import bench_main

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# torch and transformers are imported inside run(): a refused value answers fast
SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"workloads": ["matmul", "mlp"], "precisions": ["fp32", "bf16"],
              "threads": [1], "n": 256, "min_seconds": 0.05, "hidden": 64,
              "layers": 2, "heads": 2, "vocab": 512, "seq": 64, "batch": 4,
              "steps": 3, "warmup": 1, "mlp_batch": 256, "mlp_steps": 20,
              "watts_per_core": 5.0, "fixed_w": 0.0,
              "gpu_watts": 700.0, "pue": 1.0},
    "cpu": {"workloads": ["matmul", "mlp", "llm"], "precisions": ["fp32", "bf16"],
            "threads": [1, 2], "n": 1024, "min_seconds": 1.0, "hidden": 128,
            "layers": 2, "heads": 2, "vocab": 2048, "seq": 256, "batch": 4,
            "steps": 6, "warmup": 2, "mlp_batch": 512, "mlp_steps": 100,
            "watts_per_core": 5.0, "fixed_w": 0.0,
            "gpu_watts": 700.0, "pue": 1.0},
    "gpu": {"workloads": ["matmul", "mlp", "llm"], "precisions": ["fp32", "bf16"],
            "threads": [1], "n": 8192, "min_seconds": 3.0, "hidden": 1024,
            "layers": 8, "heads": 16, "vocab": 32000, "seq": 1024, "batch": 8,
            "steps": 20, "warmup": 3, "mlp_batch": 4096, "mlp_steps": 200,
            "watts_per_core": 5.0, "fixed_w": 0.0,
            "gpu_watts": 700.0, "pue": 1.0},
}
SIZES["cluster"] = SIZES["cpu"]
CHOICES = {"workloads": ("matmul", "mlp", "llm"), "precisions": ("fp32", "bf16")}
CPU_MODEL_LABEL = ("assumption: fixed_w + busy cores x watts_per_core; not a "
                   "measurement of this processor")
GPU_MODEL_LABEL = "assumption: the board draws gpu_watts throughout; not a measurement"


def check(S: Any) -> None:
    """Rules beyond bench_main's: a PUE is >= 1, heads divide hidden, threads fit."""
    if float(S.pue) < 1.0:
        raise ValueError(f"--pue must be >= 1 (facility power / IT power), got {S.pue}")
    if int(S.hidden) % int(S.heads):
        raise ValueError(f"--hidden {S.hidden} must be a multiple of --heads {S.heads}")
    if not list(S.threads) or any(int(t) > (os.cpu_count() or 1) for t in S.threads):
        raise ValueError(f"--threads must be a non-empty list of counts <= "
                         f"{os.cpu_count()} (the cores here), got {S.threads}")
    if not list(S.workloads) or not list(S.precisions):
        raise ValueError("--workloads and --precisions must not be empty")


class Meter:
    """Energy of one interval by the best method this machine offers."""

    def __init__(self, S: Any, cuda: bool) -> None:
        from hpcai.energy import PowerModel, RaplMeter

        self.S, self.cuda = S, cuda
        self.rapl = RaplMeter()
        self.model = PowerModel(float(S.watts_per_core), float(S.fixed_w),
                                CPU_MODEL_LABEL)

    def measure(self, fn: Any, busy_cores: int) -> tuple[float, float, str]:
        """Run ``fn()``; return (seconds, joules at the facility, method)."""
        from hpcai.energy import GpuPowerSampler, model_joules

        pue = float(self.S.pue)
        if self.cuda:
            with GpuPowerSampler(0.05) as s:
                t0 = time.perf_counter()
                fn()
                sec = time.perf_counter() - t0
            if len(s.samples) >= 2:
                return sec, s.joules * pue, f"nvml ({s.method}), board only"
            return sec, model_joules(float(self.S.gpu_watts), sec, pue), (
                f"model ({GPU_MODEL_LABEL}; NVML gave no samples: {s.method})")
        if self.rapl.available:
            with self.rapl:
                fn()
            return self.rapl.seconds, self.rapl.joules * pue, "rapl (package counters)"
        t0 = time.perf_counter()
        fn()
        sec = time.perf_counter() - t0
        return sec, model_joules(self.model.watts(busy_cores), sec, pue), "model"


def matmul_work(S: Any, precision: str, device: Any) -> tuple[Any, float, str]:
    """A function doing ``k`` products (k sized from one timed call), its FLOPs."""
    import torch

    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    n = int(S.n)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=g).to(dtype)
    b = torch.randn(n, n, device=device, generator=g).to(dtype)
    x = torch.randn(n, 1, device=device, generator=g)
    c = a @ b  # checked once before timing: C x against A (B x), in fp32
    err = (c.float() @ x - a.float() @ (b.float() @ x)).norm() / (a.float() @ (
        b.float() @ x)).norm()
    if float(err) > (1e-2 if precision == "fp32" else 5e-2):
        raise AssertionError(f"matmul {precision} n={n} failed the check ({err:.2e})")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    one = float("inf")
    for _ in range(3):  # the first call may start the thread pool: keep the fastest
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        one = min(one, max(time.perf_counter() - t0, 1e-6))
    k = max(2, int(float(S.min_seconds) / one) + 1)

    def work() -> None:
        for _ in range(k):
            a @ b
        sync()

    return work, 2.0 * n**3 * k, f"{k} products of {n}x{n}"


def mlp_work(S: Any, precision: str, device: Any) -> tuple[Any, float, str]:
    """A function doing ``mlp_steps`` Adam steps of a 256-512-10 perceptron."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(),
                                torch.nn.Linear(512, 10)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    b, steps = int(S.mlp_batch), int(S.mlp_steps)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 256, generator=g).to(device)
    y = torch.randint(0, 10, (b,), generator=g).to(device)
    losses: list[float] = []

    def one() -> Any:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16,
                            enabled=precision == "bf16"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    one()  # warm-up

    def work() -> None:
        for _ in range(steps):
            losses.append(one())
        if device.type == "cuda":
            torch.cuda.synchronize()

    work.losses = losses  # type: ignore[attr-defined]
    return work, float(b * steps), f"{steps} steps of {b} samples"


def llm_work(S: Any, precision: str, device: Any) -> tuple[Any, float, str]:
    """A function doing ``steps`` training steps (after ``warmup``), its tokens."""
    import torch

    from hpcai import llm_train as lt

    cfg = lt.llama_config(int(S.hidden), int(S.layers), int(S.heads), int(S.vocab),
                       int(S.seq), "sdpa")
    model = lt.build_model(cfg, device, seed=0)
    opt, _ = lt.make_adamw(model.parameters(), "default")
    prec = "fp32" if precision == "fp32" else "bf16_autocast"
    step = lt.make_step(model, opt, prec, device.type)
    b, seq, vocab = int(S.batch), int(S.seq), int(S.vocab)
    for i in range(int(S.warmup)):
        step(lt.token_batch(i, b, seq, vocab, device))
    batches = [lt.token_batch(int(S.warmup) + i, b, seq, vocab, device)
               for i in range(int(S.steps))]
    losses: list[float] = []

    def work() -> None:
        for tok in batches:
            losses.append(step(tok))
        if device.type == "cuda":
            torch.cuda.synchronize()

    work.losses = losses  # type: ignore[attr-defined]
    return work, float(b * seq * int(S.steps)), f"{S.steps} steps of {b}x{seq} tokens"


def run(S: Any) -> dict[str, Any]:
    import torch

    from hpcai.energy import probe

    check(S)
    cuda = S.profile in ("gpu",)
    if cuda and not torch.cuda.is_available():
        raise RuntimeError("profile gpu needs CUDA; torch.cuda.is_available() is False")
    device = torch.device("cuda" if cuda else "cpu")
    meter = Meter(S, cuda)
    exposed = probe(gpu=cuda)
    threads0 = torch.get_num_threads()
    rows = []
    for workload in S.workloads:
        for precision in S.precisions:
            for t in ([1] if cuda else [int(x) for x in S.threads]):
                if not cuda:
                    torch.set_num_threads(t)
                make = {"matmul": matmul_work, "mlp": mlp_work, "llm": llm_work}
                work, units, what = make[workload](S, precision, device)
                sec, joules, method = meter.measure(work, t)
                unit = {"matmul": "GFLOP", "mlp": "sample", "llm": "token"}[workload]
                amount = units / 1e9 if workload == "matmul" else units
                row = {"workload": workload, "precision": precision, "threads": t,
                       "work": what, "seconds": sec, "units": amount, "unit": unit,
                       "units_per_s": amount / sec, "joules": joules,
                       "watts": joules / sec / float(S.pue),
                       "joules_per_unit": joules / amount, "method": method}
                if workload != "matmul":
                    row["final_loss"] = float(work.losses[-1])
                rows.append(row)
    if not cuda:
        torch.set_num_threads(threads0)
    for r in rows:  # ratios against the fp32 row of the same workload and threads
        base = [q for q in rows if q["workload"] == r["workload"]
                and q["threads"] == r["threads"] and q["precision"] == "fp32"]
        if base:
            r["speed_vs_fp32"] = r["units_per_s"] / base[0]["units_per_s"]
            r["energy_vs_fp32"] = r["joules_per_unit"] / base[0]["joules_per_unit"]
    model = {"cpu": meter.model.as_dict() if not cuda else None,
             "gpu_watts": float(S.gpu_watts) if cuda else None, "pue": float(S.pue),
             "label": GPU_MODEL_LABEL if cuda else CPU_MODEL_LABEL}
    return {"device": device.type, "exposed": exposed, "power_model": model,
            "methods": sorted({r["method"] for r in rows}), "rows": rows}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, choices=CHOICES, check=check)
