"""A self-signed certificate for 127.0.0.1, and trusting it in the suite's clients.

Made with the ``openssl`` command (Debian has it everywhere), so the suite needs
no Python crypto package. ``trust(cert)`` makes every https request of the suite
(``httpio``, the start-up probes) verify against that certificate.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

_trusted: dict[str, ssl.SSLContext] = {}  # at most one entry: the suite's certificate


@dataclass(frozen=True, slots=True)
class Certificate:
    cert: Path
    key: Path


def self_signed(directory: Path) -> Certificate | None:
    """A P-256 certificate for 127.0.0.1, valid two days; None without ``openssl``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    made = Certificate(directory / "cache.crt", directory / "cache.key")
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(made.key), "-out", str(made.cert),
        ],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return made


def trust(cert: Path) -> None:
    _trusted["suite"] = ssl.create_default_context(cafile=str(cert))


def client_context() -> ssl.SSLContext | None:
    return _trusted.get("suite")
