"""Chapter 13: hand-written attention against SDPA, the parameter count and FLOP formula
of hpcai.llmcost against the model and FlopCounterMode, and the scripts attention.py,
flops.py and stack_env.py (JSON shape at smoke, each run once; refused values exit 2).

No timing relation is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from hpcai import llmcost

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "scripts" / "bench"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _json(name: str, *args: str) -> dict:
    p = _run([sys.executable, str(BENCH / f"{name}.py"), "--profile", "smoke", "--json",
              *args])
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def attention_out() -> dict:
    return _json("attention")


@pytest.fixture(scope="module")
def flops_out() -> dict:
    return _json("flops")


def test_hand_written_attention_matches_sdpa():
    import torch
    import torch.nn.functional as F

    from hpcai.attention import CausalSelfAttention, causal_attention

    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 37, 16, generator=g) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert float((causal_attention(q, k, v) - ref).abs().max()) <= 1e-5
    # position 0 sees only itself: its output is its own value vector
    assert torch.allclose(causal_attention(q, k, v)[:, :, 0], v[:, :, 0])
    torch.manual_seed(0)
    eager = CausalSelfAttention(48, 4, impl="eager")
    sdpa = CausalSelfAttention(48, 4, impl="sdpa")
    sdpa.load_state_dict(eager.state_dict())
    x = torch.randn(2, 20, 48, generator=g)
    with torch.no_grad():
        assert float((eager(x) - sdpa(x)).abs().max()) <= 1e-5
    with pytest.raises(ValueError):
        CausalSelfAttention(50, 4)


CONFIGS = [
    {"num_key_value_heads": 2, "tie_word_embeddings": False},   # GQA, untied
    {"num_key_value_heads": 4, "tie_word_embeddings": True},    # MHA, tied
    {"num_key_value_heads": 1, "head_dim": 24, "attention_bias": True},  # MQA, biases
]


@pytest.mark.parametrize("extra", CONFIGS)
def test_param_count_and_flops_match_the_model(extra):
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    from hpcai.attention import cpu_sdpa_flop_mapping

    cfg = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96,
                      num_hidden_layers=2, num_attention_heads=4, **extra)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    counts = llmcost.param_count(cfg)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert (counts["lm_head"] == 0) == bool(cfg.tie_word_embeddings)
    ids = torch.randint(0, 300, (2, 32))
    fc = FlopCounterMode(display=False, custom_mapping=cpu_sdpa_flop_mapping())
    with fc:
        model(input_ids=ids, labels=ids).loss.backward()
    formula = llmcost.train_flops_per_token(cfg, 32) * ids.numel()
    assert abs(fc.get_total_flops() / formula - 1) <= 0.05


def test_formulas_by_hand():
    cfg = SimpleNamespace(vocab_size=10, hidden_size=8, intermediate_size=16,
                          num_hidden_layers=3, num_attention_heads=2,
                          num_key_value_heads=1, tie_word_embeddings=True)
    p = llmcost.param_count(cfg)
    assert p["attention"] == 3 * (64 + 2 * 8 * 4 + 64)
    assert p["mlp"] == 3 * 3 * 8 * 16 and p["norm"] == 7 * 8 and p["lm_head"] == 0
    t = llmcost.flops_terms(cfg, 5)
    assert t["attn_palm"] == 2 * t["attn_kaplan"] == 12 * 3 * 2 * 4 * 5
    assert llmcost.train_flops_per_token(cfg, 5) == 6 * (p["attention"] + p["mlp"]
                                                         + 80) + t["attn_palm"]
    assert llmcost.kv_cache_bytes_per_token(cfg, 2) == 2 * 3 * 1 * 4 * 2
    assert llmcost.mfu(100.0, 1e9, 1e12) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        llmcost.mfu(1.0, 1.0, 0.0)


def test_attention_json(attention_out):
    out = attention_out
    assert out["bench"] == "attention" and out["max_abs_diff"] <= 1e-5
    lens = [int(x) for x in out["settings"]["seq_lens"].split(",")]
    assert [(r["impl"], r["T"]) for r in out["rows"]] == [
        (i, t) for t in lens for i in ("eager", "sdpa")]
    for r in out["rows"]:
        assert r["median_s"] > 0 and r["iqr_s"] >= 0 and r["peak_bytes"] > 0
    eager = {r["T"]: r for r in out["rows"] if r["impl"] == "eager"}
    # the hand-written version holds at least one T x T matrix per head
    assert all(r["peak_bytes"] >= r["scores_bytes"] for r in eager.values())


def test_flops_json(flops_out):
    out = flops_out
    assert out["params_model"] == out["params_formula"]["total"]
    assert abs(out["flops_counted"] / out["flops_formula"] - 1) <= 0.05
    assert abs(out["flops_eager"] / out["flops_formula"] - 1) <= 0.05
    # the CPU's fused attention is missing from the counter's own registry
    missing = out["flops_counted"] - out["flops_sdpa_registry"]
    assert missing == pytest.approx(out["terms"]["attn_palm"], rel=1e-6)
    assert out["step_s"]["median_s"] > 0 and out["mfu"] is None


def test_stack_env_plain_process():
    out = _json("stack_env")
    assert out["world"] == 1 and len(out["ranks"]) == 1
    assert out["ranks"][0]["group"]["backend"] == "gloo"


@pytest.mark.parametrize("name, args, says", [
    ("attention", ["--seq-lens", "64,0"], "--seq-lens"),
    ("attention", ["--dtype", "fp8"], "--dtype"),
    ("flops", ["--kv-heads", "3"], "--kv-heads"),
    ("stack_env", ["--hf", "2"], "--hf"),
])
def test_refused_values_exit_2(name, args, says):
    p = _run([sys.executable, str(BENCH / f"{name}.py"), "--profile", "smoke", *args],
             timeout=60)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], lines
