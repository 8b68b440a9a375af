"""The appendices' local services: scripts/local_sshd.sh (the SSH appendix's login node)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from hpcai.sshd import LocalSSHD, free_port, missing_tools, port_open, script

MISSING = missing_tools()
needs_sshd = pytest.mark.skipif(
    bool(MISSING), reason=f"missing {', '.join(MISSING)}: apt-get install -y openssh-server")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    # a zombie (exited, not yet reaped) counts as gone
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _sshd_pid(server: LocalSSHD) -> int:
    return int((server.folder / "run" / "sshd.pid").read_text())


@needs_sshd
def test_start_login_copy_status_stop(tmp_path):
    """start, a key login, a file copied in, status, stop: nothing left running."""
    server = LocalSSHD(tmp_path / "sshd")
    server.start()
    try:
        pid = _sshd_pid(server)
        assert _alive(pid) and port_open(server.port)
        out = server.ssh("echo hello from $(hostname); echo $SSH_CONNECTION").stdout.split("\n")
        assert out[0].startswith("hello from ")
        assert out[1].split()[-1] == str(server.port)  # the session came in on our port
        # the login needs the key: without it (and without a password) it is refused
        known = server.folder / "client" / "known_hosts"
        bare = subprocess.run(
            ["ssh", "-F", "/dev/null", "-p", str(server.port), "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={known}", "-o", "IdentityAgent=none",
             "127.0.0.1", "true"], capture_output=True, text=True, timeout=30)
        assert bare.returncode == 255 and "Permission denied" in bare.stderr
        status = server.status()
        assert status.returncode == 0 and f"127.0.0.1:{server.port}" in status.stdout
        again = server.script("start", "--port", str(server.port))
        assert "already running" in again.stdout
    finally:
        server.stop()
    for _ in range(50):
        if not _alive(pid):
            break
        time.sleep(0.1)
    assert not _alive(pid), "sshd still running after stop"
    assert not port_open(server.port)
    assert server.status().returncode == 1
    assert not (tmp_path / "sshd" / "run" / "sshd.pid").exists()


@needs_sshd
def test_owner_killed_with_its_group_stops_server(tmp_path):
    """start --owner PID: sshd stops once the owner is gone, even when the owner's whole
    process group is killed (as a Jupyter kernel's is at shutdown)."""
    folder = tmp_path / "sshd"
    env = dict(os.environ, HPCAI_SSHD_DIR=str(folder))
    owner = subprocess.Popen(
        ["bash", "-c", f"bash {script()} start --port {free_port()} --owner $$ "
         ">/dev/null && exec sleep 60"], env=env, start_new_session=True)
    pid_file = folder / "run" / "sshd.pid"
    try:
        for _ in range(200):
            if (folder / "run" / "owner-watch.pid").exists() or owner.poll() is not None:
                break
            time.sleep(0.05)
        assert owner.poll() is None, "start failed"
        pid = int(pid_file.read_text())
        assert _alive(pid)
        os.killpg(owner.pid, signal.SIGKILL)
        owner.wait()
        for _ in range(60):
            if not _alive(pid):
                break
            time.sleep(0.1)
        assert not _alive(pid), "sshd outlived its owner"
    finally:
        if owner.poll() is None:
            os.killpg(owner.pid, signal.SIGKILL)
        subprocess.run(["bash", str(script()), "stop"], env=env, capture_output=True)


@pytest.mark.parametrize("args", [
    ["start", "--port", "abc"], ["start", "--port", "80"], ["start", "--port"],
    ["start", "--owner", "notapid"], ["start", "--frob"], ["stop", "now"], ["reboot"], [],
])
def test_bad_input_one_error_line_exit_2(tmp_path, args):
    env = dict(os.environ, HPCAI_SSHD_DIR=str(tmp_path / "sshd"))
    proc = subprocess.run(["bash", str(script()), *args], capture_output=True, text=True,
                          env=env, timeout=30)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not (tmp_path / "sshd").exists(), "bad input must be refused before any work"
