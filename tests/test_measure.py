import time

import pytest

from hpcai import Timer, Timing, describe_machine, machine, time_it, timer_resolution


def test_timing_statistics_on_known_samples():
    t = Timing([1.0, 2.0, 3.0, 4.0, 100.0])
    assert t.median == 3.0
    assert (t.min, t.max) == (1.0, 100.0)
    assert t.iqr == pytest.approx(2.0)      # quartiles 2 and 4 (inclusive method)
    assert t.as_dict()["repeats"] == 5


def test_time_it_counts_warmup_and_repeats_and_syncs():
    calls, syncs = [], []
    t = time_it(lambda: calls.append(1), warmup=3, repeats=5, number=2,
                sync=lambda: syncs.append(1))
    assert len(calls) == 3 + 5 * 2
    assert len(t.times) == 5
    assert len(syncs) >= 2 * 5           # before start and before stop of every sample


def test_time_it_measures_sleep():
    t = time_it(lambda: time.sleep(0.01), warmup=0, repeats=3)
    assert 0.009 < t.median < 0.2


def test_time_it_rejects_bad_arguments():
    with pytest.raises(ValueError):
        time_it(lambda: None, repeats=0)
    with pytest.raises(ValueError):
        time_it(lambda: None, sync="tpu")


def test_timer_context_and_resolution():
    with Timer() as t:
        time.sleep(0.005)
    assert t.seconds >= 0.004
    assert 0 < timer_resolution(samples=200) < 1e-3


def test_machine_description_has_the_essentials():
    m = machine()
    assert m["logical_cores"] >= 1
    assert {"python", "numpy", "torch"} <= set(m["versions"])
    text = describe_machine(m)
    assert f"{m['logical_cores']}-core" in text and "Python" in text
