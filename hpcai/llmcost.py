"""The cost of a decoder-only (LLaMA-style) language model, from its configuration alone.

Pure arithmetic, no torch: every function takes ``cfg``, a
``transformers.LlamaConfig`` or any object with the attributes ``vocab_size``,
``hidden_size`` (``d``), ``intermediate_size`` (``d_ff``), ``num_hidden_layers``
(``L``), ``num_attention_heads`` (``H``), ``num_key_value_heads`` (``H_kv``, grouped-
query attention when smaller than ``H``), optionally ``head_dim`` (``Q``, else
``d // H``), ``tie_word_embeddings``, ``attention_bias`` and ``mlp_bias``.

The model these functions describe is ``transformers.LlamaForCausalLM``: an embedding
table ``V x d``; per layer four attention projections (``q``: ``d -> H Q``, ``k`` and
``v``: ``d -> H_kv Q``, ``o``: ``H Q -> d``), a gated MLP (``gate`` and ``up``:
``d -> d_ff``, ``down``: ``d_ff -> d``) and two RMSNorm weight vectors of ``d``; a
final RMSNorm; and the output projection ``lm_head`` (``d -> V``), which shares the
embedding's weights when ``tie_word_embeddings`` is true.

FLOPs of one training step, per token (:func:`train_flops_per_token`). The book adopts
the count of Chowdhery et al. (2022, PaLM, appendix B): ``6 N + 12 L H Q T`` where

* ``N`` is the number of parameters that take part in a matrix product: every
  projection of every layer *and* the output projection ``lm_head`` (``V d``, counted
  even when it is tied to the embedding, because the product is done either way), but
  *not* the embedding table (a look-up, no arithmetic) nor the norms (element-wise);
* ``6 = 2 x 3``: a multiply-add is two FLOPs; the backward pass does two products for
  each product of the forward pass (the gradient of the input and of the weight);
* ``12 L H Q T``: the two products of attention, ``Q K^T`` and ``P V``, each
  ``2 T H Q`` FLOPs per token and layer in the forward pass, times three with the
  backward pass. It counts the *whole* ``T x T`` score matrix, as a math-path
  attention (or a FLOP counter) does; a causal kernel that skips the masked half does
  about half of it.

Kaplan et al. (2020, table 1) write ``C = 6 N + 6 L T d`` (per token, with
``d_attn = d``): the same ``6 N`` but with the embedding *and* the output projection
left out of ``N``, and an attention term that is half of PaLM's (``6 L T d`` =
``12 L H Q T / 2`` when ``H Q = d``), i.e. the count with the masked half skipped.
:func:`flops_terms` gives every variant, so a notebook can put them side by side.
"""

from __future__ import annotations

from typing import Any

__all__ = ["dims", "flops_terms", "kv_cache_bytes_per_token", "mfu", "param_count",
           "train_flops_per_token"]


def dims(cfg: Any) -> dict[str, int]:
    """The sizes the formulas use: ``V, d, d_ff, L, H, H_kv, Q`` (head size)."""
    heads = int(cfg.num_attention_heads)
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or int(cfg.hidden_size) // heads
    return {"V": int(cfg.vocab_size), "d": int(cfg.hidden_size),
            "d_ff": int(cfg.intermediate_size), "L": int(cfg.num_hidden_layers),
            "H": heads, "H_kv": int(kv), "Q": int(head_dim)}


def param_count(cfg: Any) -> dict[str, int]:
    """Parameters of ``LlamaForCausalLM(cfg)`` by formula, by kind.

    Keys: ``"embedding"`` (``V d``), ``"attention"`` (all layers' q, k, v, o
    projections, with biases if ``attention_bias``), ``"mlp"`` (all layers' gate, up,
    down, with biases if ``mlp_bias``), ``"norm"`` (two RMSNorm weights per layer and
    the final one, ``(2 L + 1) d``), ``"lm_head"`` (``V d``, 0 when tied to the
    embedding) and ``"total"``, which equals
    ``sum(p.numel() for p in model.parameters())`` (a tied weight counted once).
    """
    s = dims(cfg)
    d, hq, hkv = s["d"], s["H"] * s["Q"], s["H_kv"] * s["Q"]
    attn = d * hq + 2 * d * hkv + hq * d
    if getattr(cfg, "attention_bias", False):  # q, k, v and o all get a bias
        attn += hq + 2 * hkv + d
    mlp = 3 * d * s["d_ff"]
    if getattr(cfg, "mlp_bias", False):
        mlp += 2 * s["d_ff"] + d
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    out = {"embedding": s["V"] * d, "attention": s["L"] * attn, "mlp": s["L"] * mlp,
           "norm": (2 * s["L"] + 1) * d, "lm_head": 0 if tied else s["V"] * d}
    out["total"] = sum(out.values())
    return out


