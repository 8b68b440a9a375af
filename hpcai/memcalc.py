"""The memory of training as a calculator: what a step holds, from shapes and dtypes.

A training step keeps four kinds of tensors alive:

* **parameters** ``P`` (``n`` numbers in the weights' dtype);
* **gradients**, one per parameter, in the weights' dtype;
* **optimiser state**: none for plain SGD, one copy for SGD with momentum, two for Adam
  (first and second moments, Kingma and Ba 2015), plus a step counter per tensor;
* **activations**: the tensors the forward pass saves for the backward pass, from the
  shapes of the layers and the batch (see :func:`mlp_activations` and
  :func:`transformer_activations`).

With mixed precision the weights and gradients a step computes with are 16-bit, while
the optimiser keeps fp32 master weights and fp32 moments: ``2 + 2 + (4 + 4 + 4) = 16``
bytes per parameter for Adam, the ``16 Psi`` of the ZeRO paper (Rajbhandari et al.
2020, section 3.1, "K = 12"). ``torch.autocast`` is the other kind of mixed precision:
the weights and their gradients stay fp32, only the activations (the inputs of the
matrix products, cast on the fly) are 16-bit.

Parallelism divides these terms (Rajbhandari et al. 2020; Shoeybi et al. 2019): data
parallelism replicates all of them; ZeRO-1 shards the optimiser state over ``N`` ranks,
ZeRO-2 the gradients too, ZeRO-3 the parameters too; tensor parallelism over ``N``
splits the weights of the blocks (and so their gradients and state) and the hidden
activations inside a block, while the activations at a block's boundary stay whole.

:func:`peak_bytes` turns the terms into the peak of one step, as a memory tracker sees
it: the larger of the backward pass (parameters, every gradient, every activation) and
the optimiser step (parameters, gradients, the state, and the optimiser's temporaries).
The formula knows nothing of the allocator (caching, rounding to blocks), of a kernel's
workspace or of temporaries of the backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the calculator itself needs no torch (nor its import time)
    import torch

__all__ = ["DTYPE_BYTES", "OPT_COPIES", "Memory", "backward_peak", "divide",
           "dtype_bytes",
           "linear_params", "mixed_adam_bytes_per_param", "mlp_activations",
           "mlp_params", "optimizer_bytes", "peak_bytes", "training_memory",
           "transformer_activations", "transformer_params"]

DTYPE_BYTES: dict[str, int] = {"fp32": 4, "float32": 4, "tf32": 4, "fp16": 2,
                               "float16": 2, "bf16": 2, "bfloat16": 2, "fp8": 1,
                               "fp64": 8, "float64": 8}
"""Bytes per number of each dtype, by its short and its torch name."""

OPT_COPIES: dict[str, int] = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}
"""Copies of the parameters each optimiser keeps as state."""

OPT_TEMPS: dict[str, int] = {"sgd": 0, "momentum": 0, "adam": 2, "adamw": 2}
"""Temporaries (in copies of the largest parameter tensor) of one-tensor-at-a-time
(``foreach=False``) updates: Adam's ``sqrt(v) / c`` makes two before ``+ eps``."""


def dtype_bytes(dtype: str | torch.dtype) -> int:
    """Bytes per element of ``dtype`` (``"bf16"``, ``torch.float32``, ...)."""
    if not isinstance(dtype, str):  # a torch.dtype knows its size
        return int(dtype.itemsize)
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of "
                         f"{sorted(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


def linear_params(n_in: int, n_out: int, bias: bool = True) -> int:
    """Numbers in one ``nn.Linear(n_in, n_out)``."""
    return n_in * n_out + (n_out if bias else 0)


def mlp_params(dims: Sequence[int], bias: bool = True) -> list[int]:
    """Sizes of every parameter tensor of Linear layers ``dims[0] -> dims[1] -> ...``
    (weight then bias, layer by layer)."""
    sizes: list[int] = []
    for a, b in zip(dims[:-1], dims[1:]):
        sizes.append(a * b)
        if bias:
            sizes.append(b)
    return sizes


