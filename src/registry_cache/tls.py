"""Serving over TLS: the server's ``ssl.SSLContext`` from ``tls_cert``/``tls_key``.

With TLS the zero-copy path is gone (``loop.sendfile`` falls back to reading into
Python and writing through the SSL object), so hits cost CPU; terminating TLS in
front of the cache keeps sendfile. The context is built once in the parent, so a
bad certificate is a one-line error at start, and again in every worker.
"""

from __future__ import annotations

import ssl

from .config import Settings
from .errors import ConfigError


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """None when TLS is off; ``ConfigError`` (one line) when the files do not load."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    for key in ("tls_cert", "tls_key"):
        path = getattr(settings, key)
        try:
            path.open("rb").close()
        except OSError as exc:
            # load_cert_chain's errors do not say which file (their filename is None).
            raise ConfigError(
                f"{key} ({settings.origin(key)}): cannot read {path.absolute()}: "
                f"{exc.strerror or exc}"
            ) from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise ConfigError(
            f"tls_cert/tls_key: {settings.tls_cert.absolute()} and "
            f"{settings.tls_key.absolute()} are not a usable certificate and key ({reason})"
        ) from None
    return context
