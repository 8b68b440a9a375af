"""Training steps of a small LLaMA for chapter 15: the model, the data, the optimiser,
the timing loop and the peak memory, shared by ``scripts/bench/llm_ladder.py`` and
``scripts/bench/llm_scaling.py``.

The model is Hugging Face's ``LlamaForCausalLM`` built from a small ``LlamaConfig``
(:func:`llama_config`), initialised from a seed; no weights are downloaded. The data
are synthetic token ids (:func:`token_batch`): batch ``i`` of the run is drawn from a
generator seeded with ``(seed, i)``, so every process, and every rung of the ladder,
sees the same tokens for the same step. The loss is the model's own next-token
cross-entropy (``labels = input_ids``).

A step (:func:`make_step`) can run in fp32, under ``torch.autocast`` to bf16, or with
the weights themselves in bf16; with eager or SDPA attention; with activation
checkpointing (``gradient_checkpointing_enable``); compiled with ``torch.compile``;
with AdamW in its plain, ``foreach`` or ``fused`` implementation (:func:`make_adamw`
says which one it got). :func:`time_steps` runs warm-up steps, then timed steps, with
a device synchronisation before each clock read on a GPU, and returns the median and
the inter-quartile range. :func:`step_peak_bytes` is the peak memory of one step:
``torch.cuda.max_memory_allocated`` on a GPU, ``MemTracker``'s peak on a CPU.

:func:`peak_flops` is the machine's own ceiling for a precision: chapter 1's record
when this machine left one (``ch01_gemm_peak_<dtype>_GFLOPs``), else the best rate of a
few square ``torch.matmul`` products measured here, and it says which.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# torch and transformers are imported inside the functions: a refused value answers fast
PRECISIONS = ("fp32", "bf16_autocast", "bf16_weights")
ATTENTIONS = ("eager", "sdpa")

__all__ = ["ATTENTIONS", "PRECISIONS", "StepConfig", "build_model", "llama_config",
           "make_adamw", "make_step", "peak_flops", "quartiles", "step_peak_bytes",
           "time_steps", "token_batch"]


@dataclass(frozen=True)
class StepConfig:
    """What one rung of the ladder changes: precision, attention, memory, compiler,
    optimiser, and the batch (sequences of ``seq`` tokens)."""

    batch: int
    precision: str = "fp32"
    attention: str = "eager"
    checkpointing: bool = False
    compiled: bool = False
    optimizer: str = "default"  # default | foreach | fused

    def describe(self) -> str:
        """A short label such as ``fp32, sdpa, compiled, fused AdamW``."""
        parts = [self.precision, self.attention]
        if self.checkpointing:
            parts.append("checkpointing")
        if self.compiled:
            parts.append("compiled")
        parts.append(f"{self.optimizer} AdamW")
        return ", ".join(parts)


def llama_config(hidden: int, layers: int, heads: int, vocab: int, seq: int,
                 attention: str = "eager") -> Any:
    """A small ``LlamaConfig``: ``hidden`` wide, ``layers`` deep, ``heads`` heads (as
    many key-value heads), a SwiGLU MLP of about ``8/3 hidden`` (a multiple of 32),
    tied embeddings, positions up to ``seq``."""
    from transformers import LlamaConfig

    inter = max(32, (8 * hidden // 3 + 31) // 32 * 32)
    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                       num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=heads, max_position_embeddings=seq,
                       tie_word_embeddings=True, attn_implementation=attention,
                       use_cache=False)


def build_model(cfg: Any, device: Any, seed: int = 0, dtype: Any = None) -> Any:
    """``LlamaForCausalLM(cfg)`` from ``seed``, in training mode, on ``device``."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model = model.to(device=device, dtype=dtype or torch.float32)
    model.train()
    return model


def token_batch(step: int, batch: int, seq: int, vocab: int, device: Any,
                seed: int = 0) -> Any:
    """Batch ``step`` of the synthetic data: ``(batch, seq)`` token ids, seeded."""
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(0, vocab, (batch, seq), generator=g).to(device)


