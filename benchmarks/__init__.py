"""The benchmark suite (``python -m benchmarks``): registry-cache against its peers, side by side.

Not part of the product: ``registry_cache`` never imports this package (a unit
test checks), and the image does not ship it.

One run on loopback starts a local upstream (docker-registry), CNCF distribution
in proxy mode over it, registry-cache over it, and nginx serving the same blob
file with sendfile, then measures warm blob GETs (with 1 MiB, 32 KiB and curl's
reads), cold blob GETs, a herd of concurrent cold GETs, manifest request rates,
whole-image pulls with real clients (skopeo, ctr), the cache's memory, ``--workers
2`` against 1, CLI start-up, and pulls over shaped WAN links in a private network
namespace; every figure is the median of several repetitions with min and max, and
every ratio is taken within the run.

Modules: ``servers`` (processes), ``content`` (layers, push), ``httpio`` (loopback
HTTP), ``readers`` (clients that GET a blob), ``native`` (C helpers built at run
time), ``pullers`` (skopeo, ctr), ``hermetic`` (a private /etc/hosts), ``load``
(wrk or built-in), ``measure`` (RSS, upstream bytes), ``lab`` (the servers of a
run), ``scenarios``, ``netns`` and ``wan`` (the shaped link and what runs behind
it), ``results``, ``report`` (targets, markdown, JSON), ``runner`` (one run),
``cli`` (``python -m benchmarks``).
"""

from .runner import FULL, QUICK, SuiteError, SuiteOptions, SuiteRun, run_suite
from .scenarios import SCENARIOS

__all__ = ["FULL", "QUICK", "SCENARIOS", "SuiteError", "SuiteOptions", "SuiteRun", "run_suite"]
