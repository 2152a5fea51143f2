"""Start and stop child processes by PID.

Contract: ``spawn`` starts a process in its own session (so a signal to its
process group reaches its children too) with stdout and stderr going to files;
``terminate`` sends SIGTERM, waits ``grace`` seconds, then SIGKILLs the group, and
always reaps the child. Neither ever signals a process it did not start. As a last
resort (a fixture that never ran its teardown), an ``atexit`` hook SIGKILLs every
process ``spawn`` (or ``track``) started that is still running when Python exits;
``stop_on_sigterm`` makes a SIGTERM to the test run get there too.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
_live: list[subprocess.Popen[bytes]] = []


def track(proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Remember ``proc`` for the exit-time cleanup; returns it."""
    _live[:] = [p for p in _live if p.poll() is None]
    _live.append(proc)
    return proc


def alive(pid: int) -> bool:
    """Whether a process with this PID exists (one a test started, asked by PID)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_on_sigterm() -> None:
    """Have SIGTERM unwind this process as Ctrl-C does (call from the main thread, e.g.
    in ``pytest_configure``): pytest then runs every fixture's teardown and this
    module's exit hook, so the servers started are stopped by PID. By default SIGTERM
    ends the interpreter at once and a server in its own session kept running."""

    def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the unwinding is not cut short
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)


@atexit.register
def _kill_leftovers() -> None:
    for proc in _live:
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                kill9(proc)


def clean_env(
    extra: Mapping[str, str] | None = None,
    drop_prefixes: Sequence[str] = (),
) -> dict[str, str]:
    """``os.environ`` without proxy variables or names starting with ``drop_prefixes``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key.lower() not in PROXY_VARS and not key.startswith(tuple(drop_prefixes))
    }
    if extra:
        env.update(extra)
    return env


def spawn(
    cmd: Sequence[str],
    *,
    stdout: Path,
    stderr: Path | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdout (and stderr, or stderr merged into stdout) appended to files."""
    out = stdout.open("ab")
    err = stderr.open("ab") if stderr is not None else None
    try:
        return track(
            subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err if err is not None else subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        )
    finally:
        out.close()
        if err is not None:
            err.close()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # Only called while proc is unreaped, so its pid (= its pgid) cannot be reused.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # The child leads its own session (spawn), so its pgid is its pid.
        os.killpg(proc.pid, sig)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)


def terminate(proc: subprocess.Popen[bytes], grace: float = 5.0) -> int:
    """SIGTERM, then SIGKILL after ``grace`` s; reap and return the exit code."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)
    return int(proc.returncode)


def kill9(proc: subprocess.Popen[bytes]) -> int:
    """SIGKILL the process group at once; reap and return the exit code."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGKILL)
    proc.wait(timeout=10)
    return int(proc.returncode)
