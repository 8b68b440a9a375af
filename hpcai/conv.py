"""Convolution three ways, what im2col costs, and a small CNN that can be saved and reloaded.

Chapter 8 computes one 2-D convolution (strictly, the cross-correlation deep-learning
libraries call convolution) three ways and checks them against each other:

* :func:`conv2d_direct`: the loop nest of the definition, compiled by Numba; the honest
  baseline, every multiply-add written out;
* :func:`conv2d_im2col`: :func:`im2col` copies every input patch into one row of a matrix,
  so that the whole convolution becomes one GEMM (NumPy's matmul, hence the BLAS);
* ``torch.nn.functional.conv2d``, which hands the work to oneDNN on a CPU and cuDNN on a GPU.

Conventions (PyTorch's): an input ``x`` has shape ``(N, C_in, H, W)``, the weights ``w``
``(C_out, C_in, k, k)`` (square kernels), the bias ``(C_out,)``; the output is
``(N, C_out, H_out, W_out)`` with ``H_out = (H + 2 padding - k) // stride + 1`` (the same for
``W_out``). Padding is with zeros.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch
from numpy.typing import NDArray

Array = NDArray[np.floating[Any]]

# Numba's default OpenMP workers keep spinning for a while after a parallel loop; on a
# machine with few cores they then compete with the BLAS threads of the matmul that follows
# (on the book's 2-core machine that turned a 1.5 ms im2col convolution into 8-14 ms).
# The workqueue layer's workers sleep when idle. $NUMBA_THREADING_LAYER still wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"


def out_size(n: int, k: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution along one axis of length ``n``."""
    if k < 1 or stride < 1 or padding < 0:
        raise ValueError(f"need k >= 1, stride >= 1, padding >= 0; got {k}, {stride}, "
                         f"{padding}")
    size = (n + 2 * padding - k) // stride + 1
    if size < 1:
        raise ValueError(f"a kernel of {k} does not fit in {n} + 2 x {padding} pixels")
    return size


def _shapes(x: Array, w: Array, stride: int, padding: int) -> tuple[int, ...]:
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"need x (N, C_in, H, W) and w (C_out, C_in, k, k), got "
                         f"{x.shape} and {w.shape}")
    N, C, H, W = x.shape
    C_out, C_w, k, k2 = w.shape
    if C_w != C or k != k2:
        raise ValueError(f"weights {w.shape} do not fit an input of {C} channels "
                         "(or the kernel is not square)")
    return N, C, H, W, C_out, k, out_size(H, k, stride, padding), out_size(W, k, stride,
                                                                        padding)


def pad(x: Array, padding: int) -> Array:
    """Zero-pad the two spatial axes of ``(N, C, H, W)`` by ``padding`` on every side."""
    if padding == 0:
        return x
    p = padding
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))


@numba.njit(parallel=True, cache=True)
def _direct_kernel(xp: Array, w: Array, out: Array, stride: int) -> None:
    """The definition of a convolution, one multiply-add at a time.

    ``xp`` is the padded input; ``out`` (N, C_out, H_out, W_out) is written. The batch and
    output channels are shared out among the cores (``prange``), as the other two methods
    use every core too.
    """
    N, C, _, _ = xp.shape
    C_out, _, k, _ = w.shape
    H_out, W_out = out.shape[2], out.shape[3]
    zero = out.dtype.type(0)      # accumulate in the output's precision (float32 or 64)
    for job in numba.prange(N * C_out):
        n, co = job // C_out, job % C_out
        for oh in range(H_out):
            for ow in range(W_out):
                acc = zero
                for ci in range(C):
                    for i in range(k):
                        for j in range(k):
                            acc += (xp[n, ci, oh * stride + i, ow * stride + j]
                                    * w[co, ci, i, j])
                out[n, co, oh, ow] = acc


def conv2d_direct(x: Array, w: Array, b: Array | None = None, stride: int = 1,
                  padding: int = 0) -> Array:
    """Convolution by the loop nest of its definition (Numba, all cores).

    The first call compiles the loop (or loads it from Numba's cache); time a later call.
    """
    N, _, _, _, C_out, _, H_out, W_out = _shapes(x, w, stride, padding)
    xp = np.ascontiguousarray(pad(x, padding))
    out = np.empty((N, C_out, H_out, W_out), dtype=np.result_type(x, w))
    _direct_kernel(xp, np.ascontiguousarray(w, dtype=out.dtype), out, stride)
    if b is not None:
        out += b.reshape(1, C_out, 1, 1)
    return out


