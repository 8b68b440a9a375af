"""Memory hierarchy of one core: a working-set sweep and a pointer chase.

Two measurements over the same range of working-set sizes:

* read bandwidth: one core sums an array of W bytes again and again
  (streaming, prefetch-friendly access) -> GB/s as a function of W;
* load-to-use latency: one core follows a random cyclic chain of pointers
  spread over W bytes, one pointer per 64-byte cache line, so every load
  depends on the previous one -> nanoseconds per access as a function of W.

The cache sizes the operating system reports are returned next to the
measurements (``caches``), so that a plot can mark them; ``believed_bytes`` is
each size capped by the rule of ``hpcai.caches`` (a virtual machine may report a
last-level cache that its cores cannot have).
"""

from __future__ import annotations

import glob
import json
import os
import platform
import subprocess

import numpy as np
from numba import njit

from hpcai import caches as cache_rule
from hpcai.cli import bench_main
from hpcai.measure import time_it

LINE = 64  # bytes per cache line on every x86-64 and most Arm server cores
KiB = 1024

SIZES = {
    # min_bytes..max_bytes swept geometrically; `per_octave` points per doubling.
    # `target_bytes`: how many bytes one bandwidth sample reads (more = steadier).
    # `chase_steps`: dependent loads per latency sample.
    "smoke": {"min_bytes": 4 * KiB, "max_bytes": 4 * KiB**2, "per_octave": 1,
              "target_bytes": 8 * KiB**2, "chase_steps": 20_000, "repeats": 3},
    "cpu": {"min_bytes": 4 * KiB, "max_bytes": KiB**3, "per_octave": 2,
            "target_bytes": 128 * KiB**2, "chase_steps": 200_000, "repeats": 5},
    # gpu: a GPU host's CPU, within the budget of `make gpu-check` (building the random
    # chain costs seconds per GiB of working set, hence 1 GiB here and 2 GiB on a cluster)
    "gpu": {"min_bytes": 4 * KiB, "max_bytes": KiB**3, "per_octave": 2,
            "target_bytes": 256 * KiB**2, "chase_steps": 1_000_000, "repeats": 7},
    "cluster": {"min_bytes": 4 * KiB, "max_bytes": 2 * KiB**3, "per_octave": 3,
                "target_bytes": 512 * KiB**2, "chase_steps": 2_000_000, "repeats": 7},
}


# ---------------------------------------------------------------- cache sizes
_parse_size = cache_rule.parse_size  # '48K' -> 49152, '300 MiB' -> 314572800


def read_caches() -> list[dict]:
    """Data/unified caches of CPU 0 as the OS reports them (Linux sysfs, else lscpu/sysctl).

    Each entry: {"level", "type", "size_bytes", "line_bytes", "shared_cpus", "source",
    "believed_bytes"}; the last is size_bytes capped by hpcai.caches.believed_cache_bytes.
    """
    found = _reported_caches()
    ram = cache_rule.total_memory_bytes()
    for c in found:
        sharing = cache_rule.count_cpus(c["shared_cpus"]) or (os.cpu_count() or 1)
        c["believed_bytes"] = cache_rule.believed_cache_bytes(c["size_bytes"], sharing, ram)
    return found


def _reported_caches() -> list[dict]:
    """The caches as reported, before the rule."""
    caches = []
    for d in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            def rd(name: str, d: str = d) -> str:
                with open(os.path.join(d, name)) as f:
                    return f.read().strip()
            ctype = rd("type")
            if ctype == "Instruction":
                continue
            caches.append({
                "level": int(rd("level")), "type": ctype,
                "size_bytes": _parse_size(rd("size")),
                "line_bytes": int(rd("coherency_line_size")),
                "shared_cpus": rd("shared_cpu_list"), "source": "sysfs",
            })
        except (OSError, ValueError):
            continue
    if caches:
        return caches
    if platform.system() == "Darwin":  # macOS: sysctl names per level
        for level, key in [(1, "hw.l1dcachesize"), (2, "hw.l2cachesize"), (3, "hw.l3cachesize")]:
            try:
                out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True,
                                     check=True).stdout.strip()
                if out and int(out) > 0:
                    caches.append({"level": level, "type": "Data" if level == 1 else "Unified",
                                   "size_bytes": int(out), "line_bytes": LINE,
                                   "shared_cpus": "", "source": "sysctl"})
            except (OSError, ValueError, subprocess.CalledProcessError):
                pass
        return caches
    try:  # lscpu reports the total over instances; divide by the instance count
        out = subprocess.run(["lscpu", "-J", "-C"], capture_output=True, text=True, check=True)
        for row in json.loads(out.stdout).get("caches", []):
            if row.get("type") == "Instruction":
                continue
            one = row.get("one-size") or row.get("one_size")
            caches.append({"level": int(row["level"]), "type": row.get("type", ""),
                           "size_bytes": _parse_size(one), "line_bytes": LINE,
                           "shared_cpus": "", "source": "lscpu"})
    except (OSError, ValueError, KeyError, subprocess.CalledProcessError):
        pass
    return caches


