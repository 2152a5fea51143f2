"""PostgreSQL 15 (Debian ``postgresql-15``) on 127.0.0.1 for the cluster scenario's index.

The same recipe as the test harness (``tests/harness/postgres.py``), kept here
because the suite must not depend on the tests: a short state directory
``/tmp/rc-bench-pg-PID-XXXXXXXX`` (``data/``, the unix socket in ``sock/``,
``postgres.log``), ``initdb`` once (superuser ``bench``, trusted logins, no sync),
then ``postgres`` as a child process listening on 127.0.0.1 and a port of its own
(``fsync=off``: nothing here needs to survive a machine crash). ``initdb`` and
``postgres`` refuse root: as root the state directory is given to the
``postgres`` user (``nobody`` where there is none) and both run as that user
(``Popen(user=...)``, so the PID held is the postmaster's own). ``stop()`` is a
fast shutdown (SIGINT to that PID), then SIGKILL of its process group; ``close()``
also removes the state directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from .servers import LOOPBACK, StartError, clean_env, free_port, track

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "bench"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def state_prefix(pid: int) -> str:
    """How the state directories of the suite run with PID ``pid`` begin (under /tmp)."""
    return f"rc-bench-pg-{pid}-"


def postgres_missing() -> str | None:
    """Why PostgreSQL 15 cannot run here, or None."""
    needed = ("initdb", "postgres", "pg_isready", "psql")
    if not all((PG_BIN / name).is_file() for name in needed):
        return f"PostgreSQL 15 is not installed ({PG_BIN}: apt-get install postgresql-15)"
    return None


def _account() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as; None: this process's own user (not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise StartError("running as root, but there is no 'postgres' or 'nobody' user")


class Postgres:
    def __init__(self) -> None:
        self.account = _account()
        self.dir: Path | None = None
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        """What ``--index`` takes (no password: logins are trusted)."""
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{self.port}/{database}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("PostgreSQL is not running")
        return self._proc.pid

    def _path(self, name: str) -> Path:
        if self.dir is None:
            raise RuntimeError("PostgreSQL was never started")
        return self.dir / name

    @property
    def _uid(self) -> int | None:
        return None if self.account is None else self.account.pw_uid

    @property
    def _gid(self) -> int | None:
        return None if self.account is None else self.account.pw_gid

    @property
    def _groups(self) -> list[int] | None:
        """Root's supplementary groups are dropped too (None: no change of user)."""
        return None if self.account is None else []

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in clean_env().items() if not k.startswith("PG")}
        return env | {"LC_ALL": "C", "TZ": "UTC"}

    def _give(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def start(self, timeout: float = 60.0) -> Self:
        # Short (the socket's path has a limit), and named for this process (what started it).
        self.dir = Path(tempfile.mkdtemp(prefix=state_prefix(os.getpid()), dir="/tmp"))
        self.dir.chmod(0o755)
        self._give(self.dir)
        self._path("sock").mkdir()
        self._give(self._path("sock"))
        argv = [str(PG_BIN / "initdb"), "-D", str(self._path("data")), "-U", SUPERUSER]
        argv += ["-E", "UTF8", "--locale=C", "--no-sync", "--auth=trust"]
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=self._env(),
            cwd=self.dir,
            timeout=120,
            check=False,
            user=self._uid,
            group=self._gid,
            extra_groups=self._groups,
        )
        if done.returncode != 0:
            raise StartError(f"initdb failed ({done.returncode}): {done.stderr[-2000:]}")
        for attempt in range(3):
            self.port = free_port()
            try:
                self._launch(timeout)
                return self
            except StartError:
                if attempt == 2 or "already in use" not in self.log_tail():
                    raise
        raise AssertionError("unreachable")

    def _launch(self, timeout: float) -> None:
        argv = [str(PG_BIN / "postgres"), "-D", str(self._path("data")), "-p", str(self.port)]
        argv += ["-k", str(self._path("sock")), "-c", f"listen_addresses={LOOPBACK}"]
        for setting in ("fsync=off", "full_page_writes=off", "max_connections=200"):
            argv += ["-c", setting]
        log = self._path("postgres.log")
        with log.open("ab") as out:
            self._give(log)
            self._proc = track(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.dir,
                    env=self._env(),
                    start_new_session=True,
                    user=self._uid,
                    group=self._gid,
                    extra_groups=self._groups,
                )
            )
        deadline = time.monotonic() + timeout
        while not self._accepting():
            assert self._proc is not None
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise StartError(f"PostgreSQL did not come up on port {self.port}:\n"
                                 f"{self.log_tail()}")  # fmt: skip
            time.sleep(0.05)

    def _accepting(self) -> bool:
        argv = [str(PG_BIN / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(self.port), "-t", "1"]
        return subprocess.run(argv, env=self._env(), check=False, timeout=10).returncode == 0

    def psql(self, sql: str, database: str = "postgres", *, timeout: float = 60.0) -> str:
        """``sql`` as the superuser over the unix socket; psql's unaligned tuples."""
        argv = [str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", str(self._path("sock")), "-p", str(self.port), "-U", SUPERUSER]
        argv += ["-d", database, "-c", sql]
        done = subprocess.run(
            argv, capture_output=True, text=True, env=self._env(), check=False, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql: {done.stderr.strip()[-500:]}")
        return done.stdout.strip()

    def create_database(self, name: str) -> str:
        """A new, empty database ``name``; its ``--index`` URL."""
        if not _NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self._path("postgres.log").read_text(errors="replace")
        except (OSError, RuntimeError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)  # fast shutdown: clients are cut off
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: the backends too
            proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
