"""Placement and topology: what the node looks like, and where processes and threads run.

Part ``topology``: the node as hwloc sees it (``lstopo-no-graphics`` text and its XML export,
parsed into counts of packages, NUMA nodes, cores, PUs and caches); without hwloc, the same
table from Linux's /sys. ``nvidia-smi topo -m`` is added where that command exists.

The other parts launch one C program, ``scripts/bench/c/placement_kernel.c`` (MPI + OpenMP,
built with ``mpicc -O2 -fopenmp`` into ``_build/placement/``; where no MPI is installed, a
one-process build with gcc runs the ``pinning`` part only), on the same problem under
different placements, and read back from every rank and thread where it ran (the affinity the
launcher or OpenMP applied, the CPUs it was seen on, its context switches) and how long it took:

``pinning``   one process: 1 thread unpinned and under ``taskset``; W threads (W = the cores
              this process may use) with ``OMP_PROC_BIND`` false / close / spread
              (``OMP_PLACES=cores``), and W threads squeezed onto one core by ``taskset``.
``mpi``       W ranks under ``mpiexec -bind-to none`` and ``-bind-to core``.
``oversub``   ``ranks = oversub x W`` ranks (1, 2, 4, 8 on two cores), same total work.
``hybrid``    W ranks x 1 thread against 1 rank x W threads (``-bind-to core:W``), and the
              classic mistake, 1 rank x W threads under ``-bind-to core`` (one core for all).

Every configuration runs ``rounds`` times, interleaved with the others (so that a busy moment
of the machine hits all of them), each run timing ``repeats`` repeats after one warm-up. The
time of a repeat is from the earliest rank's start to the latest rank's end (one node, one
monotonic clock). Every run's checksum is compared with a NumPy reference of the same
arithmetic before any time is reported.

    python scripts/bench/placement.py --profile smoke --json
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hpcai import repo_root  # noqa: E402
from hpcai.cli import bench_main  # noqa: E402
from hpcai.launch import LauncherError, find_executable  # noqa: E402
from hpcai.measure import Timing  # noqa: E402

SRC = Path(__file__).resolve().parent / "c" / "placement_kernel.c"
FLAGS = ["-O2", "-fopenmp"]
ALPHA = 1.0 - 1.0 / 1024.0  # as in the C source
PARTS = ("topology", "pinning", "mpi", "oversub", "hybrid")

SIZES: dict[str, dict[str, Any]] = {
    # n: elements in total (each is 16 bytes: x and y); sweeps: passes over them per repeat;
    # repeats: timed repeats per run (after one warm-up); rounds: runs of every configuration;
    # oversub: ranks per core for the oversubscription part
    "smoke": {"n": 8192, "sweeps": 40, "repeats": 2, "rounds": 1,
              "oversub": [0.5, 1, 2, 4], "parts": list(PARTS)},
    "cpu": {"n": 65536, "sweeps": 3000, "repeats": 5, "rounds": 4,
            "oversub": [0.5, 1, 2, 4], "parts": list(PARTS)},
    "gpu": {"n": 524288, "sweeps": 1000, "repeats": 3, "rounds": 2,
            "oversub": [0.5, 1, 2, 4], "parts": list(PARTS)},
    "cluster": {"n": 1048576, "sweeps": 2000, "repeats": 5, "rounds": 3,
                "oversub": [0.5, 1, 2, 4], "parts": list(PARTS)},
}
CHOICES = {"parts": PARTS}
MAX_REPEATS = 256  # as in the C source


# ------------------------------------------------------------------------------ topology
def cores() -> list[int]:
    """The CPUs this process may run on (its affinity mask), in order."""
    return sorted(os.sched_getaffinity(0))


def _popcount(mask: str) -> int:
    """Number of set bits of an hwloc cpuset such as ``0x00000003`` or ``0xff,0xffffffff``."""
    return sum(bin(int(part, 16)).count("1") for part in mask.split(",") if part)


def lstopo_text() -> str | None:
    """``lstopo-no-graphics`` (hwloc's text view of the node), or None without hwloc."""
    exe = shutil.which("lstopo-no-graphics") or shutil.which("hwloc-ls")
    if exe is None:
        return None
    proc = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    return proc.stdout if proc.returncode == 0 else None


def lstopo_xml() -> str | None:
    exe = shutil.which("lstopo-no-graphics") or shutil.which("lstopo")
    if exe is None:
        return None
    proc = subprocess.run([exe, "--of", "xml", "-"], capture_output=True, text=True,
                          timeout=60)
    return proc.stdout if proc.returncode == 0 and "<topology" in proc.stdout else None


def parse_hwloc_xml(text: str) -> dict[str, Any]:
    """Counts and sizes from hwloc's XML export: one row per object type.

    Each row: ``type``, ``count``, ``size_bytes`` (caches: each instance's size; NUMA nodes:
    local memory of each), ``pus_each`` (PUs that share one instance).
    """
    root = ET.fromstring(text)
    rows: dict[str, dict[str, Any]] = {}
    names = {"L1Cache": "L1d", "L1iCache": "L1i", "L2Cache": "L2", "L3Cache": "L3",
             "L4Cache": "L4", "NUMANode": "NUMA node", "Package": "Package",
             "Core": "Core", "PU": "PU", "Group": "Group", "Die": "Die"}
    version = None
    for obj in root.iter("object"):
        kind = names.get(obj.get("type", ""))
        if obj.get("type") == "Machine":
            for info in obj.findall("info"):
                if info.get("name") == "hwlocVersion":
                    version = info.get("value")
        if kind is None:
            continue
        size = obj.get("cache_size") or obj.get("local_memory")
        row = rows.setdefault(kind, {"type": kind, "count": 0, "sizes": set(), "pus": set()})
        row["count"] += 1
        if size is not None:
            row["sizes"].add(int(size))
        row["pus"].add(_popcount(obj.get("cpuset", "0x0")))
    return {"source": f"hwloc {version}" if version else "hwloc", "rows": _finish(rows)}


def _finish(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    order = ["Package", "Die", "Group", "NUMA node", "L3", "L2", "L1d", "L1i", "Core", "PU"]
    out = []
    for kind in order:
        if kind not in rows:
            continue
        r = rows[kind]
        sizes, pus = sorted(r["sizes"]), sorted(r["pus"])
        out.append({"type": kind, "count": r["count"],
                    "size_bytes": sizes[0] if len(sizes) == 1 else (sizes or None),
                    "pus_each": pus[0] if len(pus) == 1 else pus})
    return out


def _read(path: Path) -> str:
    return path.read_text().strip()


def _size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]?)", text)
    if m is None:
        raise ValueError(f"unreadable cache size {text!r}")
    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]


