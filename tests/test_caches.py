"""hpcai.caches: how much of a reported cache size to believe, and arrays that miss it."""

from __future__ import annotations

import pytest

from hpcai import caches

MiB = 2**20
GiB = 2**30


def test_parse_sizes_and_cpu_lists():
    assert caches.parse_size("491520K") == 480 * MiB
    assert caches.parse_size("2 MiB") == 2 * MiB and caches.parse_size("4096") == 4096
    assert caches.count_cpus("0-1") == 2 and caches.count_cpus("0-1,4,6-7") == 5
    assert caches.count_cpus("3") == 1 and caches.count_cpus("") == 0


def test_a_vm_report_is_capped_per_core():
    # this book's VM: lscpu says 480 MiB of L3 shared by 2 CPUs, 24 GiB of memory
    assert caches.believed_cache_bytes(480 * MiB, 2, 24 * GiB) == 64 * MiB


def test_a_plausible_report_passes_unchanged():
    assert caches.believed_cache_bytes(36 * MiB, 16, 32 * GiB) == 36 * MiB      # a desktop
    assert caches.believed_cache_bytes(105 * MiB, 56, 512 * GiB) == 105 * MiB   # a server


def test_memory_caps_the_belief():
    assert caches.believed_cache_bytes(1 * GiB, 64, 8 * GiB) == 8 * GiB // 32


def test_arrays_beyond_the_cache_have_a_floor_and_a_ceiling():
    floor = caches.ARRAY_FLOOR_BYTES
    assert caches.array_bytes_beyond_cache(64 * MiB, 2, 10 * GiB) == floor
    assert caches.array_bytes_beyond_cache(105 * MiB, 4, 10 * GiB) == 420 * MiB
    assert caches.array_bytes_beyond_cache(None, 4, 10 * GiB) == max(
        4 * caches.DEFAULT_LLC_BYTES, floor)
    assert caches.array_bytes_beyond_cache(105 * MiB, 4, 100 * MiB) == 100 * MiB
    with pytest.raises(ValueError, match="factor"):
        caches.array_bytes_beyond_cache(64 * MiB, 0.5, GiB)


def test_last_level_cache_from_a_fake_sysfs(tmp_path):
    for i, (level, ctype, size, shared) in enumerate(
            [(1, "Data", "48K", "0"), (1, "Instruction", "64K", "0"),
             (2, "Unified", "2048K", "0"), (3, "Unified", "491520K", "0-1")]):
        d = tmp_path / "cpu0" / "cache" / f"index{i}"
        d.mkdir(parents=True)
        for name, value in (("level", level), ("type", ctype), ("size", size),
                            ("shared_cpu_list", shared)):
            (d / name).write_text(f"{value}\n")
    assert [c["level"] for c in caches.sysfs_caches(0, tmp_path)] == [1, 2, 3]
    llc = caches.last_level_cache(0, tmp_path, ram_bytes=24 * GiB)
    assert llc == {"level": 3, "reported_bytes": 480 * MiB, "sharing": 2,
                   "believed_bytes": 64 * MiB, "capped": True}
    assert caches.last_level_cache(0, tmp_path / "nothing") is None
