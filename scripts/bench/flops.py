"""FLOPs of one training step of a LLaMA-style model: counted, and by formula.

    python scripts/bench/flops.py --profile cpu --json
    python scripts/bench/flops.py --profile gpu --json      # on a GPU (LLaMA-3.2-1B shape)

Builds ``transformers.LlamaForCausalLM`` from a ``LlamaConfig`` (random weights, nothing
downloaded), checks that ``hpcai.llmcost.param_count`` equals the model's own count, and
runs one forward and backward pass on ``batch`` sequences of ``seq_len`` tokens under
``torch.utils.flop_counter.FlopCounterMode`` three times:

* ``flops_sdpa_registry``: attention through PyTorch's fused kernel
  (``attn_implementation="sdpa"``) with the counter's own registry. On a CPU the kernel
  is ``aten._scaled_dot_product_flash_attention_for_cpu``, which the registry does not
  list, so the attention products are missing from this count;
* ``flops_counted``: the same run with ``hpcai.attention.cpu_sdpa_flop_mapping`` added
  (attention counted);
* ``flops_eager``: ``attn_implementation="eager"`` (attention as ``matmul``, which the
  counter knows).

``flops_formula`` is ``hpcai.llmcost.train_flops_per_token`` times the tokens of the
step; ``terms`` gives the other common formulas for the same step (Kaplan et al. 2020;
``6 N`` with every parameter). ``step_s`` times the forward and backward pass (no
counter, no optimiser) and ``model_flops_per_s`` is ``flops_formula / median``; with a
positive ``peak_tflops`` ``mfu`` is that over the peak.
"""

from __future__ import annotations

import os
from typing import Any

from hpcai.cli import bench_main

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SIZES = {
    "smoke": {"vocab": 1024, "hidden": 64, "intermediate": 176, "layers": 2,
              "heads": 4, "kv_heads": 2, "seq_len": 64, "batch": 2, "tied": 0,
              "repeats": 3, "peak_tflops": 0.0},
    "cpu": {"vocab": 8192, "hidden": 256, "intermediate": 704, "layers": 4,
            "heads": 8, "kv_heads": 2, "seq_len": 256, "batch": 2, "tied": 0,
            "repeats": 3, "peak_tflops": 0.0},
    # the shape of LLaMA-3.2-1B (tied embeddings), bf16 autocast; H200 dense bf16 peak
    "gpu": {"vocab": 128256, "hidden": 2048, "intermediate": 8192, "layers": 16,
            "heads": 32, "kv_heads": 8, "seq_len": 2048, "batch": 4, "tied": 1,
            "repeats": 10, "peak_tflops": 989.0},
}
SIZES["cluster"] = SIZES["cpu"]


def check(S: Any) -> None:
    if S.hidden % S.heads:
        raise ValueError(f"--hidden ({S.hidden}) must be a multiple of --heads "
                         f"({S.heads})")
    if S.heads % S.kv_heads:
        raise ValueError(f"--heads ({S.heads}) must be a multiple of --kv-heads "
                         f"({S.kv_heads})")
    if S.tied not in (0, 1):
        raise ValueError(f"--tied must be 0 or 1, got {S.tied}")


def make_config(S: Any, attn: str = "sdpa") -> Any:
    """The ``LlamaConfig`` of settings ``S`` with attention implementation ``attn``."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=S.vocab, hidden_size=S.hidden,
                      intermediate_size=S.intermediate, num_hidden_layers=S.layers,
                      num_attention_heads=S.heads, num_key_value_heads=S.kv_heads,
                      max_position_embeddings=max(2048, S.seq_len),
                      tie_word_embeddings=bool(S.tied))
    cfg._attn_implementation = attn
    return cfg


def run(S: Any) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaForCausalLM

    from hpcai import llmcost, time_it
    from hpcai.attention import cpu_sdpa_flop_mapping

    device = "cuda" if S.profile == "gpu" and torch.cuda.is_available() else "cpu"
    cuda = device == "cuda"
    torch.manual_seed(0)
    model = LlamaForCausalLM(make_config(S, "sdpa")).to(device)
    n_model = sum(p.numel() for p in model.parameters())
    params = llmcost.param_count(model.config)
    ids = torch.randint(0, S.vocab, (S.batch, S.seq_len), device=device)
    tokens = S.batch * S.seq_len

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()

    def count(mapping: dict | None = None) -> tuple[int, dict[str, int]]:
        fc = FlopCounterMode(display=False, custom_mapping=mapping or {})
        with fc:
            step()
        ops = {str(k): int(v) for k, v in fc.get_flop_counts()["Global"].items()}
        return int(fc.get_total_flops()), ops

    registry, _ = count()
    counted, ops = count(cpu_sdpa_flop_mapping())
    model.config._attn_implementation = "eager"
    model.set_attn_implementation("eager")
    eager, ops_eager = count()
    model.set_attn_implementation("sdpa")
    timing = time_it(step, warmup=1, repeats=S.repeats, sync="cuda" if cuda else None)

    formula = llmcost.train_flops_per_token(model.config, S.seq_len) * tokens
    terms = {k: v * tokens for k, v in llmcost.flops_terms(model.config,
                                                           S.seq_len).items()}
    rate = formula / timing.median
    return {"device": device, "tokens": tokens, "params_model": int(n_model),
            "params_formula": params, "flops_sdpa_registry": registry,
            "flops_counted": counted, "flops_eager": eager, "flops_formula": formula,
            "counted_over_formula": counted / formula, "terms": terms,
            "ops_counted": ops, "ops_eager": ops_eager,
            "step_s": timing.as_dict(), "tokens_per_s": tokens / timing.median,
            "model_flops_per_s": rate,
            "mfu": rate / (S.peak_tflops * 1e12) if S.peak_tflops > 0 else None,
            "autocast": "bf16" if cuda else None, "torch": torch.__version__}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check)