def flops_terms(cfg: Any, seq_len: int) -> dict[str, float]:
    """The terms of the common training-FLOP formulas, per token, for context ``T``.

    ``"6N_matmul"``: ``6 x`` (layers' projections + ``lm_head``'s ``V d``), the
    parameters that enter a matrix product; ``"6N_nonembed"``: ``6 x`` the layers'
    projections only (Kaplan's ``N``); ``"6N_all"``: ``6 x`` every parameter
    (``param_count(cfg)["total"]``, embeddings included); ``"attn_palm"``:
    ``12 L H Q T`` (whole score matrix); ``"attn_kaplan"``: ``6 L T d`` (half of it
    when ``H Q = d``); and the two totals ``"palm"`` (the adopted one, equal to
    :func:`train_flops_per_token`) and ``"kaplan"`` (``6N_nonembed + attn_kaplan``).
    """
    if seq_len <= 0:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    s = dims(cfg)
    p = param_count(cfg)
    layers = p["attention"] + p["mlp"]
    t: dict[str, float] = {
        "6N_matmul": 6.0 * (layers + s["V"] * s["d"]),
        "6N_nonembed": 6.0 * layers,
        "6N_all": 6.0 * p["total"],
        "attn_palm": 12.0 * s["L"] * s["H"] * s["Q"] * seq_len,
        "attn_kaplan": 6.0 * s["L"] * seq_len * s["d"],
    }
    t["palm"] = t["6N_matmul"] + t["attn_palm"]
    t["kaplan"] = t["6N_nonembed"] + t["attn_kaplan"]
    return t


def train_flops_per_token(cfg: Any, seq_len: int) -> float:
    """FLOPs of one training step (forward + backward) per token at context ``seq_len``.

    ``6 N + 12 L H Q T`` (Chowdhery et al. 2022, appendix B) with ``N`` the
    parameters that enter a matrix product (the layers' projections and ``lm_head``,
    not the embedding look-up nor the norms): the count that
    ``torch.utils.flop_counter.FlopCounterMode`` agrees with on a forward and backward
    of ``LlamaForCausalLM`` with math-path attention. Element-wise work (norms,
    activations, softmax, rotary embedding, the loss) and the optimiser step are not
    in it. Multiply by the tokens of a step (batch x ``seq_len``) for the step.
    """
    return flops_terms(cfg, seq_len)["palm"]


def kv_cache_bytes_per_token(cfg: Any, bytes_per_elem: int) -> int:
    """Bytes the KV cache holds per token of context: ``2 L H_kv Q`` numbers (a key
    and a value vector per layer and key-value head) of ``bytes_per_elem`` bytes each.

    Multiply by the sequence length for one sequence, by the batch for a batch.
    """
    if bytes_per_elem <= 0:
        raise ValueError(f"bytes_per_elem must be positive, got {bytes_per_elem}")
    s = dims(cfg)
    return 2 * s["L"] * s["H_kv"] * s["Q"] * int(bytes_per_elem)


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the device's peak FLOP/s.

    ``tokens_per_s * flops_per_token / peak_flops`` (Chowdhery et al. 2022, section 4.1
    and appendix B): a fraction in ``[0, 1]`` for a sound measurement. The model FLOPs
    are the formula's (:func:`train_flops_per_token`), not what the hardware did:
    recomputation of activations does not raise MFU.
    """
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be positive, got {peak_flops}")
    return float(tokens_per_s) * float(flops_per_token) / float(peak_flops)
