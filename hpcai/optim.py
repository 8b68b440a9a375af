"""Optimisers, learning-rate schedules and initialisations, written by hand on NumPy arrays.

Chapter 8 checks each against PyTorch (``torch.optim`` and ``torch.optim.lr_scheduler``) and
then drives the hand-written MLP of :mod:`hpcai.nn` with them. The update rules follow
PyTorch's conventions exactly (where the learning rate multiplies, where ``eps`` is added),
so that the same gradients give the same parameters to rounding.

An optimiser holds a flat list of parameter arrays and updates them in place from a list of
gradient arrays of the same shapes: ``opt.step(grads)``. :func:`flat` turns the
``[(W, b), ...]`` of :mod:`hpcai.nn` into that list.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import nn

Array = NDArray[np.floating[Any]]

OPTIMIZERS = ("sgd", "momentum", "adam")
INITS = ("naive", "glorot", "he")


def flat(pairs: nn.Params) -> list[Array]:
    """``[(W, b), ...]`` -> ``[W, b, ...]`` (the same arrays, not copies)."""
    return [a for pair in pairs for a in pair]


class Optimizer:
    """Common part: the parameters, the learning rate and the step counter."""

    def __init__(self, params: list[Array], lr: float) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.params = params
        self.lr = float(lr)
        self.t = 0                      # steps taken so far

    def step(self, grads: list[Array]) -> None:
        if len(grads) != len(self.params):
            raise ValueError(f"{len(grads)} gradients for {len(self.params)} parameters")
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            self._update(i, p, g)

    def _update(self, i: int, p: Array, g: Array) -> None:  # pragma: no cover
        raise NotImplementedError

    def state(self) -> list[Array]:
        """The arrays the optimiser keeps between steps (its memory cost)."""
        return []

    def state_bytes(self) -> int:
        return sum(int(a.nbytes) for a in self.state())


class SGD(Optimizer):
    """SGD with optional momentum, dampening, Nesterov and L2 weight decay (torch.optim.SGD).

    ``g += wd * p``; with momentum ``buf = g`` on the first step, then
    ``buf = momentum * buf + (1 - dampening) * g``; the step uses ``buf`` (or, Nesterov,
    ``g + momentum * buf``); ``p -= lr * step``.
    """

    def __init__(self, params: list[Array], lr: float, momentum: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError("momentum and weight_decay must be >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and zero dampening")
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.nesterov, self.weight_decay = nesterov, float(weight_decay)
        self.buf: list[Array | None] = [None] * len(params)

    def _update(self, i: int, p: Array, g: Array) -> None:
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            buf = self.buf[i]
            if buf is None:
                buf = self.buf[i] = g.copy()
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g

    def state(self) -> list[Array]:
        return [b for b in self.buf if b is not None]


class Adam(Optimizer):
    """Adam with bias correction (Kingma and Ba), as torch.optim.Adam computes it.

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``;
    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``: ``eps`` is added after
    the bias correction of ``v``. ``weight_decay`` is L2 (added to ``g``) unless
    ``decoupled=True`` (AdamW: ``p *= 1 - lr * wd`` first).
    """

    def __init__(self, params: list[Array], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled: bool = False) -> None:
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1) or eps <= 0 or weight_decay < 0:
            raise ValueError("need 0 <= betas < 1, eps > 0 and weight_decay >= 0")
        self.b1, self.b2, self.eps = float(b1), float(b2), float(eps)
        self.weight_decay, self.decoupled = float(weight_decay), decoupled
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def _update(self, i: int, p: Array, g: Array) -> None:
        if self.weight_decay and self.decoupled:
            p *= 1 - self.lr * self.weight_decay
        elif self.weight_decay:
            g = g + self.weight_decay * p
        m, v = self.m[i], self.v[i]
        m *= self.b1
        m += (1 - self.b1) * g
        v *= self.b2
        v += (1 - self.b2) * g * g
        bc1 = 1 - self.b1 ** self.t
        bc2 = 1 - self.b2 ** self.t
        denom = np.sqrt(v) / math.sqrt(bc2) + self.eps
        p -= (self.lr / bc1) * (m / denom)

    def state(self) -> list[Array]:
        return self.m + self.v


def make(name: str, params: list[Array], lr: float, **kw: Any) -> Optimizer:
    """``"sgd"``, ``"momentum"`` (SGD, momentum 0.9) or ``"adam"`` on ``params``."""
    if name == "sgd":
        return SGD(params, lr, **kw)
    if name == "momentum":
        return SGD(params, lr, momentum=kw.pop("momentum", 0.9), **kw)
    if name == "adam":
        return Adam(params, lr, **kw)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {name!r}")


# ---------------------------------------------------------------- schedules
def step_lr(step: int, base_lr: float, step_size: int, gamma: float = 0.1) -> float:
    """``base_lr * gamma ** (step // step_size)`` (torch.optim.lr_scheduler.StepLR)."""
    if step_size < 1:
        raise ValueError("step_size must be >= 1")
    return base_lr * gamma ** (step // step_size)


def warmup_cosine(step: int, base_lr: float, total: int, warmup: int = 0,
                  min_lr: float = 0.0, start_factor: float = 0.1) -> float:
    """Linear warm-up from ``start_factor * base_lr`` over ``warmup`` steps, then a cosine
    from ``base_lr`` down to ``min_lr`` at step ``total`` (LinearLR then CosineAnnealingLR).
    """
    if total < 1 or not 0 <= warmup < total:
        raise ValueError(f"need total >= 1 and 0 <= warmup < total, got {total}, {warmup}")
    if step < warmup:
        return base_lr * (start_factor + (1 - start_factor) * step / warmup)
    t = min(step - warmup, total - warmup)
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * t / (total - warmup))) / 2


