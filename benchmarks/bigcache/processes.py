"""The processes the benchmark runs, measured: CLI commands and ``serve``.

A CLI command runs to completion (or its time limit, then SIGKILL by PID) and is
reaped with ``wait4``, whose rusage gives its CPU and peak RSS exactly. ``Serve``
is the cache under test in its own process group: start-up is the time from
spawn to the first ``/healthz`` 200; RSS and CPU come from ``/proc/PID``; it is
stopped by PID (SIGTERM, SIGKILL of its group after the grace).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DROP_ENV = ("REGISTRY_", "DOCKERHUB_", "GHCR_", "QUAY_", "PG")
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def product_env(src: Path) -> dict[str, str]:
    """This environment without registry settings or proxies, importing ``src``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in PROXY_VARS and not k.startswith(DROP_ENV)
    }
    env["PYTHONPATH"] = str(src)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass(frozen=True, slots=True)
class Measured:
    command: str
    wall: float
    cpu: float  # user + system seconds
    peak_rss: int  # bytes
    returncode: int | None  # None: killed at its time limit
    stdout_bytes: int
    stderr_tail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    stdout: Path,
    timeout: float,
    label: str,
) -> Measured:
    stderr_path = stdout.with_suffix(".stderr")
    with open(stdout, "wb") as out, open(stderr_path, "wb") as err:
        began = time.monotonic()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=dict(env), cwd=cwd)
        killed = False
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() - began > timeout:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed = True
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.02)
        except BaseException:  # stopped by a signal (KeyboardInterrupt): the command too
            stop_child(proc)
            raise
        wall = time.monotonic() - began
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: keep Popen quiet
    tail = stderr_path.read_text(errors="replace")[-2000:]
    return Measured(
        label,
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss * 1024,
        None if killed else proc.returncode,
        stdout.stat().st_size,
        tail,
    )


def stop_child(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a child by PID and reap it (nothing if it already exited)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    found: dict[str, int] = {}
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
    return found


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a live process so far."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Serve:
    """``python -m registry_cache serve --config FILE`` on 127.0.0.1:PORT."""

    def __init__(self, config: Path, port: int, *, env: Mapping[str, str], log: Path) -> None:
        self.config = config
        self.port = port
        self.env = dict(env)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned = 0.0
        self.ready_after = 0.0

    def start(self, *, extra: Sequence[str] = (), timeout: float = 120.0) -> float:
        """Spawn and wait for ``/healthz``; the start-up time in seconds."""
        argv = [sys.executable, "-m", "registry_cache", "serve", "--config", str(self.config)]
        with open(self.log, "ab") as log:
            self.spawned = time.monotonic()
            self.proc = subprocess.Popen(
                [*argv, *extra],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.config.parent,
                start_new_session=True,
            )
        while time.monotonic() - self.spawned < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}: {self.tail()}")
            if self._healthy():
                self.ready_after = time.monotonic() - self.spawned
                return self.ready_after
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"serve did not answer /healthz in {timeout:.0f} s: {self.tail()}")

    def _healthy(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> dict[str, int]:
        return proc_status(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def log_lines(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if regex.search(line)]

    def terminate(self, wait: float) -> float | None:
        """SIGTERM by PID; seconds until it exited, None if it outlived ``wait`` (then
        its group is SIGKILLed)."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        return time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL its process group while its leader (our child) is still unreaped."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
