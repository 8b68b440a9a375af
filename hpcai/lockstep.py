"""The same network trained by hand in NumPy and in PyTorch, step for step (chapter 9).

Chapter 7 trained the two with their own shuffling, so only their accuracies could be
compared. Here everything that could differ is made equal: the same initial weights
(:func:`hpcai.nn.init_mlp`), the same minibatches in the same order (:func:`batches`), the
same loss and plain SGD. In float64 the two parameter sets must then agree to rounding after
any number of steps, which :func:`max_param_diff` measures; only after that check are the
two timed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import nn


def batches(n_rows: int, batch: int, steps: int, seed: int = 0) -> list[NDArray[np.int64]]:
    """Index arrays of ``steps`` minibatches: epochs of one fixed shuffle each, in order."""
    if n_rows < 1 or batch < 1 or steps < 0:
        raise ValueError(f"need n_rows, batch >= 1 and steps >= 0, got {n_rows}, {batch}, "
                         f"{steps}")
    rng = np.random.default_rng(seed)
    out: list[NDArray[np.int64]] = []
    while len(out) < steps:
        order = rng.permutation(n_rows)
        for start in range(0, n_rows, batch):
            if len(out) == steps:
                break
            out.append(order[start:start + batch])
    return out


def numpy_steps(params: nn.Params, X: nn.Array, y: NDArray[np.integer[Any]],
                idx: list[NDArray[np.int64]], lr: float) -> list[float]:
    """Plain SGD by hand (:mod:`hpcai.nn`), in place, one step per index array; the losses."""
    losses = []
    for i in idx:
        loss, grads = nn.loss_and_grads(params, X[i], y[i])
        nn.sgd_step(params, grads, lr)
        losses.append(loss)
    return losses


def torch_steps(model: Any, X: Any, y: Any, idx: list[NDArray[np.int64]],
                lr: float) -> list[float]:
    """The same steps with ``torch.optim.SGD`` and ``CrossEntropyLoss`` on torch tensors."""
    import torch

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    rows = [torch.from_numpy(i) for i in idx]
    losses = []
    for i in rows:
        opt.zero_grad()
        loss = loss_fn(model(X[i]), y[i])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def max_param_diff(params: nn.Params, model: Any) -> float:
    """Largest absolute difference between our ``(W, b)`` and the model's linear layers.

    ``torch.nn.Linear`` stores ``W`` transposed, as ``(n_out, n_in)``.
    """
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if len(linears) != len(params):
        raise ValueError(f"{len(params)} layers by hand, {len(linears)} in the model")
    diff = 0.0
    for (W, b), lin in zip(params, linears):
        w_t = lin.weight.detach().cpu().numpy().T
        b_t = lin.bias.detach().cpu().numpy()
        diff = max(diff, float(np.abs(W - w_t).max()), float(np.abs(b - b_t).max()))
    return diff


def lockstep(sizes: list[int], X: nn.Array, y: NDArray[np.integer[Any]], steps: int,
             batch: int, lr: float, seed: int = 0) -> dict[str, Any]:
    """Train both from the same weights on the same batches; return both and their distance.

    ``X`` sets the precision of both (float64 for an agreement to rounding).
    """
    import torch

    params = nn.init_mlp(sizes, seed=seed, dtype=X.dtype)
    model = nn.torch_mlp(sizes, params=params)
    idx = batches(len(X), batch, steps, seed)
    loss_np = numpy_steps(params, X, y, idx, lr)
    loss_pt = torch_steps(model, torch.from_numpy(X), torch.from_numpy(y), idx, lr)
    return {"params": params, "model": model, "loss_numpy": loss_np, "loss_torch": loss_pt,
            "max_param_diff": max_param_diff(params, model),
            "max_loss_diff": float(np.max(np.abs(np.subtract(loss_np, loss_pt))))
            if steps else 0.0}