# ---------------------------------------------------------------- initialisation
def init_weight(n_in: int, n_out: int, scheme: str, rng: np.random.Generator,
                scale: float = 1.0) -> Array:
    """One ``(n_in, n_out)`` weight matrix.

    ``naive``: N(0, 1) * scale. ``glorot``: N(0, 2 / (n_in + n_out)), which keeps the
    variance of activations and of gradients roughly constant for symmetric activations.
    ``he``: N(0, 2 / n_in), which makes up for ReLU zeroing half of its inputs.
    """
    z = rng.standard_normal((n_in, n_out))
    if scheme == "naive":
        return z * scale
    if scheme == "glorot":
        return z * math.sqrt(2.0 / (n_in + n_out))
    if scheme == "he":
        return z * math.sqrt(2.0 / n_in)
    raise ValueError(f"init must be one of {INITS}, not {scheme!r}")


def init_mlp(sizes: list[int], scheme: str = "he", seed: int = 0, scale: float = 1.0,
             dtype: Any = np.float64) -> nn.Params:
    """Weights by ``scheme`` and zero biases for layer widths ``sizes`` (input first)."""
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"need at least two positive layer sizes, not {sizes}")
    rng = np.random.default_rng(seed)
    return [(init_weight(a, b, scheme, rng, scale).astype(dtype), np.zeros(b, dtype=dtype))
            for a, b in zip(sizes[:-1], sizes[1:])]


def activation_stds(params: nn.Params, X: Array, activation: str = "relu") -> list[float]:
    """Standard deviation of each layer's output on ``X`` (the forward pass of hpcai.nn)."""
    _, cache = nn.forward(params, X, activation)
    return [float(np.std(out)) for _, _, out in cache]


# ---------------------------------------------------------------- training
def train(params: nn.Params, X: Array, y: NDArray[np.integer[Any]], opt: Optimizer,
          epochs: int, batch: int, schedule: Any = None, seed: int = 0,
          activation: str = "relu") -> list[float]:
    """Minibatch training of an hpcai.nn MLP with a hand optimiser; mean loss per epoch.

    ``schedule(step) -> lr``, when given, sets ``opt.lr`` before every step (step 0 first).
    A loss that stops being finite ends the run early (the rest of the curve is ``nan``).
    """
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(X))
        total = 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, len(X), batch):
                idx = order[start:start + batch]
                loss, grads = nn.loss_and_grads(params, X[idx], y[idx], activation)
                if schedule is not None:
                    opt.lr = float(schedule(step))
                opt.step(flat(grads))
                step += 1
                total += loss * len(idx)
        losses.append(total / len(X))
        if not math.isfinite(losses[-1]):
            return losses + [math.nan] * (epochs - len(losses))
    return losses


def steps_per_epoch(n: int, batch: int) -> int:
    """Optimiser steps in one pass over ``n`` samples: ceil(n / batch)."""
    return -(-n // batch)
