"""Compilers and flags: one C source, several gcc flag sets, one layer up in Python.

Part ``c``: ``scripts/bench/c/compilers_kernels.c`` (a single-precision matmul in i-k-j order
and a dot product) is compiled once per flag set into a shared library cached under
``_build/compilers/``, loaded with ctypes, checked against NumPy, then timed.

Part ``python``: the same matmul as a pure-Python triple loop, as a numba JIT-compiled loop,
as NumPy's ``@`` (a BLAS library call) and as the best C build, all at one smaller size.

    python scripts/bench/compilers.py --profile smoke --json
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hpcai import repo_root, time_it  # noqa: E402

SRC = Path(__file__).resolve().parent / "c" / "compilers_kernels.c"

# The flag sets the chapter compares, from "no optimisation" to "anything goes".
# Each has a short id (used on the command line: --sets O3,native) and the gcc flags.
FLAG_SETS: dict[str, list[str]] = {
    "O0": ["-O0"],
    "O2": ["-O2"],
    "O3": ["-O3"],
    "native": ["-O3", "-march=native"],
    "fastmath": ["-O3", "-march=native", "-ffast-math"],
}


def label(set_id: str) -> str:
    """The flags of a set as one would type them: ``-O3 -march=native``."""
    return " ".join(FLAG_SETS[set_id])


_ALL = list(FLAG_SETS)
SIZES = {
    # n: matmul side (C part); dot_n: dot-product length; py_n: matmul side of the Python
    # part; sets: which flag sets to build and time; python: run the Python part too
    "smoke": {"n": 64, "dot_n": 1 << 14, "py_n": 24, "repeats": 3, "sets": _ALL, "python": True},
    "cpu": {"n": 256, "dot_n": 1 << 18, "py_n": 64, "repeats": 7, "sets": _ALL, "python": True},
    "gpu": {"n": 256, "dot_n": 1 << 18, "py_n": 64, "repeats": 7, "sets": _ALL, "python": True},
    "cluster": {"n": 512, "dot_n": 1 << 20, "py_n": 96, "repeats": 9, "sets": _ALL,
                "python": True},
}

# Relative error allowed against the float64 reference (float32 sums of up to ~1e6 terms).
RTOL = 1e-4


class CompileError(RuntimeError):
    """gcc is missing or rejected the source."""


# ----------------------------------------------------------------------------------- building
def compiler() -> str:
    """The C compiler: $CC, else gcc on the PATH."""
    cc = os.environ.get("CC", "gcc")
    path = shutil.which(cc)
    if path is None:
        raise CompileError(f"C compiler {cc!r} not found; install gcc (apt-get install -y gcc)")
    return path


def compiler_version() -> str:
    """First line of ``gcc --version``."""
    out = subprocess.run([compiler(), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0]


def cache_dir() -> Path:
    return repo_root() / "_build" / "compilers"


def build(flags: list[str], src: Path = SRC) -> Path:
    """Compile ``src`` with ``flags`` into a shared library; reuse it if already built.

    The cache key hashes the source, the flags and the compiler version, so editing the C file
    or changing gcc rebuilds automatically.
    """
    key = hashlib.sha256(
        (src.read_text() + "\0" + " ".join(flags) + "\0" + compiler_version()
         + "\0link-without-flags").encode()
    ).hexdigest()[:16]
    out = cache_dir() / key / f"lib{src.stem}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    obj = out.with_suffix(f".{os.getpid()}.o")
    # Compile with the flags, link without them: gcc links -ffast-math programs with
    # crtfastmath.o, whose constructor switches the whole process to flush-to-zero and
    # denormals-are-zero when the library is loaded, changing every later float result of the
    # Python process that loads it (NumPy's and PyTorch's included).
    for cmd in ([compiler(), *flags, "-fPIC", "-c", "-o", str(obj), str(src)],
                [compiler(), "-shared", "-o", str(tmp), str(obj)]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            obj.unlink(missing_ok=True)
            raise CompileError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    obj.unlink()
    tmp.replace(out)  # atomic: a concurrent build never sees a half-written library
    return out


def vec_report(flags: list[str], kind: str = "optimized", src: Path = SRC) -> list[str]:
    """gcc's vectoriser report (``-fopt-info-vec-KIND``) for ``src``, one line per remark.

    ``kind`` is ``optimized`` (loops it vectorised) or ``missed`` (loops it could not, and why).
    Lines are shortened to ``line:col: remark``.
    """
    if kind not in {"optimized", "missed", "all"}:
        raise ValueError(f"kind must be optimized, missed or all, not {kind!r}")
    cmd = [compiler(), *flags, f"-fopt-info-vec-{kind}", "-c", "-o", os.devnull, str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError(proc.stderr)
    lines = []
    for line in proc.stderr.splitlines():
        if line.startswith(str(src)):
            lines.append(line[len(str(src)) + 1:])
    return list(dict.fromkeys(lines))  # drop repeats, keep order


def assembly(flags: list[str], function: str, src: Path = SRC) -> list[str]:
    """The x86 assembly gcc emits for one ``function`` of ``src`` with ``flags``.

    Directives (lines starting with a dot) are dropped; labels and instructions are kept.
    """
    cmd = [compiler(), *flags, "-S", "-o", "-", str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError(proc.stderr)
    out, inside = [], False
    for line in proc.stdout.splitlines():
        if line.startswith(f"{function}:"):
            inside = True
        elif inside and line.startswith("\t.size"):
            break
        if inside and not line.strip().startswith("."):
            out.append(line.replace("\t", " ").rstrip())
    if not out:
        raise ValueError(f"no function {function!r} in {src.name}")
    return out


def _f32(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> int:
    """Check that ``arr`` is a C-contiguous float32 array of ``shape``; return its address."""
    if arr.dtype != np.float32 or not arr.flags.c_contiguous or arr.shape != shape:
        raise TypeError(f"{name} must be a C-contiguous float32 array of shape {shape}, "
                        f"got {arr.dtype} {arr.shape}")
    return arr.ctypes.data


class Kernels:
    """The C kernels compiled with one flag set, callable on NumPy arrays.

    Arguments are checked once, in Python, and the raw addresses handed to C; ctypes'
    own per-call checking (``np.ctypeslib.ndpointer``) costs tens of microseconds per call,
    more than a small kernel itself.
    """

    def __init__(self, flags: list[str]) -> None:
        self.flags = list(flags)
        self.path = build(self.flags)
        lib = ctypes.CDLL(str(self.path))
        lib.matmul.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.matmul.restype = None
        lib.dot.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        lib.dot.restype = ctypes.c_float
        self._lib = lib

    def matmul_fn(self, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> Callable[[], None]:
        """A zero-argument function that computes ``c = a @ b`` in C (for timing)."""
        n = a.shape[0]
        pa, pb, pc = (_f32(k, v, (n, n)) for k, v in (("a", a), ("b", b), ("c", c)))
        fn = self._lib.matmul
        return lambda: fn(n, pa, pb, pc)

    def dot_fn(self, x: np.ndarray, y: np.ndarray) -> Callable[[], float]:
        """A zero-argument function that returns the float32 dot product of x and y."""
        n = x.shape[0]
        px, py = _f32("x", x, (n,)), _f32("y", y, (n,))
        fn = self._lib.dot
        return lambda: fn(n, px, py)


def load(flags: list[str]) -> Kernels:
    """Build (if needed) and load the kernels compiled with ``flags``."""
    return Kernels(flags)


# ------------------------------------------------------------------------------------- inputs
def inputs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two n x n float32 matrices with entries in [-1, 1)."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    b = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    return a, b


def rel_err(got: np.ndarray | float, ref: np.ndarray | float) -> float:
    """Largest error relative to the largest reference entry."""
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - ref)) / np.max(np.abs(ref)))


def check(name: str, got: Any, ref: Any, rtol: float = RTOL) -> float:
    """Raise if ``got`` differs from ``ref`` by more than ``rtol``; return the error."""
    err = rel_err(got, ref)
    if not err <= rtol:
        raise AssertionError(f"{name}: relative error {err:.2e} > {rtol:.0e}")
    return err


# --------------------------------------------------------------------------------- Python part
def matmul_python(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    """C = A B with three nested Python loops, i-k-j order like the C kernel."""
    n = len(a)
    c = [[0.0] * n for _ in range(n)]
    for i in range(n):
        ci = c[i]
        for k in range(n):
            aik = a[i][k]
            bk = b[k]
            for j in range(n):
                ci[j] += aik * bk[j]
    return c


def matmul_numba() -> Callable[[np.ndarray, np.ndarray, np.ndarray], None]:
    """The same loop nest, compiled by numba (LLVM) the first time it is called."""
    from numba import njit

    @njit(cache=False)
    def mm(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
        n = a.shape[0]
        c[:, :] = 0.0
        for i in range(n):
            for k in range(n):
                aik = a[i, k]
                for j in range(n):
                    c[i, j] += aik * b[k, j]

    return mm


# ---------------------------------------------------------------------------------------- run
def _row(kind: str, variant: str, n: int, flops: float, t: Any, err: float,
         set_id: str | None = None) -> dict[str, Any]:
    return {
        "kernel": kind, "variant": variant, "set": set_id, "n": n, "flop": flops,
        "median_s": t.median, "iqr_s": t.iqr, "gflops": flops / t.median / 1e9,
        "rel_err": err,
    }


def _number_for(seconds_per_call: float, target: float = 0.02) -> int:
    """Calls per timing sample so that one sample lasts at least ``target`` seconds."""
    return max(1, min(1000, int(target / max(seconds_per_call, 1e-9)) + 1))


def run_c(S: Any) -> list[dict[str, Any]]:
    """Time matmul and dot at every flag set; each build is checked before it is timed."""
    n, dn = int(S.n), int(S.dot_n)
    a, b = inputs(n)
    ref = a.astype(np.float64) @ b.astype(np.float64)          # (n, n) float64 reference
    x = np.random.default_rng(1).uniform(-1, 1, dn).astype(np.float32)
    y = np.random.default_rng(2).uniform(-1, 1, dn).astype(np.float32)
    dref = float(np.dot(x.astype(np.float64), y.astype(np.float64)))
    rows = []
    for set_id in S.sets:
        k, name = load(FLAG_SETS[set_id]), label(set_id)
        c = np.zeros((n, n), dtype=np.float32)
        mm = k.matmul_fn(a, b, c)
        mm()
        err = check(f"matmul {name}", c, ref)                  # correct before timed
        once = time_it(mm, warmup=0, repeats=1).median
        t = time_it(mm, warmup=1, repeats=S.repeats, number=_number_for(once))
        rows.append(_row("matmul", name, n, 2.0 * n**3, t, err, set_id))

        dot = k.dot_fn(x, y)
        derr = check(f"dot {name}", dot(), dref, rtol=1e-3)
        once = time_it(dot, warmup=1, repeats=1).median
        t = time_it(dot, warmup=1, repeats=S.repeats, number=_number_for(once))
        rows.append(_row("dot", name, dn, 2.0 * dn, t, derr, set_id))
    return rows


def run_python(S: Any) -> list[dict[str, Any]]:
    """The matmul of the C part at size py_n, four ways."""
    n = int(S.py_n)
    a, b = inputs(n, seed=3)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    flops = 2.0 * n**3
    rows = []

    al, bl = a.astype(np.float64).tolist(), b.astype(np.float64).tolist()
    err = check("python loops", np.array(matmul_python(al, bl)), ref)
    t = time_it(lambda: matmul_python(al, bl), warmup=1, repeats=max(3, S.repeats // 2))
    rows.append(_row("matmul", "Python loops", n, flops, t, err))

    mm = matmul_numba()
    c = np.empty((n, n), dtype=np.float32)
    mm(a, b, c)                                                  # first call compiles
    err = check("numba", c, ref)
    once = time_it(lambda: mm(a, b, c), warmup=0, repeats=1).median
    t = time_it(lambda: mm(a, b, c), warmup=1, repeats=S.repeats, number=_number_for(once))
    rows.append(_row("matmul", "numba @njit", n, flops, t, err))

    cmm = load(FLAG_SETS["native"]).matmul_fn(a, b, c)
    cmm()
    err = check("C -O3 -march=native", c, ref)
    once = time_it(cmm, warmup=0, repeats=1).median
    t = time_it(cmm, warmup=1, repeats=S.repeats, number=_number_for(once))
    rows.append(_row("matmul", "C -O3 -march=native", n, flops, t, err))

    err = check("numpy", a @ b, ref)
    once = time_it(lambda: a @ b, warmup=0, repeats=1).median
    t = time_it(lambda: a @ b, warmup=1, repeats=S.repeats, number=_number_for(once))
    rows.append(_row("matmul", "NumPy a @ b (BLAS)", n, flops, t, err))
    return rows


def validate(S: Any) -> None:
    """Reject bad settings before any work, with a message that says what is allowed."""
    for knob in ("n", "dot_n", "py_n", "repeats"):
        value = getattr(S, knob)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"--{knob.replace('_', '-')} must be a positive integer, "
                             f"got {value!r}")
    if S.n > 4096 or S.py_n > 512:
        raise ValueError(f"--n <= 4096 and --py-n <= 512 keep a run in minutes; "
                         f"got {S.n}, {S.py_n}")
    unknown = [s for s in S.sets if s not in FLAG_SETS]
    if unknown or not S.sets:
        raise ValueError(f"--sets: unknown flag sets {unknown}; choose from "
                         f"{', '.join(FLAG_SETS)}")
    compiler()  # fails early with an install hint when gcc is missing


def check_cli(S: Any) -> None:
    """The command line's check (bench_main calls it): a missing compiler is one line too."""
    try:
        validate(S)
    except CompileError as err:
        raise ValueError(str(err)) from None


def run(S: Any) -> dict[str, Any]:
    validate(S)
    return {
        "compiler": compiler_version(),
        "flag_sets": {k: label(k) for k in S.sets},
        "c": run_c(S),
        "python": run_python(S) if S.python else [],
    }


if __name__ == "__main__":
    from hpcai.cli import bench_main

    bench_main(run, SIZES, description=__doc__, check=check_cli,
               choices={"sets": tuple(FLAG_SETS)})
