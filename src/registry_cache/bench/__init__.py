"""Benchmark and path-comparison tools, and the builtin OCI pull client they use.

Library API (also what ``warm`` builds on)::

    from registry_cache.bench import Credentials, pull
    result = await pull("library/alpine:3.19", "https://registry-1.docker.io",
                        platform="linux/arm64", output=Path("oci-dir"))

Modules: ``registry`` (HTTP, auth, verified reads), ``pullclient`` (pull),
``refs`` (image references, cache addressing), ``stats``, ``runner`` and
``report`` (the benchmark), ``clients`` (docker/skopeo/ctr), ``paths``
(iperf3, HTTP A/B, verdicts).
"""

from .pullclient import Descriptor, PullResult, pull, resolve
from .registry import (
    AuthFailed,
    Credentials,
    NotFound,
    PullError,
    RegistryClient,
    Unreachable,
    VerifyFailed,
)

__all__ = [
    "AuthFailed",
    "Credentials",
    "Descriptor",
    "NotFound",
    "PullError",
    "PullResult",
    "RegistryClient",
    "Unreachable",
    "VerifyFailed",
    "pull",
    "resolve",
]
