"""A real PostgreSQL 15 (Debian ``postgresql-15``) on 127.0.0.1, for the index.

Contract:
- ``PostgresServer(password=None).start()`` makes a short state dir
  ``/tmp/rc-pg-XXXXXXXX`` (``data/``, the unix socket in ``sock/``, ``postgres.log``),
  runs ``initdb`` once (superuser ``test``, UTF8, C locale, no sync) and then
  ``postgres`` itself as a child process (``listen_addresses=127.0.0.1``, a free
  port, ``fsync=off``) until ``pg_isready`` says it accepts connections, and
  creates the database ``test``. ``synchronous_commit`` stays on: a commit reaches
  the OS before it is acknowledged, so ``kill()`` (a PostgreSQL crash, not a
  machine crash) loses nothing committed, as in production.
- Who runs it: ``initdb`` and ``postgres`` refuse root. As root the state dir is
  given to the ``postgres`` user (``nobody`` where there is none) and both run as
  that user (``Popen(user=...)``, so the PID we hold is the postmaster's own). As
  any other user they run as that user: PostgreSQL needs no privilege, so the
  harness never calls sudo.
- ``password="..."``: TCP logins need that password (``scram-sha-256``); the unix
  socket stays ``trust`` for the harness's own admin statements, so the harness
  never sends the password anywhere. ``url``/``dsn`` never contain the password;
  ``url_with_password()`` does, for the one place a test hands it to the product.
  Without a password every login is trusted.
- ``url``: ``postgresql://test@127.0.0.1:PORT/test``; ``dsn``: the libpq
  keyword form; ``url_for(db)``/``dsn_for(db)`` for another database.
- ``create_database(name)`` / ``drop_database(name)``; ``database_handle(name)``
  creates one and returns a ``PostgresDatabase`` (``name``, ``url``, ``dsn``,
  ``server``); ``psql(sql)`` runs SQL over the unix socket and returns psql's
  unaligned output.
- ``stop()``: fast shutdown (SIGINT to the postmaster by PID: clients are cut off,
  no waiting for them), SIGKILL of its process group after ``grace``. ``kill()``:
  SIGKILL at once (a crash; the next start recovers from WAL). ``start()`` again
  reuses the same port and data. ``close()`` stops it and removes the state dir
  (leaving the ``with`` block does too).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import quote

from . import proc as procs
from .ports import LOOPBACK, free_port
from .service import LoopbackService

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "test"
DEFAULT_DATABASE = "test"
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def postgres_available() -> bool:
    """True when Debian's PostgreSQL 15 server binaries are installed."""
    return all((PG_BIN / name).is_file() for name in ("initdb", "postgres", "pg_isready", "psql"))


def server_account() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as: None means "as this process's own user"."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, but there is no 'postgres' or 'nobody' user")


@dataclass(frozen=True)
class PostgresDatabase:
    """One database on a ``PostgresServer`` (what ``pg_database`` hands a test)."""

    server: PostgresServer
    name: str

    @property
    def url(self) -> str:
        return self.server.url_for(self.name)

    @property
    def dsn(self) -> str:
        return self.server.dsn_for(self.name)

    def url_with_password(self) -> str:
        return self.server.url_with_password(self.name)


