"""The optimisation ladder of a small LLaMA on one device (chapter 15): tokens/s, peak
memory and MFU, one rung at a time.

    python scripts/bench/llm_ladder.py --profile cpu --json
    python scripts/bench/llm_ladder.py --profile gpu --json       # on a GPU
    BENCH=llm_ladder sbatch scripts/slurm/bench.sbatch            # SLURM

The model is ``transformers.LlamaForCausalLM`` from a small ``LlamaConfig`` (no
weights downloaded), trained with AdamW on seeded synthetic token ids of ``seq``
tokens (:mod:`hpcai.llm_train`). Every rung starts from the same seed, changes one
thing against the rung it is ``built_on`` and is measured the same way:

1. ``fp32_eager``: fp32, eager attention, AdamW's default loop, ``batch`` sequences;
2. ``largest_batch``: the same at the largest batch that fits (``hpcai.pipeline``'s
   doubling and bisection; on a GPU "fits" means no out-of-memory error, on a CPU
   that MemTracker's peak of one step stays within ``budget_mib``);
3. ``bf16_autocast``: ``torch.autocast`` to bf16 (weights and optimiser stay fp32);
4. ``bf16_weights``: the weights, gradients and AdamW's state in bf16;
5. ``sdpa``: ``attn_implementation="sdpa"`` instead of ``"eager"``, on the faster of
   rungs 2 to 4 (the precision the rest of the ladder keeps, named in ``precision``);
6. ``sdpa_largest_batch``: the largest batch that fits with SDPA;
7. ``checkpointing``: ``gradient_checkpointing_enable()`` on rung 6 (memory against
   time; not carried further);
8. ``compile``: rung 6 with the model under ``torch.compile`` (``compile_s``, the
   first step minus a steady one, is reported and not in tokens/s; Inductor's on-disk
   cache is a fresh temporary directory, so it is a cold compile, unless
   ``--fresh-cache 0``); ``--compile 0`` skips it with the reason;
9. ``fused_adamw``: ``torch.optim.AdamW(fused=True)`` where this PyTorch supports it
   on this device, else ``foreach`` (``optimizer`` says which).

The baseline is timed twice, first and last, and keeps the faster of the two
(``tokens_per_s_runs``), so that other work on the machine during one of them cannot
inflate the ratios. A row holds ``rung``, ``built_on``, ``batch``, ``precision``,
``attention``, ``tokens_per_s`` (``batch * seq`` over the median step after ``warmup``
steps), ``median_s`` and ``iqr_s`` of the timed steps, ``peak_bytes`` (MemTracker's
peak of one step on a CPU, ``torch.cuda.max_memory_allocated`` on a GPU), ``mfu``
(tokens/s times :func:`hpcai.llmcost.train_flops_per_token` over this machine's peak
for the precision in use, ``peak_flops``), ``ratio`` (tokens/s over rung 1's) and
``final_loss``.
Fused Triton kernels (Liger) and the flash-attention packages need a GPU and are not
rungs here; on a GPU, SDPA dispatches to a flash-attention kernel by itself.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from hpcai.cli import bench_main

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SIZES = {
    "smoke": {"hidden": 64, "layers": 2, "heads": 2, "vocab": 512, "seq": 128,
              "batch": 2, "budget_mib": 12, "max_batch": 4, "warmup": 0, "steps": 3,
              "compile": 0, "fresh_cache": 1, "lr": 3e-4, "seed": 0,
              "peak_fp32_gflops": 0.0, "peak_bf16_gflops": 0.0, "device": "cpu"},
    "cpu": {"hidden": 128, "layers": 2, "heads": 2, "vocab": 2048, "seq": 512,
            "batch": 2, "budget_mib": 256, "max_batch": 32, "warmup": 2, "steps": 5,
            "compile": 1, "fresh_cache": 1, "lr": 3e-4, "seed": 0,
            "peak_fp32_gflops": 0.0, "peak_bf16_gflops": 0.0, "device": "cpu"},
    "gpu": {"hidden": 2048, "layers": 16, "heads": 32, "vocab": 32000, "seq": 1024,
            "batch": 4, "budget_mib": 0, "max_batch": 64, "warmup": 3, "steps": 10,
            "compile": 1, "fresh_cache": 1, "lr": 3e-4, "seed": 0,
            "peak_fp32_gflops": 0.0, "peak_bf16_gflops": 0.0, "device": "cuda"},
}
SIZES["cluster"] = SIZES["cpu"]
CHOICES = {"device": ("cpu", "cuda")}
RUNGS = ("fp32_eager", "largest_batch", "bf16_autocast", "bf16_weights", "sdpa",
         "sdpa_largest_batch", "checkpointing", "compile", "fused_adamw")
COMPILE_SKIP = ("--compile 0: a cold torch.compile of the model's forward and backward "
                "takes tens of seconds, beyond this profile's budget; the cpu and gpu "
                "profiles compile")


def check(S: Any) -> None:
    if int(S.compile) not in (0, 1) or int(S.fresh_cache) not in (0, 1):
        raise ValueError(f"--compile and --fresh-cache must be 0 or 1, got "
                         f"{S.compile} and {S.fresh_cache}")
    if int(S.hidden) % int(S.heads):
        raise ValueError(f"--hidden {S.hidden} must be a multiple of --heads {S.heads}")
    if int(S.batch) > int(S.max_batch):
        raise ValueError(f"--batch {S.batch} is larger than --max-batch {S.max_batch}")
    if str(S.device) == "cpu" and float(S.budget_mib) <= 0:
        raise ValueError("--budget-mib must be positive on a CPU (it never runs out of "
                         "memory, it pages)")
    if str(S.device) == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda, but no CUDA GPU is available here; "
                             "use --device cpu")


class Ladder:
    """The model, data and measurements shared by every rung of one run."""

    def __init__(self, S: Any) -> None:
        import torch

        from hpcai import llmcost
        from hpcai.llm_train import llama_config, peak_flops

        self.S = S
        self.device = torch.device(str(S.device))
        self.cuda = self.device.type == "cuda"
        self.seq = int(S.seq)
        self.cfg = {a: llama_config(int(S.hidden), int(S.layers), int(S.heads),
                                    int(S.vocab), self.seq, a)
                    for a in ("eager", "sdpa")}
        self.flops_per_token = llmcost.train_flops_per_token(self.cfg["eager"],
                                                             self.seq)
        self.params = llmcost.param_count(self.cfg["eager"])["total"]
        self.peaks: dict[str, dict[str, Any]] = {}
        for prec, dtype, knob in (("fp32", "float32", S.peak_fp32_gflops),
                                  ("bf16", "bfloat16", S.peak_bf16_gflops)):
            if float(knob) > 0:
                self.peaks[prec] = {"flops": float(knob) * 1e9, "source": "given"}
            else:
                value, source = peak_flops(dtype, self.device)
                self.peaks[prec] = {"flops": value, "source": source}

    def setup(self, c: Any) -> tuple[Any, Any, Any, str]:
        """Model, optimiser and step function for step configuration ``c``."""
        import torch

        from hpcai.llm_train import build_model, make_adamw, make_step

        dtype = torch.bfloat16 if c.precision == "bf16_weights" else torch.float32
        model = build_model(self.cfg[c.attention], self.device, int(self.S.seed), dtype)
        if c.checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        opt, impl = make_adamw(model.parameters(), c.optimizer, float(self.S.lr))
        step = make_step(model, opt, c.precision, self.device.type, c.compiled)
        return model, opt, step, impl

    def tokens(self, i: int, batch: int) -> Any:
        from hpcai.llm_train import token_batch

        return token_batch(i, batch, self.seq, int(self.S.vocab), self.device,
                           int(self.S.seed))

    def peak_of(self, c: Any) -> int:
        """Peak memory of one step of configuration ``c`` (a fresh model)."""
        from hpcai.llm_train import step_peak_bytes

        model, opt, step, _ = self.setup(c)
        peak, _ = step_peak_bytes(step, self.tokens(0, c.batch), model, opt, self.cuda)
        return peak

    def largest(self, c: Any) -> tuple[int, list[dict[str, Any]]]:
        """The largest batch of configuration ``c`` that fits, and every probe."""
        from dataclasses import replace

        from hpcai.pipeline import budget_fits, cuda_step_fits, largest_batch

        peaks: dict[int, int] = {}
        if self.cuda:
            def one(b: int) -> None:
                _, _, step, _ = self.setup(replace(c, batch=b))
                step(self.tokens(0, b))
            fits = cuda_step_fits(one, peaks)
        else:
            fits = budget_fits(lambda b: self.peak_of(replace(c, batch=b)),
                               int(float(self.S.budget_mib) * 2**20), peaks)
        best, tried = largest_batch(fits, start=c.batch, limit=int(self.S.max_batch))
        return best, [{"batch": b, "fits": ok, "peak_bytes": peaks.get(b)}
                      for b, ok in tried]

    def measure(self, rung: str, built_on: str | None, c: Any) -> dict[str, Any]:
        """One rung: peak memory of a step, then warm-up and timed steps."""
        from hpcai import llmcost
        from hpcai.llm_train import step_peak_bytes, time_steps

        model, opt, step, impl = self.setup(c)
        t0 = time.perf_counter()
        first = step(self.tokens(0, c.batch))  # compiles, if compiled
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        first_s = time.perf_counter() - t0
        del first
        if c.compiled and not self.cuda:
            # MemTracker's dispatch mode would send the compiled graph back through
            # tracing; the peak of the same configuration uncompiled stands in for it
            from dataclasses import replace

            peak = self.peak_of(replace(c, compiled=False))
            method = "MemTracker peak of one step of the same model uncompiled"
        else:
            peak, method = step_peak_bytes(step, self.tokens(0, c.batch), model, opt,
                                           self.cuda)
        t = time_steps(step, lambda i: self.tokens(i + 1, c.batch),
                       int(self.S.warmup), int(self.S.steps), self.cuda)
        tps = c.batch * self.seq / t["median_s"]
        prec = "fp32" if c.precision == "fp32" else "bf16"
        row = {"rung": rung, "built_on": built_on, "batch": c.batch,
               "precision": c.precision, "attention": c.attention,
               "checkpointing": c.checkpointing, "compiled": c.compiled,
               "optimizer": impl, "config": c.describe(),
               "tokens_per_s": tps, "median_s": t["median_s"], "iqr_s": t["iqr_s"],
               "tokens_per_s_iqr": tps * t["iqr_s"] / t["median_s"],
               "times_s": t["times_s"], "first_step_s": first_s,
               "peak_bytes": int(peak), "peak_method": method,
               "mfu": llmcost.mfu(tps, self.flops_per_token, self.peaks[prec]["flops"]),
               "peak_flops": self.peaks[prec]["flops"], "final_loss": t["losses"][-1]}
        if c.compiled:
            row["compile_s"] = max(0.0, first_s - t["median_s"])
        print(f"{rung:19s} batch {c.batch:3d}  {tps:10,.0f} tokens/s  peak "
              f"{peak / 2**20:9.1f} MiB  MFU {row['mfu']:.3f}  ({row['config']})",
              flush=True)
        return row


def run(S: Any) -> dict[str, Any]:
    from dataclasses import replace

    import torch

    from hpcai.llm_train import StepConfig

    if int(S.compile) and int(S.fresh_cache):  # a cold compile, as a new job pays it
        cache = tempfile.mkdtemp(prefix="hpcai-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        torch._dynamo.reset()
    torch.manual_seed(int(S.seed))
    L = Ladder(S)
    rows: list[dict[str, Any]] = []
    by: dict[str, dict[str, Any]] = {}
    conf: dict[str, Any] = {}

    def add(rung: str, built_on: str | None, c: Any, **extra: Any) -> None:
        row = L.measure(rung, built_on, c)
        row.update(extra)
        rows.append(row)
        by[rung], conf[rung] = row, c

    base = StepConfig(batch=int(S.batch))
    add("fp32_eager", None, base)
    best, tried = L.largest(base)
    add("largest_batch", "fp32_eager", replace(base, batch=max(best, 1)), tried=tried)
    big = conf["largest_batch"]
    add("bf16_autocast", "largest_batch", replace(big, precision="bf16_autocast"))
    add("bf16_weights", "largest_batch", replace(big, precision="bf16_weights"))
    keep = max(("largest_batch", "bf16_autocast", "bf16_weights"),
               key=lambda r: by[r]["tokens_per_s"])
    add("sdpa", keep, replace(conf[keep], attention="sdpa"))
    best, tried = L.largest(conf["sdpa"])
    add("sdpa_largest_batch", "sdpa", replace(conf["sdpa"], batch=max(best, 1)),
        tried=tried)
    top = conf["sdpa_largest_batch"]
    add("checkpointing", "sdpa_largest_batch", replace(top, checkpointing=True))
    last = "sdpa_largest_batch"
    if int(S.compile):
        add("compile", last, replace(top, compiled=True))
        last = "compile"
    else:
        rows.append({"rung": "compile", "built_on": last, "skipped": True,
                     "reason": COMPILE_SKIP})
        print(f"{'compile':19s} skipped: {COMPILE_SKIP}", flush=True)
    add("fused_adamw", last, replace(conf[last], optimizer="fused"))
    # the baseline again, last: other work on the machine during the first run would
    # otherwise inflate every ratio; the ratios use the faster of the two (conservative)
    again = L.measure("fp32_eager", None, base)
    first = by["fp32_eager"]
    first["tokens_per_s_runs"] = [first["tokens_per_s"], again["tokens_per_s"]]
    if again["tokens_per_s"] > first["tokens_per_s"]:
        for k in ("tokens_per_s", "median_s", "iqr_s", "tokens_per_s_iqr", "times_s",
                  "mfu"):
            first[k] = again[k]
    ref = first["tokens_per_s"]
    for r in rows:
        if "tokens_per_s" in r:
            r["ratio"] = r["tokens_per_s"] / ref
    measured = [r for r in rows if "tokens_per_s" in r]
    fastest = max(measured, key=lambda r: r["tokens_per_s"])
    out: dict[str, Any] = {
        "rows": rows, "device": str(L.device), "precision_kept": by[keep]["precision"],
        "best_rung": fastest["rung"], "best_ratio": fastest["ratio"],
        "model": {"hidden": int(S.hidden), "layers": int(S.layers),
                  "heads": int(S.heads), "vocab": int(S.vocab), "seq": L.seq,
                  "params": L.params},
        "flops_per_token": L.flops_per_token, "peaks": L.peaks,
        "budget_bytes": (None if L.cuda else int(float(S.budget_mib) * 2**20)),
        "statistic": "median over the timed steps after warm-up",
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "load_average": list(os.getloadavg())}
    if L.cuda:
        out["gpu"] = torch.cuda.get_device_name(0)
    if not int(S.compile):
        out["skip_reason"] = COMPILE_SKIP
    return out


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check, choices=CHOICES)
