"""The memory calculator (hpcai.memcalc) and scripts/bench/memory.py at smoke.

The exact parts of the formula (parameters, gradients, optimiser state) must equal what
the step holds to the byte; the peak must be within the issue's 10 % of MemTracker's.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hpcai import memcalc

ROOT = Path(__file__).resolve().parent.parent


def test_dtype_bytes():
    assert memcalc.dtype_bytes("fp32") == 4
    assert memcalc.dtype_bytes("bf16") == 2
    assert memcalc.dtype_bytes(torch.float16) == 2
    with pytest.raises(ValueError):
        memcalc.dtype_bytes("fp7")


def test_parameter_counts_match_torch():
    from hpcai.parallel.model import ModelConfig, build_model

    mlp = build_model(ModelConfig(dim=8, hidden=16, n_blocks=3))
    assert sum(memcalc.mlp_params([8, 16, 8])) * 3 == sum(
        p.numel() for p in mlp.parameters())
    tf = build_model(ModelConfig(dim=8, hidden=16, n_blocks=2, seq=4, heads=2))
    assert sum(memcalc.transformer_params(8, 16)) * 2 == sum(
        p.numel() for p in tf.parameters())


def test_optimizer_copies():
    assert memcalc.optimizer_bytes(100, "sgd") == 0
    assert memcalc.optimizer_bytes(100, "momentum") == 400
    assert memcalc.optimizer_bytes(100, "adam", n_tensors=2) == 800 + 8
    with pytest.raises(ValueError):
        memcalc.optimizer_bytes(100, "lion")


def test_zero_mixed_adam_is_16_bytes_per_parameter():
    assert memcalc.mixed_adam_bytes_per_param("bf16", "fp32") == 16
    assert memcalc.mixed_adam_bytes_per_param("fp16", "fp32") == 16
    m = memcalc.training_memory([1000], 0, "adam", "bf16", master="fp32")
    assert m.static == 16 * 1000 + 4  # and one fp32 step counter


def test_divide_by_parallelism():
    m = memcalc.training_memory([1000, 1000], 500, "adam", "fp32")
    n = 4
    assert memcalc.divide(m, "dp", n) == m
    z1, z2, z3 = (memcalc.divide(m, f"zero{k}", n) for k in (1, 2, 3))
    assert z1.parameters == m.parameters and z1.gradients == m.gradients
    assert z1.optimizer == m.optimizer // n
    assert z2.gradients == m.gradients // n and z2.parameters == m.parameters
    assert z3.parameters == m.parameters // n
    assert z3.activations == m.activations
    tp = memcalc.divide(m, "tp", n)
    assert tp.parameters == m.parameters // n and tp.activations == m.activations // n
    half = memcalc.divide(m, "tp", 2, tp_share=0.5)
    assert half.parameters == round(m.parameters * 0.75)
    with pytest.raises(ValueError):
        memcalc.divide(m, "zero4", 2)


def test_peak_is_backward_or_optimizer_step():
    sgd = memcalc.training_memory([100] * 4, 1000, "sgd", blocks=4)
    # backward: every activation and one block's gradients, or the other way round
    assert memcalc.backward_peak(sgd) == max(1000 + 1600 // 4, 1000 // 4 + 1600)
    assert memcalc.peak_bytes(sgd) == sgd.parameters + 1850
    adam = memcalc.training_memory([100] * 4, 10, "adam", blocks=4)
    assert memcalc.peak_bytes(adam) == (adam.parameters + adam.gradients
                                        + adam.optimizer + adam.optimizer_temps)


def test_activations_scale_with_batch_and_dtype():
    a = memcalc.mlp_activations(32, 64, 256, 2, "fp32")
    assert a == (2 * 32 * (64 + 256) + 32 * 64) * 4
    assert memcalc.mlp_activations(64, 64, 256, 2, "fp32") == 2 * a
    assert memcalc.mlp_activations(32, 64, 256, 2, "bf16") == a // 2
    t = memcalc.transformer_activations(2, 8, 16, 64, 4, 1)
    assert t > 0 and memcalc.transformer_activations(4, 8, 16, 64, 4, 1) == 2 * t


def test_memory_script_smoke():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench/memory.py"), "--profile", "smoke",
         "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = out["rows"]
    assert {r["config"] for r in rows} >= {"mlp_fp32_sgd", "mlp_fp32_adam",
                                           "transformer_fp32_adam",
                                           "mlp_bf16_autocast_adam"}
    for r in rows:
        for key in ("config", "predicted_bytes", "measured_bytes", "rel_err"):
            assert key in r
        assert math.isfinite(r["rel_err"]) and r["measured_bytes"] > 0
        for part, (predicted, measured) in r["exact"].items():
            assert predicted == measured, (r["config"], part)
        # where MemTracker's own category holds them all, it agrees to the byte
        assert r["measured"]["Parameter"] == r["predicted"]["parameters"]
        assert abs(r["rel_err"]) <= out["tolerance"] or "note" in r, r["config"]
