"""Chapter 17: scripts/bench/quantise.py at smoke (JSON keys, accuracies, sizes, the
hand-written int8 linear against quantize_dynamic) and a refused value (exit 2).

No timing relation is asserted: whether int8 is faster depends on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench" / "quantise.py"


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--profile", "smoke", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke() -> dict:
    p = _run(["--json"])
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_quantise_smoke_json(smoke):
    out = smoke
    assert out["bench"] == "quantise" and out["profile"] == "smoke"
    models = ("fp32", "int8", "int8_per_row")
    assert set(out["accuracy"]) == set(models) == set(out["bytes"])
    assert all(0.0 <= a <= 1.0 for a in out["accuracy"].values())
    assert out["accuracy"]["fp32"] > 0.5  # the model learned something
    for k in ("int8", "int8_per_row"):
        assert out["bytes"][k] < out["bytes"]["fp32"]
        assert out["reference_rel_err"][k] <= out["reference_rtol"] <= 1e-5
        assert abs(out["accuracy_change"][k]) <= 0.05
        assert 0.0 <= out["max_logit_diff"][k] < out["max_abs_logit"]
    assert out["size_ratio"] > 3
    assert {(r["model"], r["batch"]) for r in out["rows"]} == {
        (m, b) for m in models for b in (1, out["large_batch"])}
    for r in out["rows"]:
        assert r["median_s"] > 0 and r["iqr_s"] >= 0 and r["speedup"] > 0
    assert [r["hidden"] for r in out["width_sweep"]] == out["settings"]["sweep_hidden"]
    assert all(r["speedup"] > 0 for r in out["width_sweep"])
    assert out["threads"] >= 1 and "note" not in out


@pytest.mark.parametrize("args, says", [(["--depth", "0"], "--depth"),
                                        (["--hidden", "99999"], "--hidden")])
def test_refused_values_exit_2(args, says):
    p = _run(args, timeout=60)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], lines
