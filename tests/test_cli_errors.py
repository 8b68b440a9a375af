"""Every benchmark refuses bad command-line values the same way, before any work.

The scripts are found with a glob, so a new benchmark is covered without editing this file.
What each knob is comes from the script's own ``--help`` (``hpcai.cli.build_parser`` writes
the kind of every knob as its metavar: ``INT``, ``NUMBER``, ``{a,b}``, ``INT,...``).
"""

import os
import re
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts" / "bench").glob("*.py"))
# Import time of torch or numba on a busy 2-core machine; a run that did any work at the
# smoke profile would also print JSON, which is checked separately.
LIMIT_S = 60


def _env() -> dict[str, str]:
    env = dict(os.environ, COLUMNS="100000", PYTHONPATH=str(ROOT))
    # not under a launcher: the script must not wait for other ranks
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "PMI_RANK", "PMI_SIZE"):
        env.pop(var, None)
    return env


def _run(script: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, env=_env(), cwd=ROOT, timeout=LIMIT_S * 3)
    return proc, time.perf_counter() - t0


@cache
def knobs(script: Path) -> dict[str, str]:
    """``{"--knob": "METAVAR"}`` from the usage line of ``script --help``."""
    proc, _ = _run(script, "--help")
    assert proc.returncode == 0, proc.stderr
    usage = proc.stdout.split("\n\n")[0]
    found = dict(re.findall(r"\[(--[\w-]+) ([^\]\s]+)\]", usage))
    found.pop("--profile", None)
    return found


def numeric(script: Path) -> str:
    """``--repeats`` if the script has it, else its first integer knob (else a number)."""
    table = knobs(script)
    if table.get("--repeats") == "INT":
        return "--repeats"
    for kind in ("INT", "NUMBER", "INT,...", "NUMBER,..."):
        for name, metavar in table.items():
            if metavar == kind:
                return name
    pytest.skip(f"{script.name} has no numeric knob")


def assert_one_error(proc: subprocess.CompletedProcess, seconds: float, knob: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error:") and knob in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert "{" not in proc.stdout, "printed a result: the work ran"
    assert seconds < LIMIT_S, f"took {seconds:.1f} s: did it do work before failing?"


@pytest.fixture(params=SCRIPTS, ids=[p.stem for p in SCRIPTS])
def script(request) -> Path:
    return request.param


def test_every_benchmark_is_found():
    assert len(SCRIPTS) >= 10, SCRIPTS


def test_negative_number_is_refused(script):
    knob = numeric(script)
    value = "-3,4" if knob_is_list(script, knob) else "-3"
    proc, seconds = _run(script, "--profile", "smoke", "--json", f"{knob}={value}")
    assert_one_error(proc, seconds, knob)


def test_non_number_is_refused(script):
    knob = numeric(script)
    proc, seconds = _run(script, "--profile", "smoke", "--json", knob, "abc")
    assert_one_error(proc, seconds, knob)


def test_unknown_choice_is_refused(script):
    """Every script has ``--profile``; any other knob with choices is refused alike."""
    proc, seconds = _run(script, "--profile", "no-such-profile", "--json")
    assert_one_error(proc, seconds, "unknown profile 'no-such-profile'")
    for knob in [k for k, m in knobs(script).items() if m.startswith("{")]:
        proc, seconds = _run(script, "--profile", "smoke", "--json", knob, "no-such-value")
        assert_one_error(proc, seconds, knob)


def knob_is_list(script: Path, knob: str) -> bool:
    return knobs(script)[knob].endswith(",...")
