"""One engine OS process: spawn, exit watching, process-group signals, and its output.

Why not ``trio.lowlevel.open_process``: it forks from a worker thread
(``trio.to_thread.run_sync(subprocess.Popen, ...)``), and Linux delivers
``PR_SET_PDEATHSIG`` when the *thread* that forked the child exits, not the process. Trio's
thread cache retires idle workers after 10 seconds, so an engine started that way is
SIGKILLed ten seconds later (checked on Linux 6.x with trio 0.35). We therefore fork from
the thread running trio: it lives exactly as long as the gateway. The fork blocks the event
loop for a few milliseconds, once per engine start.

Exit is watched without reaping (pidfd + ``waitid(WNOWAIT)``): while the dead leader is a
zombie its pid, which is also the process group id, cannot be reused, so the final SIGKILL to
the group cannot hit an unrelated process group.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
from typing import IO, TYPE_CHECKING, Final

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

# prctl(2) option: signal delivered to this process when its parent (thread) dies.
_PR_SET_PDEATHSIG: Final = 1
# Polling fallback where pidfd_open is unavailable (old kernels, seccomp sandboxes, macOS).
_EXIT_POLL_INTERVAL_S: Final = 0.05
# A single output line longer than this is cut: an engine printing a progress bar without
# newlines must not grow the ring buffer without bound.
_MAX_LINE_CHARS: Final = 2000
# Ring-buffer lines start with this when the gateway, not the engine, wrote them.
GATEWAY_MARK: Final = "routecodex: "


def _load_prctl() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved once in the parent: the child must do as little as possible between fork and exec.
_PRCTL: Final = _load_prctl()


def free_port() -> int:
    """A loopback port free right now (bind to 0, read it, close).

    Another process may take it before the engine binds it; the engine then fails to start,
    which the manager reports like any other failed start.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _child_setup(parent_pid: int) -> None:
    """Runs in the child between fork and exec (after setsid): die with the gateway."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # type: ignore[operator]
        # The gateway may have died between fork and prctl; then nobody will signal us.
        if os.getppid() != parent_pid:
            os._exit(1)


@attrs.define(eq=False)
class EngineLog:
    """The engine's output: appended to its log file and kept as the last ``max_lines`` lines."""

    path: Path | None
    max_lines: int
    lines: collections.deque[str] = attrs.field(init=False)
    _partial: bytes = attrs.field(init=False, default=b"")
    _file: IO[bytes] | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.lines = collections.deque(maxlen=self.max_lines)

    def open(self) -> str | None:
        """Open the log file for appending; returns a problem description instead of raising."""
        if self.path is None or self._file is not None:
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
        except OSError as exc:
            self._file = None
            return f"cannot write {self.path}: {exc.strerror or exc}"
        return None

    def close(self) -> None:
        self._flush_partial()
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def mark(self, text: str) -> None:
        """A line from the gateway itself (start, exit status), so the file reads as a story."""
        self._flush_partial()
        self._add_line(GATEWAY_MARK + text)
        self._write((GATEWAY_MARK + text + "\n").encode())

    def feed(self, chunk: bytes) -> None:
        self._write(chunk)
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        for raw in complete:
            self._add_line(raw.decode("utf-8", "replace").rstrip("\r"))
        if len(self._partial) > _MAX_LINE_CHARS * 4:
            self._flush_partial()

    def _flush_partial(self) -> None:
        if self._partial:
            self._add_line(self._partial.decode("utf-8", "replace").rstrip("\r"))
            self._partial = b""

    def _add_line(self, line: str) -> None:
        if len(line) > _MAX_LINE_CHARS:
            line = line[:_MAX_LINE_CHARS] + "..."
        self.lines.append(line)

    def _write(self, data: bytes) -> None:
        # Local file appends of engine chatter: small and fast enough to do on the loop.
        if self._file is None:
            return
        try:
            self._file.write(data)
            self._file.flush()
        except OSError:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


@attrs.define(eq=False)
class EngineProcess:
    """A spawned engine: leader of its own session and process group.

    Resource handling: ``output`` (the read end of the merged stdout/stderr pipe) belongs to
    whoever pumps it; ``close()`` releases the pidfd. ``reap()`` must be called once the
    process has exited, after the last ``signal_group``.
    """

    popen: subprocess.Popen[bytes]
    output: trio.lowlevel.FdStream
    _pidfd: int | None
    exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @classmethod
    def spawn(cls, argv: Sequence[str], env: Mapping[str, str]) -> EngineProcess:
        """Start ``argv`` in a new session with stdout+stderr on one pipe.

        Raises:
            OSError: the program cannot be executed (not found, not executable).
        """
        read_fd, write_fd = os.pipe()
        try:
            # Blocking fork+exec on purpose, from the trio thread: see the module docstring.
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                env=dict(env),
                start_new_session=True,
                close_fds=True,
                preexec_fn=functools.partial(_child_setup, os.getpid()) if _PRCTL is not None else None,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(popen.pid)
            except OSError:
                pidfd = None
        return cls(popen=popen, output=trio.lowlevel.FdStream(read_fd), pidfd=pidfd)

    def _exited_nowait(self) -> bool:
        """Whether the leader exited, without reaping it; records ``exit_code``."""
        if self.exit_code is not None:
            return True
        if hasattr(os, "waitid"):
            try:
                info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = None
                code = self.popen.poll()
                if code is None:
                    return False
                self.exit_code = code
                return True
            if info is None:
                return False
            killed = info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
            self.exit_code = -info.si_status if killed else info.si_status
            return True
        code = self.popen.poll()  # reaps: only where waitid does not exist
        if code is None:
            return False
        self.exit_code = code
        return True

    async def wait_exited(self) -> int:
        """Return the exit code once the leader exits; does not reap it.

        Cancellation: safe; nothing is consumed.
        """
        while not self._exited_nowait():
            if self._pidfd is not None:
                await trio.lowlevel.wait_readable(self._pidfd)
            else:
                await trio.sleep(_EXIT_POLL_INTERVAL_S)
        assert self.exit_code is not None
        return self.exit_code

    def signal_group(self, sig: signal.Signals) -> None:
        """Signal every process of the engine's group (the engine and anything it spawned)."""
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def reap(self) -> None:
        """Collect the exited leader (frees its pid)."""
        with contextlib.suppress(ChildProcessError, subprocess.TimeoutExpired):
            self.popen.wait(timeout=0)

    def close(self) -> None:
        if self._pidfd is not None:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"
