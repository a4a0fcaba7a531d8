"""What keeps a run directory consistent through faults: atomic writes, one writer, stop requests.

* :func:`atomic_write_text`: temp file in the same directory, fsync, ``os.replace``:
  a reader (or a resume after ``kill -9``) sees the old file or the new one, never half.
* :class:`RunLock`: ``run_dir/.lock`` holds ``host pid``; created with ``O_EXCL``, so of
  two processes on one run dir exactly one gets it. A lock whose process is dead on this
  host is stale and taken over; one held elsewhere is reported with its holder.
* :class:`StopRequest`: SIGTERM / SIGINT set a flag the training loop checks between
  generations (it checkpoints and exits ``128 + signal``); a second signal exits at once.
* :func:`fault`: test hook. ``EVOLOPT_FAULT=point:n[:action]`` acts at the ``n``-th time
  the named point is reached: ``kill`` (default; SIGKILL to itself, as ``kill -9`` would),
  ``enospc`` (raise ``OSError(ENOSPC)``), ``fill`` (fill the disk through the file
  ``EVOLOPT_FAULT_FILL``, as another program would), ``term`` / ``int`` (send itself that
  signal) or ``term2`` (SIGTERM twice: the second stops at once).
* :class:`RunAborted`: a run that stopped for a reason the user must act on (disk full,
  non-finite theta, signal), with its exit code; the CLI prints it as one line.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from evolopt.registry import ConfigError

LOCK_NAME = ".lock"
TMP_PREFIX = ".evolopt-tmp-"
_fault_hits: dict[str, int] = {}
FAULT_ACTIONS = ("kill", "enospc", "fill", "term", "term2", "int")


class RunAborted(Exception):
    """The run stopped early; ``str(e)`` is the one line for the user, ``exit_code`` the status."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def fault(point: str) -> None:
    """Act on ``EVOLOPT_FAULT`` if it names ``point`` (tests only; a no-op otherwise)."""
    spec = os.environ.get("EVOLOPT_FAULT")
    if not spec:
        return
    parts = spec.split(":")  # point names contain ':' themselves (write:config.yaml)
    action = parts.pop() if parts[-1] in FAULT_ACTIONS else "kill"
    count = int(parts.pop()) if parts[-1].isdigit() else 1
    if ":".join(parts) != point:
        return
    _fault_hits[point] = _fault_hits.get(point, 0) + 1
    if _fault_hits[point] != count:
        return
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"<injected at {point}>")
    if action == "fill":  # another program fills the disk now: real ENOSPC for every later write
        _fill(Path(os.environ["EVOLOPT_FAULT_FILL"]))
        return
    sig = {"term": signal.SIGTERM, "term2": signal.SIGTERM, "int": signal.SIGINT}.get(action, signal.SIGKILL)
    sys.stdout.flush()
    sys.stderr.flush()
    for _ in range(2 if action == "term2" else 1):
        os.kill(os.getpid(), sig)
    if sig == signal.SIGKILL:  # pragma: no cover - never returns
        os._exit(137)


def _fill(path: Path) -> None:
    try:
        with open(path, "ab") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    except OSError:
        pass


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` all at once (temp file + fsync + rename)."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text[: len(text) // 2])
            fault(f"write:{path.name}")  # a kill here leaves only the temp file
            f.write(text[len(text) // 2 :])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_temp_files(directory: Path) -> None:
    """Temp files a killed process left behind (never the real files)."""
    if directory.is_dir():
        for p in directory.iterdir():
            if p.name.startswith(TMP_PREFIX) and p.is_file():
                p.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``run_dir/.lock`` (``host pid``) while a process writes the run; see the module doc."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def holder(self) -> tuple[str, int] | None:
        try:
            host, pid = self.path.read_text().split()
            return host, int(pid)
        except (FileNotFoundError, ValueError):
            return None

    def acquire(self) -> None:
        """Take the lock, or ConfigError naming the run dir and the process that holds it."""
        me = f"{socket.gethostname()} {os.getpid()}\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = self.holder()
                if held is None:  # written this instant by another process, or empty after a kill
                    if self.path.exists() and self.path.stat().st_size == 0 and _age(self.path) > 5:
                        self.path.unlink(missing_ok=True)
                    continue
                host, pid = held
                if host == socket.gethostname() and (pid == os.getpid() or not _pid_alive(pid)):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise ConfigError(
                    f"run_dir '{self.path.parent}' is in use by process {pid} on host {host} "
                    f"(lock file {self.path}; delete it only if that process is gone)"
                ) from None
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(me)
            except BaseException:  # e.g. a full disk: leave no empty lock behind
                self.path.unlink(missing_ok=True)
                raise
            self.held = True
            return
        raise ConfigError(f"run_dir '{self.path.parent}': cannot take the lock {self.path}; another process races")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _age(path: Path) -> float:
    import time

    return time.time() - path.stat().st_mtime


class StopRequest:
    """SIGTERM/SIGINT -> ``requested`` (the loop stops at the next generation boundary);
    a second signal exits ``128 + signal`` at once. Installed only in the main thread."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            print(f"evolopt.train: second signal {signal.Signals(signum).name}: stopping at once", file=sys.stderr)
            sys.stderr.flush()
            os._exit(128 + signum)  # every file is atomic or recovered on resume: nothing half-written
        self.signum = signum
        print(
            f"evolopt.train: {signal.Signals(signum).name} received: stopping after this generation "
            "(send it again to stop at once)",
            file=sys.stderr,
        )

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO}


def disk_error(exc: BaseException) -> OSError | None:
    """The OSError (disk full, read-only, quota, permission) behind ``exc``, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc
        text = str(exc)
        for code in DISK_ERRNOS:
            if os.strerror(code) in text:
                return OSError(code, os.strerror(code))
        exc = exc.__cause__ or exc.__context__
    return None
