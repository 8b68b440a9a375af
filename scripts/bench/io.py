"""Many small files against one large file: bandwidth and metadata cost.

In a fresh temporary directory (under --dir, default: the system's temp
directory) the script

1. creates `n_small` files of `small_bytes` each, without and then with an
   fsync per file, and measures files per second;
2. stats, reads and deletes them, and reports the time per file of each
   metadata operation;
3. writes one file of `large_bytes` in 4 MiB chunks and fsyncs it (write
   bandwidth with and without the fsync), reads it back while its pages are
   still in the page cache (warm read), then asks the kernel to drop those
   pages (posix_fadvise DONTNEED) and reads it again (cold read).

Everything it creates is removed before it returns.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np

from hpcai.cli import bench_main
from hpcai.measure import Timing

KiB = 1024
CHUNK = 4 * KiB**2

SIZES = {
    "smoke": {"n_small": 200, "small_bytes": 4 * KiB, "n_fsync": 20,
              "large_bytes": 16 * KiB**2, "repeats": 3, "dir": ""},
    "cpu": {"n_small": 2000, "small_bytes": 4 * KiB, "n_fsync": 100,
            "large_bytes": 256 * KiB**2, "repeats": 3, "dir": ""},
    "gpu": {"n_small": 5000, "small_bytes": 4 * KiB, "n_fsync": 200,
            "large_bytes": 1024 * KiB**2, "repeats": 3, "dir": ""},
    "cluster": {"n_small": 10000, "small_bytes": 4 * KiB, "n_fsync": 500,
                "large_bytes": 4 * KiB**3, "repeats": 3, "dir": ""},
}


def _payload(nbytes: int, seed: int) -> bytes:
    """Incompressible bytes, so that no layer can cheat by compressing zeros."""
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def _median_iqr(xs) -> tuple[float, float]:
    """Median and inter-quartile range of repeated timings (the book's one definition)."""
    t = Timing(list(xs))
    return t.median, t.iqr


# ---------------------------------------------------------------- small files
def write_small(folder: str, n: int, data: bytes, fsync: bool) -> float:
    """Create n files holding `data`; return seconds."""
    t0 = time.perf_counter()
    for i in range(n):
        with open(_small_name(folder, i), "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return time.perf_counter() - t0


def _small_name(folder: str, i: int) -> str:
    return os.path.join(folder, f"f{i:06d}.bin")


def _time_each(folder: str, n: int, op) -> float:
    """Seconds to apply a metadata operation (``os.stat``, ``os.unlink``) to each small file."""
    t0 = time.perf_counter()
    for i in range(n):
        op(_small_name(folder, i))
    return time.perf_counter() - t0


def stat_small(folder: str, n: int) -> float:
    return _time_each(folder, n, os.stat)


def read_small(folder: str, n: int, expect: bytes) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        with open(_small_name(folder, i), "rb") as f:
            got = f.read()
        if got != expect:
            raise RuntimeError(f"file {i} read back wrong contents")
    return time.perf_counter() - t0


def unlink_small(folder: str, n: int) -> float:
    return _time_each(folder, n, os.unlink)


# ----------------------------------------------------------------- large file
def write_large(path: str, nbytes: int, chunk: bytes) -> tuple[float, float]:
    """Write nbytes in chunks; return (seconds until write() returned, seconds incl. fsync)."""
    t0 = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        left = nbytes
        while left > 0:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
        t1 = time.perf_counter()
        os.fsync(f.fileno())
        t2 = time.perf_counter()
    return t1 - t0, t2 - t0


def drop_from_page_cache(path: str) -> bool:
    """Ask the kernel to forget the cached pages of one file (no root needed). True if possible."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # only clean pages can be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def read_large(path: str, nbytes: int, first_chunk: bytes) -> float:
    """Read the file in CHUNK-sized pieces into one reused buffer; return seconds."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            if total == 0 and bytes(view[:64]) != first_chunk[:64]:
                raise RuntimeError("large file read back wrong contents")
            total += n
    t = time.perf_counter() - t0
    if total != nbytes:
        raise RuntimeError(f"read {total} bytes, expected {nbytes}")
    return t


# ---------------------------------------------------------------------- run
def check(S) -> None:
    """The command line's check, before any work (bench_main calls it)."""
    n, size, n_sync = int(S.n_small), int(S.small_bytes), int(S.n_fsync)
    large, reps = int(S.large_bytes), int(S.repeats)
    if n < 1 or size < 1 or n_sync < 1 or reps < 1:
        raise ValueError("--n-small, --small-bytes, --n-fsync and --repeats must be >= 1")
    if n_sync > n:
        raise ValueError(f"--n-fsync ({n_sync}) must be <= --n-small ({n})")
    if large < CHUNK:
        raise ValueError(f"--large-bytes must be >= {CHUNK} (one read chunk), got {large}")
    base = S.dir or tempfile.gettempdir()
    if not os.path.isdir(base):
        raise ValueError(f"--dir {base!r} is not a directory")
    free = shutil.disk_usage(base).free
    if free < 2 * (large + n * size):
        raise ValueError(f"--dir {base}: not enough free space ({free} bytes) for "
                         f"--large-bytes {large} and --n-small {n} x --small-bytes {size}")


def run(S) -> dict:
    n, size, n_sync = int(S.n_small), int(S.small_bytes), int(S.n_fsync)
    large, reps = int(S.large_bytes), int(S.repeats)
    check(S)
    base = S.dir or tempfile.gettempdir()

    small_data = _payload(size, 1)
    chunk = _payload(min(CHUNK, large), 2)
    work = tempfile.mkdtemp(prefix="hpcai_io_", dir=base)
    res: dict = {"dir": base, "n_small": n, "small_bytes": size, "large_bytes": large}
    try:
        t_create, t_sync, t_stat, t_read, t_unlink = [], [], [], [], []
        for _ in range(reps):
            t_create.append(write_small(work, n, small_data, fsync=False))
            t_stat.append(stat_small(work, n))
            t_read.append(read_small(work, n, small_data))
            t_unlink.append(unlink_small(work, n))
            t_sync.append(write_small(work, n_sync, small_data, fsync=True))
            unlink_small(work, n_sync)
        med = {k: _median_iqr(v) for k, v in [("create", t_create), ("create_fsync", t_sync),
                                              ("stat", t_stat), ("read", t_read),
                                              ("unlink", t_unlink)]}
        per = {"create": n, "create_fsync": n_sync, "stat": n, "read": n, "unlink": n}
        res["small_files_per_s"] = per["create"] / med["create"][0]
        res["small_fsync_files_per_s"] = n_sync / med["create_fsync"][0]
        res["small_write_GBps"] = n * size / med["create"][0] / 1e9
        res["small_read_GBps"] = n * size / med["read"][0] / 1e9
        res["per_file_us"] = {k: med[k][0] / per[k] * 1e6 for k in med}
        res["per_file_us_iqr"] = {k: med[k][1] / per[k] * 1e6 for k in med}
        rows = [{"op": k, "files": per[k], "median_s": med[k][0], "iqr_s": med[k][1]}
                for k in med]

        path = os.path.join(work, "large.bin")
        w_nosync, w_sync, r_warm, r_cold = [], [], [], []
        cold_ok = True
        for _ in range(reps):
            a, b = write_large(path, large, chunk)
            w_nosync.append(a)
            w_sync.append(b)
            r_warm.append(read_large(path, large, chunk))
            cold_ok = drop_from_page_cache(path) and cold_ok
            r_cold.append(read_large(path, large, chunk))
            os.unlink(path)
        res["large_write_cached_GBps"] = large / _median_iqr(w_nosync)[0] / 1e9
        res["large_write_GBps"] = large / _median_iqr(w_sync)[0] / 1e9  # durable: incl. fsync
        res["large_read_warm_GBps"] = large / _median_iqr(r_warm)[0] / 1e9
        res["large_read_GBps"] = large / _median_iqr(r_cold)[0] / 1e9
        res["cold_read_dropped_cache"] = cold_ok
        res["large_spread_s"] = {k: _median_iqr(v)[1] for k, v in
                                 [("write", w_sync), ("read_warm", r_warm), ("read", r_cold)]}
        for k, v in [("large_write_cached", w_nosync), ("large_write", w_sync),
                     ("large_read_warm", r_warm), ("large_read", r_cold)]:
            m, q = _median_iqr(v)
            rows.append({"op": k, "bytes": large, "median_s": m, "iqr_s": q})
        res["rows"] = rows  # every timed operation: median and IQR of the repeats (s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["cleaned_up"] = not os.path.exists(work)
    return res


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check)
