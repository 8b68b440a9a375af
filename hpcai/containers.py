"""Podman from Python, the way ``scripts/containers.sh`` calls it (book chapter 3).

Every call runs ``podman --runtime runc`` with ``CONTAINERS_CONF`` pointing at
``containers/containers.conf`` (no default ulimits), so the notebook, the tests and the script
see the same engine settings. The images are made on this machine (no registry):

- ``BASE``: a minimal Debian 12 from debootstrap, ``scripts/containers.sh base``;
- ``SLIM``: Python, NumPy, the lab package, one benchmark, a Jupyter server
  (``containers/Containerfile.slim``, ``scripts/containers.sh slim``);
- ``FULL``: the book's whole environment (``containers/Dockerfile``,
  ``scripts/containers.sh full``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .paths import repo_root

BASE = "localhost/hpcai-base:bookworm"
SLIM = "localhost/hpcai-slim:latest"
FULL = "localhost/hpcai-book:latest"
JUPYTER = "hpcai-jupyter"
SCRIPT = "scripts/containers.sh"


def env() -> dict[str, str]:
    """The environment of every podman call: this process's, with the book's engine settings."""
    return {**os.environ, "CONTAINERS_CONF": str(repo_root() / "containers" / "containers.conf")}


def have_podman() -> bool:
    """Podman and runc are installed (the engine and the runtime the book uses)."""
    return shutil.which("podman") is not None and shutil.which("runc") is not None


def podman(*args: str, check: bool = True, timeout: float = 600,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    """``podman --runtime runc ARGS``; raises ``RuntimeError`` with podman's message on failure
    when ``check``."""
    proc = subprocess.run(["podman", "--runtime", "runc", *args], capture_output=True,
                          text=True, env=env(), timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:2])} exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-800:]}")
    return proc


def image_exists(ref: str) -> bool:
    """True when the image ``ref`` is in this machine's Podman storage."""
    if not have_podman():
        return False
    try:
        return podman("image", "exists", ref, check=False, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def have_base() -> bool:
    """Podman, runc and the locally made base image: what building the book's images needs."""
    return image_exists(BASE)


def inspect(ref: str) -> dict[str, Any]:
    """``podman image inspect REF`` as a dict (the first and only image)."""
    data = json.loads(podman("image", "inspect", ref, timeout=60).stdout)
    return dict(data[0])


def script(*args: str, check: bool = True,
           timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``scripts/containers.sh ARGS`` from the repository root, output captured."""
    proc = subprocess.run([str(repo_root() / SCRIPT), *args], capture_output=True,
                          text=True, cwd=repo_root(), timeout=timeout)
    if check and proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-1500:]
        raise RuntimeError(f"{SCRIPT} {' '.join(args)} exited {proc.returncode}:\n{tail}")
    return proc


def state_dir() -> Path:
    """Where ``scripts/containers.sh`` keeps the base's root file system, contexts and logs."""
    return Path(os.environ.get("HPCAI_CONTAINERS_DIR", "/var/tmp/hpcai-containers"))


def build_record(name: str) -> dict[str, Any] | None:
    """What the script recorded about its last build of ``name`` (``base``, ``slim``,
    ``slim-fresh``: the last one with no step from the cache, ``full``...), or ``None``."""
    path = state_dir() / f"build-{name}.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None