class PostgresServer(LoopbackService):
    """One PostgreSQL 15 postmaster; see the module docstring for the contract."""

    start_timeout = 30.0

    def __init__(self, *, password: str | None = None, database: str = DEFAULT_DATABASE) -> None:
        self.password = password
        self.database = database
        self.user = SUPERUSER
        self.dir: Path | None = None
        self.port = 0
        self._proc = None
        self._account = server_account()
        self.start_seconds: list[float] = []  # wall time of each start(), for reports
        self.stop_seconds: list[float] = []

    # -- paths -------------------------------------------------------------
    def _path(self, name: str) -> Path:
        if self.dir is None:
            raise RuntimeError("PostgreSQL was never started")
        return self.dir / name

    @property
    def data_dir(self) -> Path:
        return self._path("data")

    @property
    def socket_dir(self) -> Path:
        return self._path("sock")

    @property
    def log_path(self) -> Path:
        return self._path("postgres.log")

    # -- addresses ---------------------------------------------------------
    @property
    def url(self) -> str:  # a postgresql:// URL here, not http://
        return self.url_for(self.database)

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}@{LOOPBACK}:{self.port}/{database}"

    def dsn_for(self, database: str) -> str:
        return f"host={LOOPBACK} port={self.port} user={self.user} dbname={database}"

    def url_with_password(self, database: str | None = None) -> str:
        """The URL with the password in it (only for handing to the code under test)."""
        if self.password is None:
            return self.url_for(database or self.database)
        secret = quote(self.password, safe="")
        return (
            f"postgresql://{self.user}:{secret}@{LOOPBACK}:{self.port}/{database or self.database}"
        )

    # -- running the binaries as the server account ------------------------
    @property
    def _uid(self) -> int | None:
        return None if self._account is None else self._account.pw_uid

    @property
    def _gid(self) -> int | None:
        return None if self._account is None else self._account.pw_gid

    @property
    def _groups(self) -> list[int] | None:
        """Drop root's supplementary groups too (None: we are not switching user)."""
        return None if self._account is None else []

    def _env(self) -> dict[str, str]:
        # No PG* variable from the caller may redirect a harness command elsewhere.
        return procs.clean_env({"LC_ALL": "C", "TZ": "UTC"}, drop_prefixes=("PG",))

    def _initdb(self) -> None:
        assert self.dir is not None
        argv = [
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--auth-local=trust",
        ]
        pwfile = self.dir / "pwfile"
        if self.password is not None:
            pwfile.write_text(self.password + "\n")
            self._give(pwfile)
            argv += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        else:
            argv += ["--auth-host=trust"]
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env=self._env(),
                cwd=self.dir,
                timeout=60,
                check=False,
                user=self._uid,
                group=self._gid,
                extra_groups=self._groups,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stderr[-4000:]}")

    def _give(self, path: Path) -> None:
        """Make ``path`` the server account's (no-op when we are that account)."""
        if self._account is not None:
            os.chown(path, self._account.pw_uid, self._account.pw_gid)

    # -- lifecycle ---------------------------------------------------------
    def start(self, timeout: float | None = None) -> Self:
        """First call: initdb and a free port. Later calls: same data, same port."""
        if self.running:
            raise RuntimeError("PostgreSQL is already running")
        began = time.monotonic()
        timeout = self.start_timeout if timeout is None else timeout
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="rc-pg-", dir="/tmp"))
            self.dir.chmod(0o755)
            self._give(self.dir)
            self.socket_dir.mkdir()
            self._give(self.socket_dir)
            self._initdb()
            for attempt in range(3):
                self.port = free_port()
                try:
                    self._launch(timeout)
                    break
                except RuntimeError:
                    if attempt == 2 or "already in use" not in self.log_text():
                        raise
            self.psql(f'CREATE DATABASE "{self.database}"')
        else:
            self._launch(timeout)
        self.start_seconds.append(time.monotonic() - began)
        return self

    def _launch(self, timeout: float) -> None:
        argv = [
            str(PG_BIN / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
            "-c",
            f"listen_addresses={LOOPBACK}",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
            "-c",
            "log_min_messages=warning",
        ]
        with self.log_path.open("ab") as log:
            self._give(self.log_path)
            self._proc = procs.track(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
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
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_text()[-4000:]
                self._reap()
                raise RuntimeError(f"PostgreSQL did not come up on port {self.port}\n{tail}")
            time.sleep(0.05)

    def _accepting(self) -> bool:
        result = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(self.port), "-t", "1"],
            env=self._env(),
            check=False,
            timeout=10,
        )
        return result.returncode == 0

    def _reap(self) -> None:
        if self._proc is not None:
            procs.kill9(self._proc)
            self._proc = None

    def stop(self, grace: float = 10.0) -> None:
        """Fast shutdown by PID (SIGINT); SIGKILL of the group after ``grace`` s."""
        if self._proc is None:
            return
        began = time.monotonic()
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        procs.kill9(self._proc)  # also reaps; backends share the postmaster's group
        self._proc = None
        self.stop_seconds.append(time.monotonic() - began)

    def kill(self) -> None:
        """SIGKILL the postmaster's process group (a crash)."""
        self._reap()

    def restart(self, timeout: float | None = None) -> Self:
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop and remove the state dir; idempotent."""
        self.stop()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- SQL over the unix socket (trust: no password goes anywhere) --------
    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser; return psql's unaligned, tuples-only output."""
        result = subprocess.run(
            [
                str(PG_BIN / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            env=self._env() | {"PGCONNECT_TIMEOUT": "5"},
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        """Create database ``name`` (lower-case identifier); return its URL."""
        if not _NAME_RE.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` even while clients are connected (they are cut off)."""
        if not _NAME_RE.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def database_handle(self, name: str) -> PostgresDatabase:
        """Create database ``name`` and return a handle to it."""
        self.create_database(name)
        return PostgresDatabase(self, name)
