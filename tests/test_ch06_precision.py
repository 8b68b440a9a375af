"""Chapter 6: number formats derived from their bits, tf32 emulation, fp8 scaling, hardware."""

from __future__ import annotations

import math

import pytest
import torch

from hpcai import precision as P


@pytest.mark.parametrize("name", [n for n, d in P.TORCH_DTYPES.items() if d is not None])
def test_derived_properties_equal_finfo(name):
    fmt, info = P.FORMATS[name], P.finfo_values(P.TORCH_DTYPES[name])
    assert fmt.bits == info["bits"]
    for key in ("max", "smallest_normal", "smallest_subnormal", "eps"):
        assert getattr(fmt, key) == info[key], key
    dtype = P.TORCH_DTYPES[name]
    tiny = torch.tensor([fmt.smallest_subnormal, fmt.smallest_subnormal / 2])
    kept, flushed = tiny.to(dtype).float().tolist()
    assert kept == fmt.smallest_subnormal and flushed == 0.0  # half of it ties to even 0


def test_tf32_has_fp32_range_and_fp16_precision():
    tf32, fp32, fp16 = P.FORMATS["tf32"], P.FORMATS["fp32"], P.FORMATS["fp16"]
    assert tf32.bits == 19 and tf32.smallest_normal == fp32.smallest_normal
    assert tf32.eps == fp16.eps and tf32.max == pytest.approx(fp32.max, rel=1e-3)


def test_round_mantissa_at_7_bits_is_torch_bfloat16():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(200_000, generator=gen) * torch.exp(torch.randn(200_000, generator=gen) * 40)
    x = torch.cat([x, torch.tensor([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 3.3e38, 1e-40])])
    assert torch.equal(P.round_mantissa(x, 7), x.to(torch.bfloat16).float())


def test_tf32_rounding_equals_fp16_in_fp16_normal_range():
    gen = torch.Generator().manual_seed(4)
    x = torch.exp(torch.empty(100_000).uniform_(-9.6, 10.3, generator=gen))  # 2**-14 .. 2**15
    x = x * torch.where(torch.rand(x.shape, generator=gen) < 0.5, -1.0, 1.0)
    assert torch.equal(P.to_tf32(x), x.half().float())


def test_tf32_ties_go_to_even_and_specials_pass():
    x = torch.tensor([1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-10, float("inf"), -float("inf")])
    got = P.to_tf32(x).tolist()
    assert got[:3] == [1.0, 1 + 2**-9, 1 + 2**-10] and got[3:] == x[3:].tolist()
    assert torch.isnan(P.to_tf32(torch.tensor([float("nan")]))).all()
    big = torch.tensor([torch.finfo(torch.float32).max])
    assert math.isinf(P.to_tf32(big).item())  # rounds past tf32's max


def test_round_mantissa_rejects_bad_input():
    with pytest.raises(TypeError):
        P.round_mantissa(torch.ones(2, dtype=torch.float64), 10)
    with pytest.raises(ValueError):
        P.round_mantissa(torch.ones(2), 24)


def test_bit_strings():
    assert P.bit_string(1.0, "fp16") == "0 01111 0000000000"
    assert P.bit_string(-2.5, "bf16") == "1 10000000 0100000"
    assert P.bit_string(1 + 3 * 2**-8, "bf16") == "0 01111111 0000010"  # tie to even, up
    assert P.bit_string(448.0, "fp8 e4m3") == "0 1111 110"
    assert P.bit_string(1.0, "tf32") == "0 01111111 0000000000"


def test_bf16_sum_stalls_where_predicted():
    x = float(torch.tensor(1e-3).bfloat16())
    sums = P.running_sum(torch.full((1000,), 1e-3), torch.bfloat16)
    assert sums[-1].item() == P.stall_point(x, P.FORMATS["bf16"]) == 0.5
    assert torch.sum(torch.full((1000,), 1e-3).bfloat16()).item() == pytest.approx(1.0, rel=0.01)


def test_fp8_scaling_recovers_small_values():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 1e-6
    dtype = torch.float8_e4m3fn
    assert P.fp8_roundtrip(x, dtype).abs().max().item() == 0.0
    scaled = P.fp8_roundtrip(x, dtype, P.amax_scale(x, dtype))
    assert P.rel_error(scaled, x) < 0.06


def test_gemm_errors_order():
    rows = P.gemm_errors([64, 512], 16)
    assert all(len(v) == 2 for v in rows.values())
    for i in range(2):
        assert rows["fp32"][i] < rows["tf32 inputs, fp32 accumulate"][i]
        assert rows["tf32 inputs, fp32 accumulate"][i] < rows["bf16 inputs, fp32 accumulate"][i]
        assert rows["bf16 inputs, fp32 accumulate"][i] < rows["bf16 accumulate"][i]
    assert rows["bf16 accumulate"][1] > rows["bf16 accumulate"][0]


def test_loss_scaling_rescues_fp16_gradients():
    model = P.deep_tanh_model(8, 32, 10, 0.2)
    gen = torch.Generator().manual_seed(1)
    x, labels = torch.randn(512, 32, generator=gen), torch.randint(0, 10, (512,), generator=gen)
    ref = P.autocast_grads(model, x, labels, None)
    plain = P.autocast_grads(model, x, labels, torch.float16)
    scaled = P.autocast_grads(model, x, labels, torch.float16, 2.0**16)
    assert (plain[0] == 0).float().mean() > 0.5
    assert all(P.rel_error(s, r) < 0.02 for s, r in zip(scaled, ref))
    tries = P.dynamic_loss_scale(model, x, labels, torch.float16)
    assert tries[-1][1] and not any(ok for _, ok in tries[:-1])


def test_cpu_flags_parse():
    text = "processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 avx512_bf16\n"
    flags = P.cpu_flags(text)
    assert flags == {"fpu", "avx512f", "amx_bf16", "avx512_bf16"}
    units = P.cpu_units(flags)
    assert units["bf16"] == ["AMX-BF16 tiles", "AVX512-BF16 dot products"]
    assert units["fp16"] == [] and units["fp32"] == ["AVX-512 FMA"]
    assert P.cpu_flags("no flags line") == set()


def test_parse_onednn_verbose():
    text = ("@@ fp32\n@@ bf16\nonednn_verbose,v1,info,cpu,isa:x\n"
            "onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx10_1_512_amx,undef,"
            "src:bf16\n")
    assert P.parse_onednn_verbose(text) == {"fp32": "not oneDNN",
                                            "bf16": "brg_matmul:avx10_1_512_amx"}


def test_gpu_table_is_consistent():
    for gpu, rates in P.GPU_FORMATS.items():
        assert set(rates) == set(P.FORMATS), gpu
        assert all(v is None or v > rates["fp32"] for k, v in rates.items() if k != "fp32")