def _cpu_list(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            cpus.update(range(int(a), int(b) + 1))
        elif part:
            cpus.add(int(part))
    return cpus


def sysfs_topology(root: Path = Path("/sys/devices/system")) -> dict[str, Any]:
    """The same table as :func:`parse_hwloc_xml`, read from Linux's /sys (no hwloc needed)."""
    rows: dict[str, dict[str, Any]] = {}

    def add(kind: str, size: int | None, pus: int) -> None:
        row = rows.setdefault(kind, {"type": kind, "count": 0, "sizes": set(), "pus": set()})
        row["count"] += 1
        if size is not None:
            row["sizes"].add(size)
        row["pus"].add(pus)

    online = _cpu_list(_read(root / "cpu" / "online"))
    packages: dict[str, set[int]] = {}
    core_ids: dict[tuple[str, str], set[int]] = {}
    caches: dict[tuple[str, str], set[int]] = {}
    sizes: dict[tuple[str, str], int] = {}
    for cpu in sorted(online):
        top = root / "cpu" / f"cpu{cpu}" / "topology"
        pkg = _read(top / "physical_package_id")
        packages.setdefault(pkg, set()).add(cpu)
        core_ids.setdefault((pkg, _read(top / "core_id")), set()).add(cpu)
        for index in sorted((root / "cpu" / f"cpu{cpu}" / "cache").glob("index*")):
            level, kind = _read(index / "level"), _read(index / "type")
            name = f"L{level}" + {"Data": "d", "Instruction": "i"}.get(kind, "")
            name = "L1d" if name == "L1" else name
            shared = _read(index / "shared_cpu_list")
            caches.setdefault((name, shared), _cpu_list(shared))
            sizes[(name, shared)] = _size(_read(index / "size"))
    for cpus in packages.values():
        add("Package", None, len(cpus))
    nodes = sorted((root / "node").glob("node[0-9]*"))
    for node in nodes:
        meminfo = _read(node / "meminfo")
        m = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
        add("NUMA node", int(m.group(1)) * 1024 if m else None,
            len(_cpu_list(_read(node / "cpulist"))))
    for (name, shared), cpus in caches.items():
        add(name, sizes[(name, shared)], len(cpus))
    for cpus in core_ids.values():
        add("Core", None, len(cpus))
    for _ in online:
        add("PU", None, 1)
    return {"source": "Linux /sys", "rows": _finish(rows)}


def mem_total_bytes() -> int | None:
    """MemTotal of /proc/meminfo: the memory the kernel manages, whichever node it sits on."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def gpu_topology() -> str | None:
    """``nvidia-smi topo -m`` (GPU-GPU and GPU-NIC paths and CPU affinity), if it exists."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    proc = subprocess.run([exe, "topo", "-m"], capture_output=True, text=True, timeout=60)
    return proc.stdout if proc.returncode == 0 else None


def topology() -> dict[str, Any]:
    """The node's topology: hwloc's view if hwloc is installed, else /sys's."""
    text, xml = lstopo_text(), lstopo_xml()
    table = parse_hwloc_xml(xml) if xml else sysfs_topology()
    return {**table, "lstopo": text, "mem_total_bytes": mem_total_bytes(),
            "allowed_cpus": cores(), "nvidia_smi_topo": gpu_topology()}


# ------------------------------------------------------------------------------ building
def has_mpi() -> bool:
    """True when both ``mpicc`` and ``mpiexec`` are next to this Python or on the PATH."""
    try:
        find_executable("mpicc")
        find_executable("mpiexec")
    except LauncherError:
        return False
    return True


def compiler() -> tuple[str, list[str]]:
    """``mpicc`` and the flags, or, without MPI, ``gcc`` and a one-process build."""
    if has_mpi():
        return find_executable("mpicc"), FLAGS
    cc = shutil.which(os.environ.get("CC", "gcc"))
    if cc is None:
        raise LauncherError("neither mpicc nor a C compiler (gcc) was found")
    return cc, [*FLAGS, "-DPLACEMENT_NO_MPI"]


def build(src: Path = SRC) -> Path:
    """Compile the kernel with ``mpicc -O2 -fopenmp``; reuse the binary while nothing changed."""
    cc, flags = compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([src.read_text(), " ".join(flags), cc,
                                    version]).encode()).hexdigest()[:16]
    out = repo_root() / "_build" / "placement" / key / src.stem
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{src.stem}.{os.getpid()}.tmp")
    cmd = [cc, *flags, "-o", str(tmp), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LauncherError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    tmp.replace(out)  # atomic: a concurrent build never sees a half-written binary
    return out


# ------------------------------------------------------------------------ configurations
def configs(S: Any, cpus: list[int]) -> list[dict[str, Any]]:
    """Every configuration the selected parts need, each once (parts may share one)."""
    w, first = len(cpus), str(cpus[0])
    out: dict[str, dict[str, Any]] = {}

    def add(part: str, name: str, ranks: int, threads: int, *, bind: str | None = None,
            taskset: str | None = None, omp_bind: str = "false") -> None:
        cfg = out.setdefault(name, {"name": name, "parts": [], "ranks": ranks,
                                    "threads": threads, "bind": bind, "taskset": taskset,
                                    "omp_proc_bind": omp_bind})
        cfg["parts"].append(part)

    parts = set(S.parts)
    if "pinning" in parts:
        add("pinning", "1 thread, unpinned", 1, 1)
        add("pinning", f"1 thread, taskset -c {first}", 1, 1, taskset=first)
        add("pinning", f"{w} threads, unpinned", 1, w)
        add("pinning", f"{w} threads, close", 1, w, omp_bind="close")
        add("pinning", f"{w} threads, spread", 1, w, omp_bind="spread")
        add("pinning", f"{w} threads, taskset -c {first}", 1, w, taskset=first)
    if "mpi" in parts:
        add("mpi", f"{w} ranks, -bind-to none", w, 1, bind="none")
        add("mpi", f"{w} ranks, -bind-to core", w, 1, bind="core")
    if "oversub" in parts:
        for p in oversub_ranks(S.oversub, w):
            add("oversub", f"{p} rank{'s' if p > 1 else ''}, -bind-to none", p, 1,
                bind="none")
    if "hybrid" in parts:
        add("hybrid", f"{w} ranks, -bind-to core", w, 1, bind="core")
        add("hybrid", f"1 rank x {w} threads, -bind-to core:{w}", 1, w, bind=f"core:{w}",
            omp_bind="close")
        add("hybrid", f"1 rank x {w} threads, -bind-to core", 1, w, bind="core",
            omp_bind="close")
    return list(out.values())


def oversub_ranks(factors: list[float], w: int) -> list[int]:
    """Ranks for each factor of ranks per core: 0.5, 1, 2, 4 on two cores -> 1, 2, 4, 8."""
    return sorted({max(1, round(f * w)) for f in factors})


def command(cfg: dict[str, Any], exe: Path, S: Any) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one configuration."""
    args = [str(exe), str(int(S.n)), str(int(S.sweeps)), str(int(S.repeats))]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMP_", "GOMP_", "KMP_"))}
    env["OMP_NUM_THREADS"] = str(cfg["threads"])
    env["OMP_PROC_BIND"] = cfg["omp_proc_bind"]
    if cfg["omp_proc_bind"] != "false":
        env["OMP_PLACES"] = "cores"
    cmd = args
    if cfg["bind"] is not None:
        cmd = [find_executable("mpiexec"), "-n", str(cfg["ranks"]), "-bind-to", cfg["bind"],
               *args]
    if cfg["taskset"] is not None:
        cmd = [shutil.which("taskset") or "taskset", "-c", cfg["taskset"], *cmd]
    return cmd, env


def launch(cfg: dict[str, Any], exe: Path, S: Any, timeout: float = 300) -> list[dict]:
    """Run one configuration once; one dict per rank, as the C program printed them."""
    import json

    cmd, env = command(cfg, exe, S)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise LauncherError(f"{' '.join(cmd)} ran past {timeout} s") from err
    if proc.returncode != 0:
        raise LauncherError(f"{' '.join(cmd)} exited with {proc.returncode}:\n"
                            f"{proc.stderr[-2000:]}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if len(rows) != cfg["ranks"]:
        raise LauncherError(f"{cfg['name']}: expected {cfg['ranks']} ranks, got {len(rows)}")
    return sorted(rows, key=lambda r: r["rank"])


# ----------------------------------------------------------------------------- reference
def reference_checksum(n: int, sweeps: int) -> float:
    """The sum of x after ``sweeps`` updates x = ALPHA x + y, computed by one NumPy process."""
    i = np.arange(n)
    y = 1.0 + 0.25 * (i % 13).astype(np.float64)
    x = np.zeros(n)
    for _ in range(sweeps):
        x *= ALPHA  # the same two IEEE operations per element as the C loop (no FMA at -O2)
        x += y
    return float(x.sum())


def check_result(rows: list[dict], n: int, ref: float, name: str) -> float:
    """The blocks of the ranks tile [0, n) and the checksums add up to the reference."""
    edges = [(r["lo"], r["hi"]) for r in rows]
    if edges[0][0] != 0 or edges[-1][1] != n or any(a[1] != b[0] for a, b in
                                                    zip(edges, edges[1:])):
        raise AssertionError(f"{name}: the ranks' blocks do not tile [0, {n}): {edges}")
    total = sum(r["checksum"] for r in rows)
    if not np.isclose(total, ref, rtol=1e-12, atol=0.0):
        raise AssertionError(f"{name}: checksum {total!r} differs from NumPy's {ref!r}")
    return total


# --------------------------------------------------------------------------- measurement
def summarise(cfg: dict[str, Any], runs: list[list[dict]]) -> dict[str, Any]:
    """Times (spans of the repeats), per-rank times and CPU, context switches, placement."""
    spans, per_rank, cpu, vol, invol = [], [], [], [], []
    for rows in runs:
        reps = len(rows[0]["end"])
        for k in range(reps):
            spans.append(max(r["end"][k] for r in rows) - min(r["start"][k] for r in rows))
        for r in rows:
            per_rank += [e - s for s, e in zip(r["start"], r["end"])]
            cpu += r["cpu_s"]
            vol.append(sum(t["voluntary_ctxt"] for t in r["per_thread"]) / reps)
            invol.append(sum(t["involuntary_ctxt"] for t in r["per_thread"]) / reps)
    t = Timing(spans)
    last = runs[-1]
    return {
        **{k: cfg[k] for k in ("name", "parts", "ranks", "threads", "bind", "taskset",
                               "omp_proc_bind")},
        "checksum": sum(r["checksum"] for r in last),
        "median_s": t.median, "iqr_s": t.iqr, "times_s": spans,
        "rank_median_s": statistics.median(per_rank),
        "rank_cpu_median_s": statistics.median(cpu),
        "ctxt_voluntary_per_rank": statistics.mean(vol),
        "ctxt_involuntary_per_rank": statistics.mean(invol),
        "placement": [{"rank": r["rank"], "rank_affinity": r["rank_affinity"],
                       "threads": [{k: th[k] for k in ("thread", "affinity", "cpus_seen")}
                                   for th in r["per_thread"]]} for r in last],
    }


def mpiexec_version() -> str:
    """``HYDRA 5.0.2`` (MPICH's launcher) or the first line of another mpiexec's version."""
    out = subprocess.run([find_executable("mpiexec"), "--version"], capture_output=True,
                         text=True).stdout
    m = re.search(r"Version:\s+(\S+)", out)
    if "HYDRA" in out and m:
        return f"Hydra {m.group(1)}"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def check(S: Any) -> None:
    """The command line's check, before any work (bench_main calls it)."""
    n, sweeps, reps, rounds = int(S.n), int(S.sweeps), int(S.repeats), int(S.rounds)
    if min(n, sweeps, reps, rounds) < 1:
        raise ValueError("--n, --sweeps, --repeats and --rounds must be >= 1")
    if reps > MAX_REPEATS:
        raise ValueError(f"--repeats must be <= {MAX_REPEATS}, got {reps}")
    if not S.parts:
        raise ValueError(f"--parts must name at least one of {', '.join(PARTS)}")
    if any(f <= 0 for f in S.oversub):
        raise ValueError("--oversub factors must be positive")
    w = len(cores())
    workers = max([w] + [p for p in oversub_ranks(S.oversub, w) if "oversub" in S.parts])
    if n < workers:
        raise ValueError(f"--n ({n}) must be at least the largest number of workers "
                         f"({workers}), so that every thread has elements")
    if set(S.parts) - {"topology"}:
        try:
            compiler()
        except LauncherError as err:
            raise ValueError(str(err)) from None
        if "pinning" in S.parts and shutil.which("taskset") is None:
            raise ValueError("--parts pinning needs `taskset` (util-linux); it is not on "
                             "the PATH")


def run(S: Any) -> dict[str, Any]:
    check(S)
    cpus = cores()
    res: dict[str, Any] = {"cores": len(cpus), "n": int(S.n), "sweeps": int(S.sweeps),
                           "bytes_per_worker": 16 * int(S.n) // len(cpus)}
    if "topology" in S.parts:
        res["topology"] = topology()
    todo = configs(S, cpus)
    if not has_mpi():  # the parts that need ranks are left out, and the result says so
        res["skipped"] = sorted({p for c in todo if c["ranks"] > 1 or c["bind"]
                                 for p in c["parts"]} - {"pinning"})
        todo = [c for c in todo if c["bind"] is None]
    if not todo:
        return res
    exe = build()
    ref = reference_checksum(int(S.n), int(S.sweeps))
    runs: dict[str, list[list[dict]]] = {c["name"]: [] for c in todo}
    for _ in range(int(S.rounds)):  # interleaved: a busy moment hits every configuration
        for cfg in todo:
            rows = launch(cfg, exe, S)
            check_result(rows, int(S.n), ref, cfg["name"])
            runs[cfg["name"]].append(rows)
    res["reference_checksum"] = ref
    res["checked"] = True
    res["mpiexec"] = mpiexec_version() if has_mpi() else None
    res["rows"] = [summarise(cfg, runs[cfg["name"]]) for cfg in todo]
    return res


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check, choices=CHOICES)
