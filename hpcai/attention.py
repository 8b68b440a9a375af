"""Causal multi-head self-attention written by hand, and what it costs to count and hold.

The hand-written version (:func:`causal_attention`) is the textbook formula of Vaswani
et al. (2017): scores ``S = Q K^T / sqrt(d_head)``, a causal mask that sets the scores
of future positions to ``-inf``, a softmax over the keys, and ``O = P V``. It stores
the ``T x T`` score and probability matrices of every head, which is the memory a fused
kernel (``torch.nn.functional.scaled_dot_product_attention``, FlashAttention, Dao et
al. 2022) avoids by working on blocks of keys with a running softmax.

:class:`CausalSelfAttention` wraps either computation in the projections of a
transformer layer (one fused ``qkv`` projection, ``n_heads`` heads, an output
projection). :func:`attention_flops` is the count of the two matrix products, and
:func:`cpu_sdpa_flop_mapping` teaches ``torch.utils.flop_counter.FlopCounterMode`` the
CPU's fused kernel, which its registry does not list (PyTorch 2.13).
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["IMPLS", "CausalSelfAttention", "attention_flops", "causal_attention",
           "cpu_sdpa_flop_mapping", "merge_heads", "split_heads"]

IMPLS = ("eager", "sdpa")
"""``eager``: :func:`causal_attention`; ``sdpa``: PyTorch's fused kernel."""


# --- hand-written attention (start)
def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of ``q, k, v`` of shape ``(batch, heads, T, d_head)``.

    Every query position ``i`` attends to the key positions ``j <= i``; the scores
    are scaled by ``1 / sqrt(d_head)`` so that their spread does not grow with the
    head size. Holds the ``(batch, heads, T, T)`` scores and probabilities.
    """
    t, d_head = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_head)           # (B, H, T, T)
    future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    scores = scores.masked_fill(future, float("-inf"))              # j > i: no weight
    probs = torch.softmax(scores, dim=-1)                           # rows sum to 1
    return probs @ v                                                # (B, H, T, d_head)
# --- hand-written attention (end)


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``(B, T, n_heads * d_head) -> (B, n_heads, T, d_head)``."""
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, n_heads, T, d_head) -> (B, T, n_heads * d_head)``."""
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)


class CausalSelfAttention(torch.nn.Module):
    """Multi-head causal self-attention of width ``d_model`` with ``n_heads`` heads.

    ``impl="eager"`` computes the heads with :func:`causal_attention`; ``impl="sdpa"``
    with ``torch.nn.functional.scaled_dot_product_attention(..., is_causal=True)``.
    Both share the weights, so one module compares the two.
    """

    def __init__(self, d_model: int, n_heads: int, impl: str = "eager",
                 bias: bool = False) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not a multiple of n_heads={n_heads}")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, not {impl!r}")
        self.n_heads, self.impl = n_heads, impl
        self.qkv = torch.nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = torch.nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, T, d_model)`` -> ``(B, T, d_model)``."""
        import torch.nn.functional as F

        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))
        if self.impl == "eager":
            o = causal_attention(q, k, v)
        else:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(merge_heads(o))


def attention_flops(batch: int, heads: int, t_q: int, t_k: int, d_head: int,
                    backward: bool = False) -> int:
    """FLOPs of ``Q K^T`` and ``P V`` over the whole score matrix (no causal saving):
    ``4 B H T_q T_k d_head`` forward, twice that more for the backward pass (the
    gradients of both operands of both products)."""
    fwd = 4 * batch * heads * t_q * t_k * d_head
    return 3 * fwd if backward else fwd


def cpu_sdpa_flop_mapping() -> dict[Any, Any]:
    """``custom_mapping`` for ``FlopCounterMode`` that counts the CPU's fused attention.

    On a CPU, ``scaled_dot_product_attention`` runs
    ``aten._scaled_dot_product_flash_attention_for_cpu`` (and its ``_backward``), which
    the counter's registry omits: without this mapping the attention products count
    zero. The counts are the registry's own for the GPU kernels: ``4 B H T S d`` forward
    and ``8 B H T S d`` backward, the whole score matrix, whatever the mask.
    """
    aten = torch.ops.aten

    def fwd(query: Any, key: Any, *args: Any, **kwargs: Any) -> int:
        b, h, t, d = query
        return attention_flops(b, h, t, key[-2], d)

    def bwd(grad_out: Any, query: Any, key: Any, *args: Any, **kwargs: Any) -> int:
        b, h, t, d = query
        return 2 * attention_flops(b, h, t, key[-2], d)

    return {aten._scaled_dot_product_flash_attention_for_cpu: fwd,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: bwd}
