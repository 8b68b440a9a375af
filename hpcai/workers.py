"""Busy processes on demand: the load a shared machine adds, for measuring what it does.

Appendix A (Task A.5) times a kernel while other processes compete for the cores. The
competitors are *new* Python interpreters (``python -m hpcai.workers SECONDS``), never forks
of the notebook's kernel: a forked child would inherit the kernel's open ZeroMQ sockets and
its half-held locks, which is exactly what a Jupyter kernel must not share.

    with BusyProcesses(2):          # two cores busy until the block ends
        noisy = time_it(kernel)
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from types import TracebackType

from .paths import repo_root

READY = "spinning"


def spin(seconds: float) -> int:
    """Keep one core busy for ``seconds`` of wall time; return the loop iterations."""
    deadline = time.monotonic() + seconds
    iterations = 0
    while time.monotonic() < deadline:
        iterations += 1
    return iterations


class BusyProcesses:
    """``n`` separate processes that each spin on a core until the ``with`` block ends.

    Entering waits until every process is spinning (each prints one line), so a measurement
    inside the block sees the full load. Leaving stops them. ``max_seconds`` bounds their
    life even if the block is never left (a crashed notebook leaves no spinning orphans).
    """

    def __init__(self, n: int, *, max_seconds: float = 300.0, start_timeout: float = 60.0):
        if n < 0:
            raise ValueError(f"n must be 0 or more busy processes, not {n}")
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, not {max_seconds}")
        self.n = n
        self.max_seconds = max_seconds
        self.start_timeout = start_timeout
        self.procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> BusyProcesses:
        env = dict(os.environ)
        root = str(repo_root())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, "-m", "hpcai.workers", str(self.max_seconds)]
        try:
            for _ in range(self.n):
                self.procs.append(subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, env=env))
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        with selectors.DefaultSelector() as sel:
            for proc in self.procs:
                assert proc.stdout is not None
                sel.register(proc.stdout, selectors.EVENT_READ, proc)
            waiting = len(self.procs)
            while waiting:
                left = deadline - time.monotonic()
                events = sel.select(timeout=max(left, 0.0))
                if not events:
                    raise RuntimeError(f"busy processes did not start in {self.start_timeout} s")
                for key, _ in events:
                    line = key.fileobj.readline()  # type: ignore[union-attr]
                    if line.strip() != READY:
                        code = key.data.poll()
                        raise RuntimeError(f"a busy process failed to start (exit {code})")
                    sel.unregister(key.fileobj)
                    waiting -= 1

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after 10 s) and reap it."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs = []

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m hpcai.workers SECONDS``: say that we spin, then spin."""
    args = sys.argv[1:] if argv is None else argv
    try:
        seconds = float(args[0]) if args else 300.0
        if not seconds > 0:
            raise ValueError
    except ValueError:
        print(f"error: SECONDS must be a positive number, got {args[0]!r}", file=sys.stderr)
        return 2
    print(READY, flush=True)
    spin(seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
