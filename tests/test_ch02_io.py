"""Chapter 2: many small files against one large file."""

from __future__ import annotations

import os

import pytest

from hpcai.launch import LauncherError, load_script, run_script

SCRIPT = "scripts/bench/io.py"


def test_io_json_at_smoke_and_cleans_up(tmp_path):
    out = run_script(SCRIPT, profile="smoke", args=["--dir", str(tmp_path)])
    assert out["bench"] == "io" and "machine" in out
    assert out["dir"] == str(tmp_path)
    assert os.listdir(tmp_path) == [], "the benchmark must remove what it created"
    assert out["cleaned_up"] is True
    for key in ("small_files_per_s", "small_fsync_files_per_s", "small_write_GBps",
                "small_read_GBps", "large_write_GBps", "large_write_cached_GBps",
                "large_read_GBps", "large_read_warm_GBps"):
        assert out[key] > 0, key
    assert set(out["per_file_us"]) == {"create", "create_fsync", "stat", "read", "unlink"}
    assert all(v > 0 for v in out["per_file_us"].values())
    # No timing relation between separately timed loops (fsync'ed against plain creates):
    # on tmpfs fsync costs nothing and the two differ by noise alone.
    # The durable large write is the same write timed until after fsync, sample by sample,
    # so its median time cannot be shorter: a relation of the data, not of the noise.
    assert out["large_write_GBps"] <= out["large_write_cached_GBps"] * (1 + 1e-9)


def test_small_and_large_helpers_roundtrip(tmp_path):
    iob = load_script("io")
    data = b"x" * 100
    iob.write_small(str(tmp_path), 5, data, fsync=True)
    assert len(os.listdir(tmp_path)) == 5
    iob.read_small(str(tmp_path), 5, data)
    with pytest.raises(RuntimeError):
        iob.read_small(str(tmp_path), 5, b"y" * 100)
    iob.unlink_small(str(tmp_path), 5)
    assert os.listdir(tmp_path) == []

    chunk = os.urandom(1 << 20)
    path = str(tmp_path / "big.bin")
    t_write, t_sync = iob.write_large(path, 3 << 20, chunk)
    assert 0 < t_write <= t_sync
    assert os.path.getsize(path) == 3 << 20
    iob.drop_from_page_cache(path)
    assert iob.read_large(path, 3 << 20, chunk) > 0


def test_bad_directory_is_refused(tmp_path):
    with pytest.raises(LauncherError, match="not a directory"):
        run_script(SCRIPT, profile="smoke", args=["--dir", str(tmp_path / "missing")])
