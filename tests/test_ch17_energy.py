"""Chapter 17: RAPL read from a fake powercap tree (reading, wrap-around, unreadable and
absent counters), the energy model's arithmetic, and scripts/bench/energy.py (JSON shape
and consistency at smoke, refused values exit 2). No timing relation is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpcai import energy

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench" / "energy.py"


def _domain(root: Path, name: str, label: str, uj: int, rng: int) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{uj}\n")
    (d / "max_energy_range_uj").write_text(f"{rng}\n")
    return d


@pytest.fixture
def fake_powercap(tmp_path: Path) -> Path:
    root = tmp_path / "powercap"
    _domain(root, "intel-rapl:0", "package-0", 1_000_000, 262_143_328_850)
    _domain(root, "intel-rapl:0:0", "core", 400_000, 262_143_328_850)
    _domain(root, "intel-rapl:1", "package-1", 262_143_000_000, 262_143_328_850)
    return root


def test_domains_are_listed_with_their_level(fake_powercap: Path):
    doms = energy.rapl_domains(fake_powercap)
    assert [d.name for d in doms] == ["package-0", "core", "package-1"]
    assert [d.top_level for d in doms] == [True, False, True]
    assert all(d.readable for d in doms)
    assert doms[0].read_uj() == 1_000_000
    assert energy.probe(fake_powercap, gpu=False)["rapl_available"]


def test_meter_sums_packages_only_and_survives_a_wrap(fake_powercap: Path):
    m = energy.RaplMeter(fake_powercap)
    assert m.available and len(m.domains) == 2
    m.start()
    (fake_powercap / "intel-rapl:0" / "energy_uj").write_text("3500000\n")
    (fake_powercap / "intel-rapl:0:0" / "energy_uj").write_text("9400000\n")
    # package-1 wraps: 328_850 uj to the top, then 1_000_000 from zero
    (fake_powercap / "intel-rapl:1" / "energy_uj").write_text("1000000\n")
    joules = m.stop()
    assert joules == pytest.approx(2.5 + 1.32885)
    assert energy.energy_delta_uj(10, 4, 100) == 94
    with pytest.raises(ValueError):
        energy.energy_delta_uj(10, 4, 0)


def test_absent_and_unreadable_counters_are_reported(tmp_path: Path):
    missing = energy.probe(tmp_path / "nothing", gpu=False)
    assert missing["rapl"].startswith("not exposed") and not missing["rapl_available"]
    assert not energy.RaplMeter(tmp_path / "nothing").available
    root = tmp_path / "pc"
    d = _domain(root, "intel-rapl:0", "package-0", 5, 100)
    (d / "energy_uj").unlink()
    (d / "energy_uj").mkdir()  # reading a directory fails like a root-only file
    p = energy.probe(root, gpu=False)
    assert "none readable" in p["rapl"] and not p["rapl_available"]


def test_model_arithmetic():
    pm = energy.PowerModel(watts_per_core=4.0, fixed_w=10.0, label="test")
    assert pm.watts(2) == 18.0
    assert energy.model_joules(18.0, 100.0, pue=1.5) == pytest.approx(2700.0)
    assert energy.kwh(3.6e6) == 1.0
    assert energy.carbon_kg(3.6e9, 400.0) == pytest.approx(400.0)
    with pytest.raises(ValueError):
        energy.model_joules(1.0, 1.0, pue=0.9)
    with pytest.raises(ValueError):
        pm.watts(-1)


@pytest.fixture(scope="module")
def smoke() -> dict:
    p = subprocess.run([sys.executable, str(SCRIPT), "--profile", "smoke", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_smoke_rows_are_consistent(smoke: dict):
    assert smoke["bench"] == "energy" and smoke["profile"] == "smoke"
    assert {"exposed", "power_model", "methods", "rows"} <= set(smoke)
    rows = smoke["rows"]
    assert {(r["workload"], r["precision"]) for r in rows} == {
        (w, p) for w in ("matmul", "mlp") for p in ("fp32", "bf16")}
    for r in rows:
        assert r["seconds"] > 0 and r["units"] > 0 and r["joules"] > 0
        assert r["joules_per_unit"] == pytest.approx(r["joules"] / r["units"])
        assert r["units_per_s"] == pytest.approx(r["units"] / r["seconds"])
        if r["method"] == "model":  # the CPU model: 5 W per busy core, PUE 1
            assert r["watts"] == pytest.approx(5.0 * r["threads"])
    if not smoke["exposed"]["rapl_available"]:
        assert smoke["methods"] == ["model"]


@pytest.mark.parametrize("args", [["--pue", "0.5"], ["--precisions", "fp8"],
                                  ["--threads", "999"], ["--n", "0"]])
def test_bad_input_is_refused(args: list[str]):
    p = subprocess.run([sys.executable, str(SCRIPT), "--profile", "smoke", *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.startswith("error:"), p.stderr
    assert "Traceback" not in p.stderr
