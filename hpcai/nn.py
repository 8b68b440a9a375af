"""A multilayer perceptron written by hand in NumPy, and the cost of each of its layers.

Chapter 7 uses this module three ways: the forward and backward passes are checked against
``torch.autograd`` and finite differences, the network is trained on scikit-learn's digits,
and :func:`layer_costs` counts the floating-point operations and bytes of every layer from
the shapes alone, to be checked against ``torch.utils.flop_counter.FlopCounterMode``.

Conventions: a batch ``X`` has shape ``(B, n_in)`` (one sample per row); layer ``l`` has
weights ``W`` of shape ``(n_in, n_out)`` and bias ``b`` of shape ``(n_out,)``, so a layer
is ``Z = X @ W + b``, one GEMM plus a broadcast add.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating[Any]]
Params = list[tuple[Array, Array]]

ACTIVATIONS = ("relu", "tanh")


def init_mlp(sizes: list[int], seed: int = 0, dtype: Any = np.float64) -> Params:
    """Glorot-uniform weights and zero biases for layer widths ``sizes`` (input first)."""
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"need at least two positive layer sizes, not {sizes}")
    rng = np.random.default_rng(seed)
    params: Params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        limit = np.sqrt(6.0 / (n_in + n_out))
        W = rng.uniform(-limit, limit, size=(n_in, n_out)).astype(dtype)
        params.append((W, np.zeros(n_out, dtype=dtype)))
    return params


def _act(z: Array, name: str) -> Array:
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, not {name!r}")


def _act_grad(z: Array, a: Array, name: str) -> Array:
    """Derivative of the activation at ``z`` (``a`` is its value there)."""
    if name == "relu":
        return (z > 0).astype(z.dtype)
    return 1 - a * a


def forward(params: Params, X: Array, activation: str = "relu") -> tuple[Array, list]:
    """Logits ``(B, n_classes)`` and the cache the backward pass needs.

    Every layer but the last applies the activation; the last returns raw logits.
    """
    cache: list[tuple[Array, Array, Array]] = []   # (input, pre-activation, output)
    a = X
    for i, (W, b) in enumerate(params):
        z = a @ W + b                              # (B, n_out): one GEMM
        out = z if i == len(params) - 1 else _act(z, activation)
        cache.append((a, z, out))
        a = out
    return a, cache


def softmax(logits: Array) -> Array:
    """Row-wise softmax, shifted by the row maximum so that ``exp`` cannot overflow."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(logits: Array, y: NDArray[np.integer[Any]]) -> tuple[float, Array]:
    """Mean cross-entropy of softmax(logits) against labels ``y``, and d loss / d logits."""
    B = logits.shape[0]
    p = softmax(logits)
    loss = float(-np.mean(np.log(p[np.arange(B), y] + 1e-300)))
    d = p.copy()
    d[np.arange(B), y] -= 1                        # softmax + cross-entropy: p - onehot
    return loss, d / B


def backward(params: Params, cache: list, dlogits: Array,
             activation: str = "relu") -> Params:
    """Gradients ``[(dW, db), ...]`` of the loss, from d loss / d logits, by hand.

    Per layer, two GEMMs: ``dW = a_in.T @ dz`` and ``da_in = dz @ W.T``; the first layer
    skips the second, because nothing needs the gradient of the input.
    """
    grads: Params = []
    dz = dlogits
    for i in range(len(params) - 1, -1, -1):
        W, _ = params[i]
        a_in = cache[i][0]
        grads.append((a_in.T @ dz, dz.sum(axis=0)))
        if i > 0:
            _, z_prev, a_prev = cache[i - 1]
            dz = (dz @ W.T) * _act_grad(z_prev, a_prev, activation)
    return grads[::-1]


def loss_and_grads(params: Params, X: Array, y: NDArray[np.integer[Any]],
                   activation: str = "relu") -> tuple[float, Params]:
    """Forward, loss and backward in one call."""
    logits, cache = forward(params, X, activation)
    loss, d = cross_entropy(logits, y)
    return loss, backward(params, cache, d, activation)


def sgd_step(params: Params, grads: Params, lr: float) -> None:
    """Plain stochastic gradient descent, in place: ``p -= lr * g``."""
    for (W, b), (dW, db) in zip(params, grads):
        W -= lr * dW
        b -= lr * db


def accuracy(params: Params, X: Array, y: NDArray[np.integer[Any]],
             activation: str = "relu") -> float:
    """Fraction of rows whose largest logit is the label."""
    logits, _ = forward(params, X, activation)
    return float(np.mean(logits.argmax(axis=1) == y))


def train_numpy(params: Params, X: Array, y: NDArray[np.integer[Any]], epochs: int,
                batch: int, lr: float, seed: int = 0,
                activation: str = "relu") -> list[float]:
    """Minibatch SGD over shuffled data, in place; returns the mean loss of each epoch."""
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(X))
        total = 0.0
        for start in range(0, len(X), batch):
            idx = order[start:start + batch]
            loss, grads = loss_and_grads(params, X[idx], y[idx], activation)
            sgd_step(params, grads, lr)
            total += loss * len(idx)
        losses.append(total / len(X))
    return losses


@dataclass(frozen=True)
class LayerCost:
    """Hand count for one linear layer ``(B, n_in) @ (n_in, n_out)``."""

    n_in: int
    n_out: int
    batch: int
    forward_flops: int        # the GEMM only: 2 B n_in n_out
    backward_flops: int       # dW GEMM, plus the dX GEMM unless this is the first layer
    forward_bytes: int        # read X and W, write Z, once each
    intensity: float          # forward FLOPs per byte


