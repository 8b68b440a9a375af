"""scripts/bench/train_step.py at smoke: one row per precision, keys present, finite.

No timing is asserted (the bar, bf16 autocast at least 1.4x fp32's samples/s, is a
measurement of the cpu profile, reported, not tested)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_train_step_smoke():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench/train_step.py"), "--profile",
         "smoke", "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT,
        check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = {r["precision"]: r for r in out["rows"]}
    assert list(rows) == ["fp32", "bf16", "bf16_weights", "fp16"]
    for name, r in rows.items():
        if r.get("skipped"):
            assert name == "fp16" and r["reason"]
            continue
        assert r["samples_per_s"] > 0 and r["peak_bytes"] > 0
        assert math.isfinite(r["final_loss"]) and math.isfinite(r["ratio"])
    # same seed, same steps: autocast follows fp32's loss closely
    assert abs(rows["bf16"]["final_loss"] - rows["fp32"]["final_loss"]) < 0.05
    # bf16 weights halve the parameters, gradients and Adam state
    assert rows["bf16_weights"]["peak_bytes"] < rows["fp32"]["peak_bytes"]


def test_bad_precision_is_refused():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench/train_step.py"), "--profile",
         "smoke", "--precisions", "fp7"], capture_output=True, text=True, timeout=60,
        cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.startswith("error:")
