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
