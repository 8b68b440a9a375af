"""The model every parallelism of chapter 10 trains, and its one-process reference run.

A stack of residual MLP blocks, ``x + fc2(tanh(fc1(x)))``, maps ``dim`` features to
``dim`` features and is trained with SGD (with momentum, so that there is optimiser
state to shard) on a mean-squared error against a fixed random "teacher", ``y = sin(x @
T)``. Everything is seeded: the weights come from ``ModelConfig.seed``, the batch of
step ``i`` from ``seed`` and ``i`` alone, so every rank can rebuild any batch, or any
slice of it, without a download and without talking to another rank.

:func:`reference_run` trains the model in one process on the *global* batch; every
distributed strategy of :mod:`hpcai.parallel` must reproduce its per-step losses and
final parameters (to 1e-5 in fp32). The block is the MLP of a transformer layer, the
unit that Megatron-LM splits column- then row-wise (Shoeybi et al. 2019) and that GPipe
stacks into stages (Huang et al. 2019).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLP", "Attention", "Block", "ModelConfig", "Net", "TransformerBlock",
           "RunResult", "batch", "build_model",
           "make_optimizer", "param_bytes", "reference_run"]


@dataclass(frozen=True)
class ModelConfig:
    """The size of the model, its seed and its optimiser."""

    dim: int = 32
    hidden: int = 128
    n_blocks: int = 4
    seed: int = 0
    lr: float = 0.05
    momentum: float = 0.9
    seq: int = 0  # 0: MLP blocks on (B, dim); > 0: transformer blocks, (B, seq, dim)
    heads: int = 4

    def __post_init__(self) -> None:
        if min(self.dim, self.hidden, self.n_blocks, self.heads) < 1 or self.seq < 0:
            raise ValueError(f"sizes must be positive: {self}")
        if self.seq and self.dim % self.heads:
            raise ValueError(f"dim {self.dim} does not split into {self.heads} heads")


class Block(nn.Module):
    """One residual MLP block: ``x + fc2(tanh(fc1(x)))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.tanh(self.fc1(x)))


class Attention(nn.Module):
    """Causal multi-head self-attention; the number of heads follows from the width of
    ``q`` (``dim / head_dim``): a rank holding some heads' columns runs only those."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.head_dim = dim // heads
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.o = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, S, _ = h.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, S, H d) -> (B, H, S, d)
            return t.view(B, S, -1, self.head_dim).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)),
                                           split(self.v(h)), is_causal=True)
        return self.o(y.transpose(1, 2).reshape(B, S, -1))


class MLP(nn.Module):
    """``fc2(gelu(fc1(h)))``, the feed-forward half of a transformer block."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(h)))


class TransformerBlock(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = MLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Net(nn.Module):
    """``n_blocks`` blocks in a row (MLP blocks, or transformer blocks if ``cfg.seq``);
    parameters are named ``blocks.I.fc1.weight``, ``blocks.I.attn.q.weight``, ..."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        make = (lambda: TransformerBlock(cfg.dim, cfg.hidden, cfg.heads)) if cfg.seq \
            else (lambda: Block(cfg.dim, cfg.hidden))
        self.blocks = nn.ModuleList(make() for _ in range(cfg.n_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def build_model(cfg: ModelConfig, device: torch.device | str = "cpu") -> Net:
    """The model with the weights of ``cfg.seed`` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = Net(cfg)
    return net.to(device)


def make_optimizer(params: Iterable[torch.Tensor],
                   cfg: ModelConfig) -> torch.optim.Optimizer:
    """SGD with momentum, the optimiser of every run (a state tensor per parameter).

    One parameter at a time (``foreach=False``): under tensor parallelism a model mixes
    DTensor parameters and plain ones (the layer norms), which the multi-tensor path
    refuses."""
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, foreach=False)


def _teacher(cfg: ModelConfig) -> torch.Tensor:
    g = torch.Generator().manual_seed(cfg.seed + 1_000_003)
    return torch.randn(cfg.dim, cfg.dim, generator=g) / cfg.dim ** 0.5


def batch(cfg: ModelConfig, step: int, global_batch: int,
          rows: slice | None = None,
          device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of step ``step`` (``rows`` of them, default all)."""
    g = torch.Generator().manual_seed(cfg.seed * 7_919 + 104_729 * (step + 1))
    shape = (global_batch, cfg.seq, cfg.dim) if cfg.seq else (global_batch, cfg.dim)
    x = torch.randn(*shape, generator=g)
    y = torch.sin(x @ _teacher(cfg))
    if rows is not None:
        x, y = x[rows], y[rows]
    return x.to(device), y.to(device)


def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean-squared error, the mean over every element of the batch."""
    return F.mse_loss(out, target)


def param_bytes(module: nn.Module) -> int:
    """Bytes of the parameters of ``module`` that this rank stores (a DTensor's local
    shard, not its global size)."""
    from torch.distributed.tensor import DTensor

    local = [p.to_local() if isinstance(p, DTensor) else p for p in module.parameters()]
    return sum(t.numel() * t.element_size() for t in local)


@dataclass
class RunResult:
    """Per-step losses (before each update) and the parameters after the last step."""

    losses: list[float]
    params: dict[str, torch.Tensor] = field(repr=False)


def reference_run(k_steps: int, global_batch: int, cfg: ModelConfig | None = None,
                  device: torch.device | str = "cpu") -> RunResult:
    """Train the model in one process on the global batch for ``k_steps`` steps (on the
    device the distributed run uses, so that both do the same arithmetic)."""
    cfg = cfg or ModelConfig()
    net = build_model(cfg, device)
    opt = make_optimizer(net.parameters(), cfg)
    losses = []
    for step in range(k_steps):
        x, y = batch(cfg, step, global_batch, device=device)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach().item())
    params = {name: p.detach().clone() for name, p in net.named_parameters()}
    return RunResult(losses, params)