def make_adamw(params: Any, kind: str, lr: float = 3e-4) -> tuple[Any, str]:
    """AdamW in implementation ``kind``; returns it and the implementation it got.

    ``default`` lets PyTorch choose (a loop over the tensors on a CPU, ``foreach`` on
    a GPU); ``foreach``
    groups the tensors into a few multi-tensor kernels; ``fused`` runs the whole update
    in one kernel per group where this PyTorch supports it on this device, else it
    falls back to ``foreach`` and says so."""
    import torch

    params = list(params)
    if kind == "fused":
        try:
            opt = torch.optim.AdamW(params, lr=lr, fused=True)
            return opt, "fused"
        except (RuntimeError, ValueError, TypeError) as err:
            opt = torch.optim.AdamW(params, lr=lr, foreach=True)
            return opt, f"foreach (fused refused: {str(err).splitlines()[0][:80]})"
    if kind == "foreach":
        return torch.optim.AdamW(params, lr=lr, foreach=True), "foreach"
    on_cuda = bool(params) and params[0].device.type == "cuda"
    # PyTorch's own choice: the multi-tensor path for CUDA tensors, a loop otherwise
    return torch.optim.AdamW(params, lr=lr), ("default (foreach)" if on_cuda
                                              else "default (for-loop)")


def make_step(model: Any, opt: Any, precision: str, device_type: str,
              compiled: bool = False) -> Callable[[Any], Any]:
    """``step(tokens) -> loss``: forward (autocast to bf16 for ``bf16_autocast``),
    backward, optimiser step. With ``compiled`` the model's forward (and so its
    backward) goes through ``torch.compile``; the optimiser stays eager."""
    import torch

    fwd = torch.compile(model) if compiled else model
    amp = precision == "bf16_autocast"

    def step(tokens: Any) -> Any:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            loss = fwd(input_ids=tokens, labels=tokens).loss
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile), inclusive method."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def time_steps(step: Callable[[Any], Any], batches: Callable[[int], Any], warmup: int,
               steps: int, cuda: bool) -> dict[str, Any]:
    """``warmup`` untimed steps, then ``steps`` timed ones (synchronised on a GPU).

    Returns ``median_s``, ``iqr_s``, every step's time (``warmup_s``, ``times_s``) and
    the losses (``losses``, ``float`` after each step)."""
    import torch

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    warm, times, losses = [], [], []
    for i in range(warmup + steps):
        tokens = batches(i)
        sync()
        t0 = time.perf_counter()
        loss = step(tokens)
        sync()
        (warm if i < warmup else times).append(time.perf_counter() - t0)
        losses.append(float(loss))
    q1, med, q3 = quartiles(times)
    return {"median_s": med, "iqr_s": q3 - q1, "warmup_s": warm, "times_s": times,
            "losses": losses}


def step_peak_bytes(step: Callable[[Any], Any], tokens: Any, model: Any, opt: Any,
                    cuda: bool) -> tuple[int, str]:
    """The peak memory of one step and how it was measured."""
    import torch

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step(tokens)
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
    from hpcai.parallel.tracking import measure_peak

    _, snap = measure_peak(lambda: step(tokens), model, opt)
    return int(snap["Total"]), "MemTracker peak of one step"


def _matmul_peak(dtype: str, device: Any, n: int = 1024, repeats: int = 5) -> float:
    """The best FLOP/s of ``repeats`` ``n x n`` products in ``dtype`` on ``device``."""
    import torch

    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    a = torch.randn(n, n, device=device).to(dt)
    b = torch.randn(n, n, device=device).to(dt)
    cuda = torch.device(device).type == "cuda"
    best = float("inf")
    for _ in range(repeats + 1):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def peak_flops(dtype: str, device: Any, n: int | None = None) -> tuple[float, str]:
    """This machine's ceiling in FLOP/s for ``dtype`` (``float32`` or ``bfloat16``).

    The best of a few ``n x n`` ``torch.matmul`` products measured now (``n``: 1024
    on a CPU, 8192 on a GPU, whose peak needs large products) or, on a CPU, the best
    of chapter 1's recorded GEMM peaks for the same CPU if that is higher (a ceiling is
    the best rate seen). Returns the rate and where it came from."""
    import torch

    from hpcai.measure import machine
    from hpcai.results import load_results

    n = n or (8192 if torch.device(device).type == "cuda" else 1024)
    now = _matmul_peak(dtype, device, n)
    if torch.device(device).type == "cpu":
        cpu = machine().get("cpu")
        recs = [float(r["value"]) * 1e9
                for r in load_results(f"ch01_gemm_peak_{dtype}_GFLOPs")
                if r.get("machine", {}).get("cpu") == cpu]
        if recs and max(recs) > now:  # a ceiling is the best rate ever seen
            return max(recs), "chapter 1's GEMM records (the best)"
    return now, f"torch.matmul n={n} measured here"
