"""hpcai/nn.py: hand-written gradients against autograd and finite differences, FLOP counts."""

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hpcai import nn


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_gradients_match_autograd(activation):
    sizes = [7, 5, 4, 3]
    params = nn.init_mlp(sizes, seed=1)
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((6, 7)), rng.integers(0, 3, 6)
    loss, grads = nn.loss_and_grads(params, X, y, activation)
    model = nn.torch_mlp(sizes, activation, params=params).double()
    ref = torch.nn.functional.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(y))
    ref.backward()
    assert abs(loss - ref.item()) < 1e-12
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    for (dW, db), lin in zip(grads, linears):
        np.testing.assert_allclose(dW, lin.weight.grad.numpy().T, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(db, lin.bias.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_gradients_match_finite_differences():
    params = nn.init_mlp([3, 4, 2], seed=3)
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    _, grads = nn.loss_and_grads(params, X, y, "tanh")
    W = params[0][0]
    h = 1e-6
    for idx in np.ndindex(W.shape):
        old = W[idx]
        W[idx] = old + h
        up = nn.loss_and_grads(params, X, y, "tanh")[0]
        W[idx] = old - h
        down = nn.loss_and_grads(params, X, y, "tanh")[0]
        W[idx] = old
        assert abs((up - down) / (2 * h) - grads[0][0][idx]) < 1e-7


def test_flop_count_matches_flop_counter():
    sizes, B = [10, 16, 8, 4], 5
    model = nn.torch_mlp(sizes)
    x, y = torch.randn(B, 10), torch.randint(0, 4, (B,))
    with FlopCounterMode(display=False) as fc:
        out = model(x)
        forward = fc.get_total_flops()
        torch.nn.functional.cross_entropy(out, y).backward()
    costs = nn.layer_costs(sizes, B)
    assert forward == sum(c.forward_flops for c in costs)
    assert fc.get_total_flops() == sum(c.forward_flops + c.backward_flops for c in costs)


def test_training_learns_and_bad_input():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    params = nn.init_mlp([4, 8, 2])
    losses = nn.train_numpy(params, X, y, epochs=10, batch=20, lr=0.5)
    assert losses[-1] < losses[0] and nn.accuracy(params, X, y) > 0.9
    with pytest.raises(ValueError):
        nn.init_mlp([4])
    with pytest.raises(ValueError):
        nn.forward(params, X, "sigmoid")
    assert nn.gemm_intensity(1, 64, 64, 4) < nn.gemm_intensity(256, 64, 64, 4)


def test_load_digits_reads_scikit_learns_file_without_importing_it():
    import subprocess
    import sys

    code = ("import sys; from hpcai.nn import load_digits; d = load_digits(); "
            "print(d.data.shape, d.target.dtype, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["(1797,", "64)", "int64", "False"]
    from sklearn.datasets import load_digits as sklearn_load_digits

    ours, theirs = nn.load_digits(), sklearn_load_digits()
    assert np.array_equal(ours.data, theirs.data)
    assert np.array_equal(ours.target, theirs.target)
