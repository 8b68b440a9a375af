"""hpcai/optim.py: hand-written optimisers, schedules and initialisations against PyTorch."""

import math

import numpy as np
import pytest
import torch

from hpcai import nn, optim

STEPS = 12


def _compare(make_hand, make_torch, steps=STEPS):
    """Feed the same gradients (random, float64) to both; return the largest rel. error."""
    rng = np.random.default_rng(0)
    shapes = [(5, 4), (4,), (4, 3), (3,)]
    ours = [rng.standard_normal(s) for s in shapes]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in ours]
    hand = make_hand(ours)
    ref = make_torch(theirs)
    worst = 0.0
    for _ in range(steps):
        grads = [rng.standard_normal(s) for s in shapes]
        for t, g in zip(theirs, grads):
            t.grad = torch.tensor(g)
        ref.step()
        hand.step(grads)
        for a, t in zip(ours, theirs):
            np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-12, atol=1e-14)
            worst = max(worst, float(np.max(np.abs(a - t.detach().numpy()))))
    assert hand.t == steps
    return worst


@pytest.mark.parametrize("kw", [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.5},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.8, "weight_decay": 0.01},
])
def test_sgd_matches_torch(kw):
    _compare(lambda p: optim.SGD(p, 0.05, **kw),
             lambda p: torch.optim.SGD(p, lr=0.05, foreach=False, **kw))


@pytest.mark.parametrize("kw", [
    {},
    {"betas": (0.8, 0.99), "eps": 1e-6},
    {"weight_decay": 0.01},
])
def test_adam_matches_torch(kw):
    _compare(lambda p: optim.Adam(p, 0.01, **kw),
             lambda p: torch.optim.Adam(p, lr=0.01, foreach=False, **kw))


def test_adamw_matches_torch():
    _compare(lambda p: optim.Adam(p, 0.01, weight_decay=0.1, decoupled=True),
             lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1, foreach=False))


def test_state_bytes():
    p = [np.zeros((10, 3)), np.zeros(3)]
    assert optim.SGD(p, 0.1).state_bytes() == 0
    mom = optim.SGD(p, 0.1, momentum=0.9)
    mom.step([np.ones((10, 3)), np.ones(3)])
    assert mom.state_bytes() == 33 * 8
    assert optim.Adam(p).state_bytes() == 2 * 33 * 8


def test_bad_values():
    p = [np.zeros(3)]
    with pytest.raises(ValueError):
        optim.SGD(p, 0.0)
    with pytest.raises(ValueError):
        optim.SGD(p, 0.1, nesterov=True)
    with pytest.raises(ValueError):
        optim.make("lbfgs", p, 0.1)
    with pytest.raises(ValueError):
        optim.SGD(p, 0.1).step([np.zeros(3), np.zeros(3)])


def _torch_lrs(make_sched, steps, base=0.5):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = make_sched(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_step_lr_matches_torch():
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 7, gamma=0.3), 30)
    ours = [optim.step_lr(s, 0.5, 7, 0.3) for s in range(30)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12)


@pytest.mark.parametrize("warmup", [0, 5])
def test_warmup_cosine_matches_torch(warmup):
    total, base, low = 40, 0.5, 0.01
    sched = torch.optim.lr_scheduler

    def make(o):
        cos = sched.CosineAnnealingLR(o, T_max=total - warmup, eta_min=low)
        if warmup == 0:
            return cos
        lin = sched.LinearLR(o, start_factor=0.1, total_iters=warmup)
        return sched.SequentialLR(o, [lin, cos], milestones=[warmup])

    ref = _torch_lrs(make, total + 1, base)
    ours = [optim.warmup_cosine(s, base, total, warmup, low) for s in range(total + 1)]
    # CosineAnnealingLR updates recursively, so it drifts from the closed form by rounding
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
    assert ours[warmup] == pytest.approx(base) and ours[-1] == pytest.approx(low)


def test_init_statistics():
    rng = np.random.default_rng(0)
    n_in, n_out = 400, 300
    for scheme, var in (("glorot", 2 / (n_in + n_out)), ("he", 2 / n_in),
                        ("naive", 0.01 ** 2)):
        W = optim.init_weight(n_in, n_out, scheme, rng, scale=0.01)
        assert abs(W.mean()) < 4 * math.sqrt(var / W.size)
        assert W.var() == pytest.approx(var, rel=0.02)
    with pytest.raises(ValueError):
        optim.init_weight(2, 2, "orthogonal", rng)


def test_he_keeps_relu_activations_alive():
    X = np.random.default_rng(1).standard_normal((256, 128))
    sizes = [128] * 11
    he = optim.activation_stds(optim.init_mlp(sizes, "he", seed=0), X)
    small = optim.activation_stds(optim.init_mlp(sizes, "naive", seed=0, scale=0.01), X)
    assert 0.3 < he[-1] / he[0] < 3
    assert small[-1] < 1e-10


def test_hand_training_learns_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = d.data[:600] / 16.0, d.target[:600]
    params = optim.init_mlp([64, 32, 10], "he", seed=0)
    opt = optim.make("adam", optim.flat(params), 0.01)
    losses = optim.train(params, X, y, opt, epochs=5, batch=32,
                         schedule=lambda s: optim.warmup_cosine(s, 0.01, 95, 10))
    assert losses[-1] < losses[0] and nn.accuracy(params, X, y) > 0.8
    assert opt.t == 5 * optim.steps_per_epoch(600, 32)