# ------------------------------------------------------------------- kernels
@njit(fastmath=True)  # no disk cache: the module is imported under two names
def sum_passes(a: np.ndarray, passes: int) -> float:
    """Read every element of `a` `passes` times (streaming reads); return the total."""
    total = 0.0
    for _ in range(passes):
        s = 0.0
        for i in range(a.size):
            s += a[i]
        total += s
    return total


def make_chain(n_lines: int, rng: np.random.Generator) -> np.ndarray:
    """A single random cycle through `n_lines` cache lines.

    Returns an int64 array of n_lines * 8 entries (one 64-byte line per node);
    entry 8*k holds the index (in elements) of the next node.  Visiting the
    lines in the order of a random permutation p and closing the loop gives
    one cycle that touches every line exactly once.
    """
    stride = LINE // 8
    p = rng.permutation(n_lines).astype(np.int64)
    chain = np.zeros(n_lines * stride, dtype=np.int64)
    chain[p * stride] = np.roll(p, -1) * stride  # p[i] -> p[i+1], last -> first
    return chain


@njit
def chase(chain: np.ndarray, steps: int) -> int:
    """Follow the chain for `steps` dependent loads; return where it ends."""
    j = 0
    for _ in range(steps):
        j = chain[j]
    return j


@njit
def chain_is_one_cycle(chain: np.ndarray, stride: int) -> bool:
    """True if following the chain from 0 visits every node exactly once."""
    n = chain.size // stride
    j = 0
    for k in range(1, n + 1):
        j = chain[j]
        if j == 0:
            return k == n
    return False


# ---------------------------------------------------------------- measuring
def working_sets(min_bytes: int, max_bytes: int, per_octave: int) -> list[int]:
    """Geometric sizes from min_bytes to max_bytes, rounded to whole cache lines."""
    if min_bytes < LINE * 8 or max_bytes < min_bytes or per_octave < 1:
        raise ValueError(f"need {LINE * 8} <= --min-bytes <= --max-bytes and --per-octave >= 1,"
                         f" got {min_bytes}, {max_bytes}, {per_octave}")
    n = int(np.floor(np.log2(max_bytes / min_bytes) * per_octave)) + 1
    sizes = {int(round(min_bytes * 2 ** (k / per_octave) / LINE)) * LINE for k in range(n)}
    return sorted(sizes)


def bandwidth_at(buf: np.ndarray, nbytes: int, target_bytes: int, repeats: int) -> dict:
    """Median read bandwidth of summing the first `nbytes` of `buf` (float64 ones)."""
    a = buf[: nbytes // 8]
    passes = max(1, target_bytes // nbytes)
    assert sum_passes(a, passes) == float(a.size * passes)  # correct before timed (warm-up too)
    timing = time_it(lambda: sum_passes(a, passes), warmup=0, repeats=repeats)
    t, spread = timing.median, timing.iqr
    return {"read_GBps": a.nbytes * passes / t / 1e9,
            "read_GBps_iqr": a.nbytes * passes / t / 1e9 * spread / t,
            "read_median_s": t, "read_iqr_s": spread}


def latency_at(nbytes: int, steps: int, repeats: int, rng: np.random.Generator) -> dict:
    """Median nanoseconds per dependent load on a random cycle over `nbytes`."""
    n_lines = nbytes // LINE
    chain = make_chain(n_lines, rng)
    if n_lines <= 1 << 16:  # full check is cheap for small chains; large ones are sampled
        assert chain_is_one_cycle(chain, LINE // 8)
    chase(chain, min(steps, 4 * n_lines))  # warm-up: bring the chain into the caches
    timing = time_it(lambda: chase(chain, steps), warmup=0, repeats=repeats)
    t, spread = timing.median, timing.iqr
    return {"latency_ns": t / steps * 1e9, "latency_ns_iqr": spread / steps * 1e9,
            "chase_median_s": t, "chase_iqr_s": spread}


def check(S) -> None:
    """The command line's check, before any work (bench_main calls it)."""
    working_sets(int(S.min_bytes), int(S.max_bytes), int(S.per_octave))
    if int(S.chase_steps) < 1 or int(S.repeats) < 1 or int(S.target_bytes) < 1:
        raise ValueError("--chase-steps, --repeats and --target-bytes must be positive")
    try:
        import psutil

        free = int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover
        return
    # the buffer of max_bytes plus the pointer-chase chain of the same size
    if 2 * int(S.max_bytes) > free // 2:
        raise ValueError(f"--max-bytes {S.max_bytes}: a buffer and a chain of that size need "
                         f"more than half of the available {free / 2**30:.1f} GiB")


def run(S) -> dict:
    check(S)
    sizes = working_sets(int(S.min_bytes), int(S.max_bytes), int(S.per_octave))
    rng = np.random.default_rng(2)
    buf = np.ones(sizes[-1] // 8)  # touched once here, so no page faults while timing
    rows = []
    for nbytes in sizes:
        row = {"bytes": nbytes}
        row.update(bandwidth_at(buf, nbytes, int(S.target_bytes), int(S.repeats)))
        row.update(latency_at(nbytes, int(S.chase_steps), int(S.repeats), rng))
        rows.append(row)
    del buf
    return {"rows": rows, "caches": read_caches(), "line_bytes": LINE,
            "kernel": "numba, one thread; bandwidth = float64 sum, latency = random cyclic chase"}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check)
