"""What the servers and daemons the harness runs as child processes have in common.

Contract:
- ``Service``: a subclass keeps its process in ``_proc`` while it runs (None when
  stopped) and names the file its output goes to in ``log_path``; it implements
  ``start()`` (returning itself) and ``stop()``. It gets ``pid``, ``running``,
  ``log_text()`` (everything logged so far, "" when there is no log yet) and the
  context manager (``start()`` on entry, ``stop()`` on exit).
- ``LoopbackService``: a ``Service`` listening on ``127.0.0.1:port``, with
  ``host_port`` and ``url``.
- ``HostsDaemon``: a daemon (containerd, dockerd) in a short state dir
  ``/tmp/<dir_prefix>XXXXXXXX`` (unix socket paths must stay under 108 bytes,
  which pytest's tmp paths do not), run under a private /etc/hosts
  (``netns.start_in_hosts_namespace``) with its output in ``DIR/<name>.log``.
  ``start()`` returns once ``ready()``, or stops it and raises ``RuntimeError``
  with the log's tail when it exits or ``start_timeout`` runs out; ``stop()``
  stops it by PID (SIGTERM, then SIGKILL after ``stop_grace``) and removes the
  state dir. Subclasses give ``argv()``, ``ready()`` and optionally ``prepare()``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import ClassVar, Self

from . import proc as procs
from .netns import start_in_hosts_namespace
from .ports import LOOPBACK


class Service:
    """One child process with a log file; see the module docstring."""

    _proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_text(self) -> str:
        """Everything the process logged so far (all runs)."""
        try:
            return self.log_path.read_text(errors="replace")
        except (FileNotFoundError, RuntimeError):  # RuntimeError: a daemon has no dir yet
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LoopbackService(Service):
    """A ``Service`` that listens on ``127.0.0.1:port``."""

    port: int

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``: what goes after ``docker://`` or in an image reference."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self.host_port}"


class HostsDaemon(Service):
    """A daemon in its own short state dir under a private /etc/hosts; see the module."""

    name: ClassVar[str]  # the binary, in messages and the log file's name
    dir_prefix: ClassVar[str]  # of the state dir under /tmp
    start_timeout: ClassVar[float]
    stop_grace: ClassVar[float]
    poll_interval: ClassVar[float]

    def __init__(self, hosts_file: Path) -> None:
        self.hosts_file = hosts_file
        self.dir: Path | None = None
        self._proc = None

    def _path(self, name: str) -> Path:
        if self.dir is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.dir / name

    @property
    def log_path(self) -> Path:
        return self._path(f"{self.name}.log")

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def prepare(self) -> None:
        """Fill the new state dir before the daemon starts (nothing by default)."""

    def start(self, timeout: float | None = None) -> Self:
        if self._proc is not None:
            raise RuntimeError(f"{self.name} already running")
        self.dir = Path(tempfile.mkdtemp(prefix=self.dir_prefix, dir="/tmp"))
        self.prepare()
        with self.log_path.open("ab") as log:
            self._proc = start_in_hosts_namespace(
                self.argv(),
                self.hosts_file,
                workdir=self.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        while not self.ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log_text = self.log_text()
                self.stop()
                raise RuntimeError(f"{self.name} did not come up\n{log_text[-4000:]}")
            time.sleep(self.poll_interval)
        return self

    def stop(self) -> None:
        """Stop the daemon (by PID) and remove its state dir; idempotent."""
        if self._proc is not None:
            procs.terminate(self._proc, grace=self.stop_grace)
            self._proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
