"""A throwaway OpenSSH "login node" on 127.0.0.1, driven from Python (the SSH appendix).

``scripts/local_sshd.sh`` does the work (keys, configuration, the ``sshd`` daemon, all in
one folder); this module runs it with a folder and a port of its own, so that a notebook,
a test and a reader's own server never share one::

    with LocalSSHD() as login:                  # start; stop and remove the folder on exit
        print(login.ssh("hostname").stdout)     # ssh -F FOLDER/client/ssh_config login ...

Started with ``owner=os.getpid()`` (the default), the server also stops by itself when
the starting process ends, however it ends: a crashed notebook kernel leaves no daemon.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from .paths import repo_root

HOST = "login"  # the host name the generated client configuration defines
_TOOLS = {"sshd": "openssh-server", "ssh": "openssh-client",
          "ssh-keygen": "openssh-client"}


def script() -> Path:
    """The path of ``scripts/local_sshd.sh``."""
    return repo_root() / "scripts" / "local_sshd.sh"


def missing_tools() -> list[str]:
    """Programs the local server needs but this machine lacks, as ``"sshd (openssh-server)"``."""
    missing = []
    for exe, package in _TOOLS.items():
        found = shutil.which(exe) or (exe == "sshd" and os.access("/usr/sbin/sshd", os.X_OK))
        if not found:
            missing.append(f"{exe} ({package})")
    return missing


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class LocalSSHD:
    """One ``sshd`` started by ``local_sshd.sh`` in its own folder, on its own port.

    ``folder`` defaults to a new temporary folder, removed again by :meth:`stop`
    (a folder you pass is kept). ``start`` registers ``stop`` with ``atexit`` as well.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None,
                 port: int | None = None, owner: int | None = None) -> None:
        self._own_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="hpcai-sshd-"))
        self.port = port or free_port()
        self.owner = os.getpid() if owner is None else owner
        self.running = False

    @property
    def config(self) -> Path:
        """The client configuration that defines the host ``login``."""
        return self.folder / "client" / "ssh_config"

    @property
    def remote(self) -> Path:
        """The folder that plays the cluster's scratch space."""
        return self.folder / "remote"

    @property
    def log(self) -> Path:
        """The server's log file."""
        return self.folder / "log" / "sshd.log"

    def script(self, *args: str, check: bool = True,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``local_sshd.sh ARGS`` on this server's folder."""
        env = dict(os.environ, HPCAI_SSHD_DIR=str(self.folder))
        proc = subprocess.run(["bash", str(script()), *args], capture_output=True,
                              text=True, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"local_sshd.sh {' '.join(args)} failed "
                               f"({proc.returncode}): {(proc.stdout + proc.stderr).strip()}")
        return proc

    def start(self) -> LocalSSHD:
        """Start the server and wait until a key login works (retries once on a busy port)."""
        missing = missing_tools()
        if missing:
            raise RuntimeError(f"missing {', '.join(missing)}: "
                               "apt-get install -y openssh-server openssh-client")
        args = ["start", "--port", str(self.port)]
        if self.owner:
            args += ["--owner", str(self.owner)]
        proc = self.script(*args, check=False)
        if proc.returncode != 0 and "port in use" in proc.stderr:
            self.port = free_port()
            args[2] = str(self.port)
            proc = self.script(*args, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"local_sshd.sh start failed: {proc.stderr.strip()}")
        self.running = True
        atexit.register(self.stop)
        return self

    def status(self) -> subprocess.CompletedProcess[str]:
        """``local_sshd.sh status`` (return code 0 while the server runs)."""
        return self.script("status", check=False)

    def stop(self) -> None:
        """Stop the server; remove the folder if this object made it. Safe to call twice."""
        if self.folder.exists():
            self.script("stop", check=False)
        self.running = False
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def ssh_cmd(self, *args: str) -> list[str]:
        """The command line ``ssh -F CONFIG ARGS`` (put ``login`` among ``args``)."""
        return ["ssh", "-F", str(self.config), *args]

    def ssh(self, command: str, *options: str, check: bool = True, input: str | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on the login node: ``ssh -F CONFIG OPTIONS login COMMAND``."""
        return subprocess.run(self.ssh_cmd(*options, HOST, command), capture_output=True,
                              text=True, check=check, input=input, timeout=timeout)

    def __enter__(self) -> LocalSSHD:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
