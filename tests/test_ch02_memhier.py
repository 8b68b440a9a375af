"""Chapter 2: working-set sweep and pointer chase."""

from __future__ import annotations

import numpy as np
import pytest

from hpcai.launch import load_script, run_script

SCRIPT = "scripts/bench/memhier.py"


def test_chain_is_a_single_cycle():
    mh = load_script("memhier")
    rng = np.random.default_rng(0)
    for n in (2, 3, 17, 4096):
        chain = mh.make_chain(n, rng)
        assert chain.size == n * 8
        assert mh.chain_is_one_cycle(chain, 8)
        # only one entry per 64-byte line is a pointer; every pointer is line-aligned
        ptrs = chain[::8]
        assert np.all(ptrs % 8 == 0) and sorted(ptrs // 8) == list(range(n))
        assert mh.chase(chain, n) == 0


def test_two_cycles_are_detected():
    mh = load_script("memhier")
    chain = np.zeros(4 * 8, dtype=np.int64)
    chain[0], chain[8], chain[16], chain[24] = 8, 0, 24, 16     # 0<->1 and 2<->3
    assert not mh.chain_is_one_cycle(chain, 8)


def test_sum_passes_reads_every_element():
    mh = load_script("memhier")
    a = np.arange(1000, dtype=np.float64)
    assert mh.sum_passes(a, 3) == pytest.approx(3 * a.sum())


def test_working_sets_are_lines_and_geometric():
    mh = load_script("memhier")
    sizes = mh.working_sets(4096, 1 << 20, 2)
    assert sizes[0] == 4096 and sizes[-1] == 1 << 20
    assert all(s % 64 == 0 for s in sizes)
    assert all(b > a for a, b in zip(sizes, sizes[1:], strict=False))
    with pytest.raises(ValueError):
        mh.working_sets(4096, 1024, 1)


def test_caches_read_from_the_os():
    mh = load_script("memhier")
    caches = mh.read_caches()
    assert isinstance(caches, list)
    for c in caches:
        assert c["level"] in (1, 2, 3, 4) and c["size_bytes"] > 0
    assert mh._parse_size("48K") == 48 * 1024
    assert mh._parse_size("300 MiB") == 300 * 2**20


def test_memhier_json_at_smoke():
    out = run_script(SCRIPT, profile="smoke")
    assert out["bench"] == "memhier" and "machine" in out and "caches" in out
    rows = out["rows"]
    s = out["settings"]
    assert rows[0]["bytes"] == s["min_bytes"] and rows[-1]["bytes"] == s["max_bytes"]
    for r in rows:
        assert r["read_GBps"] > 0 and r["latency_ns"] > 0
        assert 0.05 < r["latency_ns"] < 10_000        # a load is between a cycle and 10 us
    # the largest working set must not be faster per dependent load than the smallest
    assert rows[-1]["latency_ns"] > 0.8 * rows[0]["latency_ns"]
