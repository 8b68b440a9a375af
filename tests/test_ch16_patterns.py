"""hpcai.patterns: chapter 16's reader of the results records (in a temporary folder).

Found, missing, another profile's record ignored, the newest record winning, ratios that
refuse non-finite values, the efficiency points, and every key the chapter 16 notebook
reads being one its named notebook records.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from hpcai import patterns

ROOT = Path(__file__).resolve().parent.parent
MACHINE = {"cpu": "Test CPU", "logical_cores": 2, "gpus": []}


def write(folder: Path, rows: list[dict]) -> None:
    """Append records to ``<folder>/<chNN>.json`` as hpcai.record would."""
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        path = folder / f"{row['key'].split('_', 1)[0]}.json"
        old = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(old + [row]))


def rec(key, value, profile="smoke", time="2026-12-03T14:00:00+0000", unit="us",
        machine=MACHINE):
    return {"key": key, "value": value, "unit": unit, "time": time,
            "profile": profile, "machine": machine}


def test_found_names_chapter_machine_and_time(results_tmp):
    write(results_tmp, [rec("ch09_overhead_us", 1.5)])
    got = patterns.fetch("ch09_overhead_us", "ch09_dispatch", profile="smoke")
    assert isinstance(got, patterns.Found) and got.ok
    assert got.value == 1.5 and got.chapter == "9"
    assert got.text() == ("1.5 us (chapter 9, 2-core Test CPU, no GPU, "
                          "2026-12-03 14:00 UTC)")
    assert patterns.check_found([got], "smoke") == 1


def test_missing_says_what_to_run(results_tmp):
    got = patterns.fetch("ch05_torch_add_t0_us", "ch05_overheads", profile="cpu")
    assert isinstance(got, patterns.Missing) and not got.ok
    text = got.text()
    assert "not measured in this build" in text and "make book" in text
    assert "--profile cpu notebooks/ch05_overheads.md" in text
    assert not re.search(r"\d\.\d", text)  # no number stands in for the record
    assert patterns.glue_text({"x": got}) == {"ch16_x": text}


def test_other_profile_ignored_and_newest_wins(results_tmp):
    write(results_tmp, [
        rec("ch06_allreduce_alpha_us", 1.0, time="2026-12-03T10:00:00+0000"),
        rec("ch06_allreduce_alpha_us", 2.0, time="2026-12-03T12:00:00+0000"),
        rec("ch06_allreduce_alpha_us", 9.0, profile="cpu",
            time="2026-12-03T13:00:00+0000"),
        rec("ch06_allreduce_alpha_us", 3.0, time="2026-12-03T11:00:00+0000"),
    ])
    smoke = patterns.fetch("ch06_allreduce_alpha_us", profile="smoke")
    assert smoke.value == 2.0  # newest by time, not last in the file
    assert patterns.fetch("ch06_allreduce_alpha_us", profile="cpu").value == 9.0
    assert not patterns.fetch("ch06_allreduce_alpha_us", profile="gpu").ok
    # a found record of another profile is refused by the check
    with pytest.raises(AssertionError):
        patterns.check_found([smoke], "cpu")


def test_check_refuses_a_record_without_machine(results_tmp):
    write(results_tmp, [rec("ch02_alpha_us", 1.6, machine={})])
    got = patterns.fetch("ch02_alpha_us", profile="smoke")
    assert got.ok and got.machine == ""
    with pytest.raises(AssertionError):
        patterns.check_found([got], "smoke")


def test_ratio_and_derive(results_tmp):
    write(results_tmp, [rec("ch06_allreduce_alpha_us", 3000.0),
                        rec("ch09_overhead_us", 1.5), rec("ch12_sc_eff_strong", 0.0)])
    got = patterns.fetch_all({"ch06_allreduce_alpha_us": "ch06_nccl_tests",
                              "ch09_overhead_us": "ch09_dispatch",
                              "ch12_sc_eff_strong": "ch12_scaling",
                              "ch05_torch_add_t0_us": "ch05_overheads"},
                             profile="smoke")
    r = patterns.ratio("a", got["ch06_allreduce_alpha_us"], got["ch09_overhead_us"],
                       "dispatches")
    assert isinstance(r, patterns.Derived) and math.isclose(r.value, 2000.0)
    assert r.text() == "2,000 dispatches (from chapters 6 and 9)"
    assert patterns.check_found([r], "smoke") == 2
    missing = patterns.ratio("b", got["ch05_torch_add_t0_us"], got["ch09_overhead_us"])
    assert isinstance(missing, patterns.Missing)
    assert missing.key == "ch05_torch_add_t0_us"
    # a zero (or negative) cost or rate: no ratio, and the text says which record
    undefined = patterns.ratio("c", got["ch09_overhead_us"], got["ch12_sc_eff_strong"])
    assert isinstance(undefined, patterns.Undefined) and not undefined.ok
    assert "ch12_sc_eff_strong = 0 is not positive (chapter 12" in undefined.text()
    assert patterns.derive("c2", math.log2, undefined) is undefined
    assert patterns.verdict(undefined, 1, "below", "above").startswith("(not known")
    assert patterns.check_found([undefined], "smoke") == 2
    with pytest.raises(ValueError, match="not finite"):
        patterns.derive("d", lambda e: math.inf, got["ch12_sc_eff_strong"])
    with pytest.raises(ValueError, match="not a number"):
        patterns.derive("e", lambda e: e, patterns.Found(
            "ch01_x", "fast", "", "1", "m", "t", "smoke"))
    frame = patterns.table([r, missing])
    assert list(frame.columns) == ["key", "chapter", "value", "unit", "machine", "time"]
    assert list(frame.key) == ["ch06_allreduce_alpha_us", "ch09_overhead_us",
                               "ch05_torch_add_t0_us"]
    assert frame.value.iloc[-1] == "missing"


def test_efficiency_points(results_tmp):
    write(results_tmp, [rec("ch04_pi_eff_top_pct", 50.0, unit="%"),
                        rec("ch04_pi_top_ranks", 2, unit="processes"),
                        rec("ch12_sc_eff_strong", 0.25, unit="")])
    pts = {p.series: p for p in patterns.efficiency_points(profile="smoke")}
    assert len(pts) == len(patterns.EFFICIENCY_SERIES)
    pi = pts["ch. 4 MPI pi, strong"]
    assert pi.processes == 2 and math.isclose(pi.efficiency, 0.5)
    assert pts["ch. 12 DDP, strong"].efficiency == 0.25
    assert pts["ch. 15 LLM DDP"].efficiency is None
    assert not pts["ch. 15 LLM DDP"].source.ok
    # a fixed count holds only at the profiles whose SIZES give it
    write(results_tmp, [rec("ch12_sc_eff_strong", 0.5, profile="cluster", unit="")])
    cl = {p.series: p for p in patterns.efficiency_points(profile="cluster")}
    assert cl["ch. 12 DDP, strong"].processes is None


def recorded_by(notebook: str, key: str) -> bool:
    """Whether ``notebooks/<notebook>.md`` names ``key`` literally or through one of its
    f-string keys (``f"ch05_{name}_t0_us"``)."""
    text = (ROOT / "notebooks" / f"{notebook}.md").read_text()
    if f'"{key}"' in text:
        return True
    for template in re.findall(r'f"(ch\d\d_[^"]*)"', text):
        pattern = re.sub(r"\\\{[^}]*\\\}", r"\\w+", re.escape(template))
        if re.fullmatch(pattern, key):
            return True
    return False


def test_every_key_read_is_recorded_by_its_notebook():
    source = (ROOT / "notebooks" / "ch16_patterns.md").read_text()
    pairs = re.findall(r'"(ch\d\d_\w+)": "(ch\d\d_\w+)"', source)
    pairs += [(key, nb) for _, nb, key, _, _, _ in patterns.EFFICIENCY_SERIES]
    pairs += [(c, nb) for _, nb, _, _, c, _ in patterns.EFFICIENCY_SERIES
              if isinstance(c, str)]
    assert len(pairs) > 40
    wrong = [(k, nb) for k, nb in pairs if not recorded_by(nb, k)]
    assert not wrong, f"keys their notebook does not record: {wrong}"