def transformer_params(dim: int, hidden: int) -> list[int]:
    """Sizes of the parameter tensors of one pre-norm transformer block: two layer
    norms (weight, bias), q, k, v, o (``dim x dim`` and a bias), fc1 and fc2."""
    norms = [dim, dim, dim, dim]
    attn = [dim * dim, dim] * 4
    return norms + attn + mlp_params([dim, hidden, dim])


def optimizer_bytes(n_params: int, optimizer: str, dtype: str = "fp32",
                    n_tensors: int = 0) -> int:
    """Bytes of optimiser state: ``OPT_COPIES`` copies of the parameters in ``dtype``
    and, for Adam, one fp32 step counter per parameter tensor (``n_tensors``)."""
    if optimizer not in OPT_COPIES:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of "
                         f"{sorted(OPT_COPIES)}")
    steps = 4 * n_tensors if OPT_COPIES[optimizer] == 2 else 0
    return OPT_COPIES[optimizer] * n_params * dtype_bytes(dtype) + steps


def mixed_adam_bytes_per_param(weights: str = "bf16", master: str = "fp32") -> int:
    """Bytes per parameter of mixed-precision Adam: 16-bit weights and gradients, fp32
    master weights and two fp32 moments (16 for bf16/fp16 and fp32; ZeRO's ``2 + 2 +
    K`` with ``K = 12``)."""
    w, m = dtype_bytes(weights), dtype_bytes(master)
    return 2 * w + 3 * m


def mlp_activations(batch: int, dim: int, hidden: int, n_blocks: int,
                    dtype: str = "fp32", loss: bool = True) -> int:
    """Saved bytes of ``n_blocks`` residual blocks ``x + fc2(tanh(fc1(x)))`` on
    ``(batch, dim)``: fc1 saves its input ``x`` (``batch * dim``), tanh saves its output
    (``batch * hidden``), which is also the input fc2 saves (one tensor, counted once);
    ``loss``: the mean-squared error saves the network's output (``batch * dim``)."""
    per_block = batch * (dim + hidden)
    total = n_blocks * per_block + (batch * dim if loss else 0)
    return total * dtype_bytes(dtype)


def transformer_activations(batch: int, seq: int, dim: int, hidden: int, heads: int,
                            n_blocks: int, dtype: str = "fp32",
                            loss: bool = True) -> int:
    """Saved bytes of ``n_blocks`` pre-norm transformer blocks on ``(batch, seq, dim)``.

    Per block, with ``t = batch * seq`` positions: each layer norm saves its input and
    fp32 mean and 1/std per position (``t * dim + 2 t``, twice); q, k, v save the
    normed input (once, shared); attention saves q, k, v, its output and the
    log-sum-exp per head and position (``4 t dim + t heads``, a flash-style kernel that
    does not keep the ``seq x seq`` scores); o saves the heads made contiguous (``t
    dim``); fc1 saves the second norm's output, GELU its input (``t hidden``), fc2 the
    GELU output (``t hidden``). Korthikanti et al. (2022) count the same tensors for
    GPT layers (``sbh(34 + 5 a s / h)`` bytes in 16 bits, with dropout masks and the
    scores).
    """
    t = batch * seq
    b = dtype_bytes(dtype)
    norms = 2 * (t * dim * b + 2 * t * 4)
    attn = (t * dim + 4 * t * dim + t * dim) * b + t * heads * 4
    mlp = (t * dim + 2 * t * hidden) * b
    total = n_blocks * (norms + attn + mlp)
    return total + (t * dim * b if loss else 0)