def im2col(x: Array, k: int, stride: int = 1, padding: int = 0) -> Array:
    """Every k x k patch of every channel as one row: ``(N * H_out * W_out, C * k * k)``.

    Row ``(n, oh, ow)`` (in that order, ``ow`` fastest) holds the patch under output pixel
    ``(oh, ow)`` of image ``n``; column ``(c, i, j)`` (``j`` fastest) is channel ``c`` at
    offset ``(i, j)`` in the window, the order of ``w.reshape(C_out, C * k * k)``. The matrix
    is built by ``k * k`` strided copies, one per offset in the window; each input pixel
    lands in up to ``k * k`` rows, which is the memory im2col costs.
    """
    N, C, H, W = x.shape
    H_out, W_out = out_size(H, k, stride, padding), out_size(W, k, stride, padding)
    xp = pad(x, padding)
    cols = np.empty((N, H_out, W_out, C, k, k), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            window = xp[:, :, i:i + stride * H_out:stride, j:j + stride * W_out:stride]
            cols[:, :, :, :, i, j] = window.transpose(0, 2, 3, 1)   # (N, H_out, W_out, C)
    return cols.reshape(N * H_out * W_out, C * k * k)


def conv2d_im2col(x: Array, w: Array, b: Array | None = None, stride: int = 1,
                  padding: int = 0) -> Array:
    """Convolution as one GEMM: ``im2col(x) @ w.reshape(C_out, C_in k k).T``.

    ``(N H_out W_out, C_in k k) @ (C_in k k, C_out)`` gives one row per output pixel and one
    column per output channel, reordered to ``(N, C_out, H_out, W_out)`` at the end.
    """
    N, C, _, _, C_out, k, H_out, W_out = _shapes(x, w, stride, padding)
    cols = im2col(x, k, stride, padding)
    out = cols @ w.reshape(C_out, C * k * k).T                 # the one GEMM
    if b is not None:
        out += b
    return out.reshape(N, H_out, W_out, C_out).transpose(0, 3, 1, 2)


def conv_flops(N: int, C_in: int, H: int, W: int, C_out: int, k: int, stride: int = 1,
               padding: int = 0) -> int:
    """Operations of one convolution: ``2 N C_out H_out W_out C_in k k`` (multiply + add)."""
    H_out, W_out = out_size(H, k, stride, padding), out_size(W, k, stride, padding)
    return 2 * N * C_out * H_out * W_out * C_in * k * k


def im2col_bytes(N: int, C_in: int, H: int, W: int, k: int, stride: int = 1,
                 padding: int = 0, itemsize: int = 4) -> int:
    """Bytes of the im2col matrix: ``N H_out W_out x C_in k k`` elements."""
    H_out, W_out = out_size(H, k, stride, padding), out_size(W, k, stride, padding)
    return N * H_out * W_out * C_in * k * k * itemsize


def input_bytes(N: int, C_in: int, H: int, W: int, itemsize: int = 4) -> int:
    """Bytes of the input tensor itself."""
    return N * C_in * H * W * itemsize


# ---------------------------------------------------------------- a small CNN for digits
DEFAULT_CONFIG: dict[str, Any] = {"channels": [8, 16], "kernel": 3, "n_classes": 10,
                                  "image": 8}


class DigitCNN(torch.nn.Module):
    """A CNN for 8 x 8 digits: conv-ReLU blocks, one 2 x 2 max-pool, one linear head.

    The model has two parts, ``features`` (the convolutions) and ``head`` (the linear
    classifier), so that transfer learning can freeze the first and replace the second.
    ``config`` (see ``DEFAULT_CONFIG``) is all it takes to rebuild the same architecture.
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = {**DEFAULT_CONFIG, **(config or {})}
        k, size = int(self.config["kernel"]), int(self.config["image"])
        layers: list[torch.nn.Module] = []
        c_in = 1
        for c in self.config["channels"]:
            layers += [torch.nn.Conv2d(c_in, int(c), k, padding=k // 2), torch.nn.ReLU()]
            c_in = int(c)
        layers += [torch.nn.MaxPool2d(2), torch.nn.Flatten()]
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(c_in * (size // 2) ** 2, int(self.config["n_classes"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)`` of images ``(B, 1, 8, 8)``."""
        return self.head(self.features(x))


def n_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of a torch model (only those that require grad, if asked)."""
    return sum(p.numel() for p in model.parameters()
               if p.requires_grad or not trainable_only)


def save_cnn(model: DigitCNN, folder: str | Path) -> Path:
    """Save a :class:`DigitCNN` as ``weights.pt`` (its state_dict) and ``config.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "weights.pt")
    (folder / "config.json").write_text(json.dumps(model.config, indent=1) + "\n")
    return folder


def load_cnn(folder: str | Path) -> DigitCNN:
    """Rebuild a :class:`DigitCNN` from its config and load its weights (CPU tensors)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    model = DigitCNN(config)
    state = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model


def fit(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int, batch: int,
        lr: float, seed: int = 0, X_eval: torch.Tensor | None = None,
        y_eval: torch.Tensor | None = None) -> tuple[float, list[float]]:
    """Adam on the parameters that require grad, minibatches of shuffled data.

    Returns the training time in seconds (evaluation excluded) and, if ``X_eval`` is given,
    the accuracy on it after every epoch. Frozen parameters (``requires_grad=False``) are
    left out of the optimiser, and autograd records nothing for layers whose inputs and
    parameters need no gradient, so a frozen feature extractor costs a forward pass only.
    """
    import time

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    seconds, curve = 0.0, []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(X), generator=gen).to(X.device)
        for first in range(0, len(X), batch):
            idx = order[first:first + batch]
            opt.zero_grad()
            loss_fn(model(X[idx]), y[idx]).backward()
            opt.step()
        if X.device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        model.eval()
        if X_eval is not None and y_eval is not None:
            with torch.no_grad():
                curve.append(float((model(X_eval).argmax(1) == y_eval).float().mean()))
    return seconds, curve
