"""Chapter 8: convolution three ways, the cost formulas, the benchmark, the saved CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hpcai import conv
from hpcai.launch import run_script

SCRIPT = "scripts/bench/conv.py"

# (N, C_in, H, W, C_out, k, stride, padding): odd sizes, strides that do not divide evenly
CASES = [
    (1, 1, 5, 5, 1, 1, 1, 0),
    (2, 3, 9, 9, 4, 3, 1, 0),
    (2, 3, 9, 9, 4, 3, 1, 1),
    (1, 2, 10, 7, 3, 3, 2, 1),
    (3, 4, 8, 8, 5, 5, 3, 2),
    (1, 2, 6, 6, 2, 4, 2, 0),
]


def _operands(N, C, H, W, C_out, k, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, C, H, W)), rng.standard_normal((C_out, C, k, k)),
            rng.standard_normal(C_out))


@pytest.mark.parametrize("case", CASES)
def test_three_ways_agree_in_float64(case):
    N, C, H, W, C_out, k, s, p = case
    x, w, b = _operands(N, C, H, W, C_out, k)
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                   stride=s, padding=p).numpy()
    direct = conv.conv2d_direct(x, w, b, s, p)
    via_gemm = conv.conv2d_im2col(x, w, b, s, p)
    assert direct.shape == via_gemm.shape == ref.shape
    assert ref.shape[2:] == (conv.out_size(H, k, s, p), conv.out_size(W, k, s, p))
    np.testing.assert_allclose(direct, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(via_gemm, ref, rtol=0, atol=1e-12)


def test_im2col_layout_and_nbytes():
    N, C, H, W, k, s, p = 2, 3, 7, 6, 3, 2, 1
    x = np.arange(N * C * H * W, dtype=np.float32).reshape(N, C, H, W)
    cols = conv.im2col(x, k, s, p)
    Ho, Wo = conv.out_size(H, k, s, p), conv.out_size(W, k, s, p)
    assert cols.shape == (N * Ho * Wo, C * k * k)
    assert cols.nbytes == conv.im2col_bytes(N, C, H, W, k, s, p, itemsize=4)
    # the row of output pixel (n=1, oh=2, ow=1) is the padded window there, (c, i, j) order
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    patch = xp[1, :, 2 * s:2 * s + k, 1 * s:1 * s + k]
    np.testing.assert_array_equal(cols[(1 * Ho + 2) * Wo + 1], patch.reshape(-1))
    # F.unfold builds the same matrix, transposed per image
    unf = F.unfold(torch.from_numpy(x), k, padding=p, stride=s).numpy()
    np.testing.assert_array_equal(cols.reshape(N, Ho * Wo, -1), unf.transpose(0, 2, 1))


def test_flop_and_byte_formulas():
    assert conv.conv_flops(1, 1, 3, 3, 1, 3) == 2 * 9              # one output pixel
    assert conv.conv_flops(2, 3, 8, 8, 4, 3, 1, 1) == 2 * 2 * 4 * 8 * 8 * 3 * 9
    assert conv.input_bytes(2, 3, 8, 8, itemsize=8) == 2 * 3 * 64 * 8
    # stride 1, 'same' padding: every pixel is copied k*k times
    assert conv.im2col_bytes(2, 3, 8, 8, 3, 1, 1) == 9 * conv.input_bytes(2, 3, 8, 8)
    assert conv.im2col_bytes(1, 1, 4, 4, 2, 2, 0) == conv.input_bytes(1, 1, 4, 4)


def test_flops_match_flopcountermode():
    from torch.utils.flop_counter import FlopCounterMode

    x, w = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3)
    with FlopCounterMode(display=False) as fc:
        F.conv2d(x, w, stride=2, padding=1)
    assert fc.get_total_flops() == conv.conv_flops(2, 3, 9, 9, 4, 3, 2, 1)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        conv.out_size(4, 7)
    with pytest.raises(ValueError):
        conv.conv2d_im2col(np.zeros((1, 2, 5, 5)), np.zeros((1, 3, 3, 3)))


def test_bench_smoke_keys_and_error():
    r = run_script(SCRIPT, profile="smoke", timeout=300)
    assert r["bench"] == "conv" and r["dtype"] == "float32"
    impls = {row["impl"] for row in r["rows"]}
    assert {"direct", "im2col", "torch"} <= impls
    for row in r["rows"]:
        assert row["median_s"] > 0 and row["GFLOPs"] > 0 and row["iqr_s"] >= 0
    assert r["max_abs_err"] < 1e-4
    N, C, H, W = r["x_shape"]
    C_out, _, k, _ = r["w_shape"]
    s, p = r["stride"], r["padding"]
    assert r["flops"] == conv.conv_flops(N, C, H, W, C_out, k, s, p)
    assert r["im2col_bytes"] == conv.im2col_bytes(N, C, H, W, k, s, p, itemsize=4)
    assert r["out_shape"] == [N, C_out, conv.out_size(H, k, s, p), conv.out_size(W, k, s, p)]
    assert r["im2col_speedup"] > 0 and "machine" in r


def test_cnn_save_and_reload_round_trip(tmp_path):
    torch.manual_seed(0)
    model = conv.DigitCNN({"channels": [4, 6], "n_classes": 5})
    x = torch.randn(7, 1, 8, 8)
    folder = conv.save_cnn(model, tmp_path / "cnn")
    assert (folder / "weights.pt").exists() and (folder / "config.json").exists()
    again = conv.load_cnn(folder)
    assert again.config == model.config
    model.eval()
    again.eval()
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert conv.n_params(again) == conv.n_params(model)
    again.features.requires_grad_(False)
    assert conv.n_params(again, trainable_only=True) == again.head.weight.numel() + 5


def test_gpu_im2col_path_on_the_cpu():
    """The benchmark's GPU im2col (F.unfold + one matmul) is device-agnostic: check it here."""
    from hpcai.launch import load_script

    bench = load_script("conv")
    x, w = torch.randn(2, 3, 9, 9, dtype=torch.float64), torch.randn(4, 3, 3, 3,
                                                                     dtype=torch.float64)
    for s, p in [(1, 0), (1, 1), (2, 1)]:
        torch.testing.assert_close(bench.im2col_torch(x, w, s, p),
                                   F.conv2d(x, w, stride=s, padding=p), rtol=0, atol=1e-12)