@dataclass(frozen=True)
class Memory:
    """Bytes of each kind of tensor a training step holds, on one rank."""

    parameters: int
    gradients: int
    optimizer: int
    activations: int
    optimizer_temps: int = 0
    inputs: int = 0  # the batch (inputs and targets), alive all step
    blocks: int = 1  # equal blocks the backward pass walks through, last first

    @property
    def static(self) -> int:
        """Parameters, gradients and optimiser state: what lives between steps."""
        return self.parameters + self.gradients + self.optimizer

    @property
    def total(self) -> int:
        """Everything at once: the classic upper bound."""
        return self.static + self.activations + self.inputs

    def as_dict(self) -> dict[str, int]:
        return {"parameters": self.parameters, "gradients": self.gradients,
                "optimizer": self.optimizer, "activations": self.activations,
                "optimizer_temps": self.optimizer_temps, "inputs": self.inputs,
                "peak": peak_bytes(self),
                "total": self.total}


def training_memory(sizes: Sequence[int], activations: int, optimizer: str = "adam",
                    weights: str = "fp32", master: str | None = None,
                    inputs: int = 0, blocks: int = 1) -> Memory:
    """The terms for parameter tensors of ``sizes`` (numbers each) in ``weights``.

    ``master`` (e.g. ``"fp32"`` with 16-bit ``weights``): mixed precision, the
    optimiser also keeps fp32 master weights, and its moments are in ``master``."""
    n = sum(sizes)
    w = dtype_bytes(weights)
    state_dtype = master or weights
    opt = optimizer_bytes(n, optimizer, state_dtype, len(sizes))
    if master is not None:
        opt += n * dtype_bytes(master)
    temps = OPT_TEMPS[optimizer] * max(sizes, default=0) * dtype_bytes(state_dtype)
    return Memory(n * w, n * w, opt, activations, temps, inputs, blocks)


def backward_peak(m: Memory) -> int:
    """Gradients and activations at the worst point of the backward pass through
    ``m.blocks`` equal blocks, last block first: before block ``i`` is done, the
    activations of blocks ``0..i`` are still saved and the gradients of blocks ``i..``
    written. The sum is linear in ``i``, so its largest value is at an end: the first
    block's gradients with every activation, or every gradient with the first block's
    activations (the loss's saved output is counted with the activations)."""
    k = max(1, m.blocks)
    return max(m.activations + m.gradients // k, m.activations // k + m.gradients)


def peak_bytes(m: Memory) -> int:
    """The peak of one step, ``P + B + max(backward, G + O + T)`` with the batch ``B``:
    the worst point of the backward pass (:func:`backward_peak`) against the optimiser
    step (every gradient, the state and the update's temporaries)."""
    return m.parameters + m.inputs + max(backward_peak(m),
                                         m.gradients + m.optimizer + m.optimizer_temps)


def divide(m: Memory, strategy: str = "dp", n: int = 1,
           tp_share: float = 1.0) -> Memory:
    """The terms on one of ``n`` ranks under ``strategy``.

    ``dp`` replicates everything; ``zero1`` shards the optimiser state, ``zero2`` also
    the gradients, ``zero3`` also the parameters (Rajbhandari et al. 2020); activations
    are per rank's batch in all of these (divide the batch yourself). ``tp`` shards the
    ``tp_share`` of the parameters that sit in the split blocks (1.0: all) and the same
    share of the activations (Shoeybi et al. 2019; boundary activations stay whole)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")

    def shard(x: int, share: float = 1.0) -> int:
        return round(x * (1 - share) + x * share / n)

    if strategy == "dp":
        return m
    if strategy in ("zero1", "zero2", "zero3"):
        level = int(strategy[-1])
        return Memory(shard(m.parameters) if level >= 3 else m.parameters,
                      shard(m.gradients) if level >= 2 else m.gradients,
                      shard(m.optimizer), m.activations, shard(m.optimizer_temps),
                      m.inputs, m.blocks)
    if strategy == "tp":
        return Memory(shard(m.parameters, tp_share), shard(m.gradients, tp_share),
                      shard(m.optimizer, tp_share), shard(m.activations, tp_share),
                      shard(m.optimizer_temps), m.inputs, m.blocks)
    raise ValueError(f"unknown strategy {strategy!r}; expected dp, zero1, zero2, "
                     "zero3 or tp")
