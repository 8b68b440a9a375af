import json
import math

import pytest

from hpcai import latest, load_results, record


def test_record_appends_and_latest_reads_back(results_tmp):
    record("test_speed_GBps", 1.5, "GB/s")
    entry = record("test_speed_GBps", 2.5, "GB/s", extra={"n": 3})
    stored = json.loads((results_tmp / "test.json").read_text())
    assert [r["value"] for r in stored] == [1.5, 2.5]
    assert entry["machine"]["logical_cores"] >= 1
    assert latest("test_speed_GBps")["value"] == 2.5
    assert latest("never_recorded") is None
    assert len(load_results("test_speed_GBps")) == 2


def test_numpy_scalars_become_plain_values(results_tmp):
    import numpy as np

    entry = record("test_n", np.int64(7), "count")
    assert type(entry["value"]) is int


def test_bad_values_and_keys_are_refused(results_tmp):
    with pytest.raises(ValueError, match="non-finite"):
        record("test_bad", math.nan, "s")
    with pytest.raises(ValueError, match="letters, digits"):
        record("bad key!", 1.0, "s")


def _record_many(args: tuple[str, int]) -> None:
    import os

    folder, worker = args
    os.environ["HPCAI_RESULTS_DIR"] = folder
    for i in range(40):
        record("test_many", worker * 1000 + i, "count")


def test_concurrent_writers_lose_nothing_and_never_leave_half_a_file(results_tmp):
    # two notebooks of one chapter record into one file at the same time (the smoke book
    # runs two at once); a reader must never see a partly written list
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(3) as pool:
        pool.map(_record_many, [(str(results_tmp), w) for w in range(3)])
    values = sorted(r["value"] for r in json.loads((results_tmp / "test.json").read_text()))
    assert values == sorted(w * 1000 + i for w in range(3) for i in range(40))
    assert not list(results_tmp.glob(".*.tmp"))
