"""Launch scripts the way practitioners do and read back their JSON result.

Every benchmark under ``scripts/bench/`` prints, with ``--json``, one JSON object as its last
line of standard output. These helpers run such a script directly, under ``torchrun``, under
``mpiexec`` or as a SLURM job, and return that object as a dict.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from .paths import repo_root
from .profiles import check_profile


class LauncherError(RuntimeError):
    """A launcher is missing, or the launched program failed or printed no JSON."""


def _script_path(script: str | os.PathLike[str]) -> Path:
    path = Path(script)
    if not path.is_absolute():
        path = repo_root() / path
    if not path.exists():
        raise LauncherError(f"script not found: {path}")
    return path


def find_executable(name: str) -> str:
    """Find ``name`` next to this Python (a virtual environment's bin/) or on the PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        hints = {
            "mpiexec": "install MPICH (`pip install mpich mpi4py`, as requirements.txt does)",
            "sbatch": "install SLURM and start the local two-node cluster with "
            "`scripts/setup_machine.sh` (as root) or run on a SLURM login node",
        }
        raise LauncherError(
            f"`{name}` was not found next to {sys.executable} or on the PATH; "
            + hints.get(name, "install it or activate the book's virtual environment")
        )
    return found


def parse_json_tail(stdout: str) -> dict[str, Any]:
    """The last line of ``stdout`` that parses as a JSON object."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise LauncherError("the program printed no JSON object on its last lines:\n" + stdout[-2000:])


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    root = str(repo_root())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("HPCAI_ROOT", root)
    if extra:
        env.update(extra)
    return env


def run_json(
    cmd: Sequence[str],
    *,
    timeout: float = 600,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run ``cmd``, fail loudly on a non-zero exit, and return its last-line JSON object."""
    try:
        proc = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_env(env),
            cwd=cwd or repo_root(),
        )
    except FileNotFoundError as err:
        raise LauncherError(f"cannot start {cmd[0]!r}: {err}") from err
    except subprocess.TimeoutExpired as err:
        raise LauncherError(f"{' '.join(cmd)} ran past {timeout} s") from err
    if proc.returncode != 0:
        raise LauncherError(
            f"{' '.join(cmd)} exited with {proc.returncode}\n--- stderr ---\n"
            f"{proc.stderr[-4000:]}\n--- stdout ---\n{proc.stdout[-2000:]}"
        )
    return parse_json_tail(proc.stdout)


def _bench_args(profile: str | None, args: Sequence[str]) -> list[str]:
    out = ["--json"]
    if profile is not None or "--profile" not in args:
        out += ["--profile", check_profile(profile)]
    return out + [str(a) for a in args]


def run_script(
    script: str | os.PathLike[str],
    *,
    profile: str | None = None,
    args: Sequence[str] = (),
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``python SCRIPT --json --profile P ARGS`` and return its JSON result."""
    cmd = [sys.executable, str(_script_path(script)), *_bench_args(profile, args)]
    return run_json(cmd, timeout=timeout, env=env)


def torchrun(
    script: str | os.PathLike[str],
    nproc: int,
    *,
    profile: str | None = None,
    args: Sequence[str] = (),
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run a script under ``torchrun --standalone --nproc-per-node NPROC``."""
    if nproc < 1:
        raise ValueError("nproc must be at least 1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", str(_script_path(script)), *_bench_args(profile, args),
    ]
    extra = {"OMP_NUM_THREADS": "1", **(env or {})}
    return run_json(cmd, timeout=timeout, env=extra)


def mpiexec(
    script: str | os.PathLike[str],
    n: int,
    *,
    profile: str | None = None,
    args: Sequence[str] = (),
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run a script under ``mpiexec -n N python SCRIPT`` (rank 0 prints the JSON line)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    cmd = [
        find_executable("mpiexec"), "-n", str(n), sys.executable, str(_script_path(script)),
        *_bench_args(profile, args),
    ]
    return run_json(cmd, timeout=timeout, env=env)


def _job_state(job_id: str) -> tuple[str | None, str | None]:
    """(JobState, ExitCode) of a job from ``scontrol show job``; (None, None) once it is gone."""
    proc = subprocess.run([find_executable("scontrol"), "show", "job", job_id],
                          capture_output=True, text=True)
    state = re.search(r"JobState=(\S+)", proc.stdout)
    code = re.search(r"ExitCode=(\S+)", proc.stdout)
    return (state.group(1) if state else None, code.group(1) if code else None)


def sbatch(
    job_script: str | os.PathLike[str],
    *,
    args: Sequence[str] = (),
    sbatch_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 600,
    poll_s: float = 0.2,
) -> dict[str, Any]:
    """Submit a job script with ``sbatch``, wait for it, and read the JSON of its output file.

    The job is polled with ``scontrol show job`` every ``poll_s`` seconds (``sbatch --wait``
    backs off to tens of seconds between checks). Returns the JSON object with ``job_id``,
    ``state``, ``output_file`` and ``wall_s`` added. ``sbatch_args=["-N", "2"]`` asks for two
    nodes; with ``scripts/slurm/torchrun.sbatch``, ``env={"BENCH": "allreduce"}`` names the
    program (and the output file, ``_build/slurm-out/torchrun-allreduce-<job id>.out``).
    """
    path = _script_path(job_script)
    exe = find_executable("sbatch")
    out_dir = repo_root() / "_build" / "slurm-out"
    out_dir.mkdir(parents=True, exist_ok=True)
    # a generic template (torchrun.sbatch) names its program in $BENCH: keep it in the name
    bench = (env or {}).get("BENCH")
    stem = f"{path.stem}-{Path(bench).stem}" if bench else path.stem
    output = out_dir / f"{stem}-%j.out"
    cmd = [exe, "--parsable", f"--output={output}", *map(str, sbatch_args), str(path),
           *map(str, args)]
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(env), cwd=repo_root())
    match = re.match(r"(\d+)", proc.stdout.strip())
    if proc.returncode != 0 or match is None:
        raise LauncherError(f"sbatch {path.name} was refused (exit {proc.returncode}): "
                            f"{proc.stderr.strip() or proc.stdout.strip()}")
    job_id = match.group(1)
    state, code = _job_state(job_id)
    while state in {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"}:
        if time.time() - started > timeout:
            subprocess.run([find_executable("scancel"), job_id], capture_output=True)
            raise LauncherError(f"SLURM job {job_id} ({path.name}) did not finish in {timeout} s")
        time.sleep(poll_s)
        state, code = _job_state(job_id)
    out_file = Path(str(output).replace("%j", job_id))
    text = out_file.read_text() if out_file.exists() else ""
    if state not in (None, "COMPLETED") or (code not in (None, "0:0")):
        raise LauncherError(f"SLURM job {job_id} ({path.name}) ended {state} with exit code "
                            f"{code}\n{text[-2000:]}")
    result = parse_json_tail(text)
    result.update(job_id=job_id, state=state or "COMPLETED", output_file=str(out_file),
                  wall_s=time.time() - started)
    return result


def load_script(name: str) -> ModuleType:
    """Import ``scripts/bench/NAME.py`` as a module (to show or reuse its kernels)."""
    path = _script_path(Path("scripts") / "bench" / f"{name}.py")
    module_name = f"hpcai_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # pragma: no cover
        raise LauncherError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
