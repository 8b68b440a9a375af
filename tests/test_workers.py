"""hpcai.workers: busy processes are separate programs, start spinning, and stop."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hpcai.workers import BusyProcesses, spin


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_spin_runs_for_the_time_asked():
    assert spin(0.02) > 0
    assert spin(0.0) == 0


def test_busy_processes_start_as_new_programs_and_stop():
    with BusyProcesses(2, max_seconds=60) as busy:
        pids = busy.pids
        assert len(pids) == 2
        for pid in pids:
            # a new interpreter, not a fork of this process: its command line says so
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            assert b"hpcai.workers" in cmd
            assert _alive(pid)
    assert busy.pids == []
    assert not any(_alive(pid) for pid in pids)


def test_zero_processes_is_a_no_op():
    with BusyProcesses(0) as busy:
        assert busy.pids == []


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must be"):
        BusyProcesses(-1)
    proc = subprocess.run([sys.executable, "-m", "hpcai.workers", "-3"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: SECONDS")
    assert "Traceback" not in proc.stderr


def test_workers_stop_by_themselves():
    proc = subprocess.run([sys.executable, "-m", "hpcai.workers", "0.05"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "spinning"