def layer_costs(sizes: list[int], batch: int, itemsize: int = 4) -> list[LayerCost]:
    """FLOPs and bytes of every linear layer, from the shapes alone.

    Counts only matrix products, as ``FlopCounterMode`` does: bias adds, activations and
    the softmax are O(B n) and left out. Bytes assume each operand crosses memory once.
    """
    if batch < 1 or itemsize < 1:
        raise ValueError("batch and itemsize must be positive")
    costs = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        fwd = 2 * batch * n_in * n_out
        bwd = fwd * (1 if i == 0 else 2)
        nbytes = itemsize * (batch * n_in + n_in * n_out + batch * n_out)
        costs.append(LayerCost(n_in, n_out, batch, fwd, bwd, nbytes, fwd / nbytes))
    return costs


def gemm_intensity(m: int, k: int, n: int, itemsize: int) -> float:
    """FLOPs per byte of ``(m, k) @ (k, n)`` if each matrix moves once: 2mkn / bytes."""
    return 2 * m * k * n / (itemsize * (m * k + k * n + m * n))


def torch_mlp(sizes: list[int], activation: str = "relu", dropout: float = 0.0,
              norm: bool = False, params: Params | None = None) -> Any:
    """The same network as a ``torch.nn.Sequential``; copies ``params`` in when given.

    ``torch.nn.Linear`` stores its weight as ``(n_out, n_in)``, the transpose of ours.
    """
    import torch

    acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU}
    if activation not in acts:
        raise ValueError(f"activation must be one of {sorted(acts)}, not {activation!r}")
    layers: list[Any] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            if norm:
                layers.append(torch.nn.LayerNorm(n_out))
            layers.append(acts[activation]())
            if dropout > 0:
                layers.append(torch.nn.Dropout(dropout))
    model = torch.nn.Sequential(*layers)
    if params is not None:
        model = model.to(torch.from_numpy(params[0][0]).dtype)
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            for lin, (W, b) in zip(linears, params):
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                lin.bias.copy_(torch.from_numpy(b))
    return model


def train_torch(model: Any, X: Any, y: Any, epochs: int, batch: int, lr: float,
                optimizer: str = "sgd", seed: int = 0) -> list[float]:
    """Minibatch training of a torch model on tensors ``X``, ``y``; epoch mean losses."""
    import torch

    opts = {"sgd": lambda p: torch.optim.SGD(p, lr=lr),
            "momentum": lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9),
            "adam": lambda p: torch.optim.Adam(p, lr=lr)}
    if optimizer not in opts:
        raise ValueError(f"optimizer must be one of {sorted(opts)}, not {optimizer!r}")
    opt = opts[optimizer](model.parameters())
    gen = torch.Generator().manual_seed(seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=gen).to(X.device)
        total = 0.0
        for start in range(0, len(X), batch):
            idx = order[start:start + batch]
            opt.zero_grad()
            loss = loss_fn(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(X))
    model.eval()
    return losses


def torch_accuracy(model: Any, X: Any, y: Any) -> float:
    """Fraction of rows a torch model classifies correctly."""
    import torch

    with torch.no_grad():
        return float((model(X).argmax(dim=1) == y).float().mean())


def load_digits() -> SimpleNamespace:
    """scikit-learn's 1,797 digits as ``.data`` (1797 x 64 grey levels 0..16, float64) and
    ``.target`` (int64), the fields of ``sklearn.datasets.load_digits()``.

    The values are read from the CSV file that ships inside the scikit-learn package, found
    without importing it: importing scikit-learn (and SciPy behind it) costs seconds per
    process, reading the file milliseconds. Raises ``ImportError`` when scikit-learn is not
    installed.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("scikit-learn is not installed: `make setup` installs it")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    path = path / "digits.csv.gz"
    if not path.exists():  # a layout this function does not know: ask scikit-learn
        from sklearn.datasets import load_digits as sklearn_load_digits

        digits = sklearn_load_digits()
        return SimpleNamespace(data=digits.data, target=digits.target)
    table = np.loadtxt(path, delimiter=",")  # 64 pixels, then the label
    return SimpleNamespace(data=table[:, :-1], target=table[:, -1].astype(np.int64))


def digits_data(seed: int = 0) -> tuple[Array, NDArray[np.integer[Any]], str]:
    """The 1,797 digits of scikit-learn, pixels scaled to [0, 1] (float64), their labels,
    and ``"digits"``.

    Where scikit-learn is not installed (a GPU machine's own Python, which ``make gpu-check``
    uses), a learnable stand-in of the same shapes is generated instead: one random 8 x 8
    prototype per class, plus noise, on the same 17 grey levels; the third value then says
    ``"synthetic (no scikit-learn)"``. Accuracies on it are not the digits' accuracies.
    """
    try:
        digits = load_digits()
    except ImportError:
        rng = np.random.default_rng(seed)
        n, classes = 1797, 10
        prototypes = rng.uniform(0.0, 1.0, (classes, 64))
        y = rng.integers(0, classes, n)
        X = np.clip(prototypes[y] + rng.normal(0.0, 0.35, (n, 64)), 0.0, 1.0)
        return np.round(X * 16.0) / 16.0, y, "synthetic (no scikit-learn)"
    return digits.data / 16.0, digits.target, "digits"
