"""The proxy services one worker's web application calls, built at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from ..proxy.blobs import BlobService
from ..proxy.context import ProxyContext
from ..proxy.listing import ListingService
from ..proxy.manifests import ManifestService

if TYPE_CHECKING:
    from ..cluster.flight import ClusterFlight


@dataclass(frozen=True)
class Services:
    ctx: ProxyContext
    manifests: ManifestService
    blobs: BlobService
    listing: ListingService

    @classmethod
    def build(cls, ctx: ProxyContext, flight: ClusterFlight | None = None) -> Services:
        manifests = ManifestService(ctx, flight)
        return cls(ctx, manifests, BlobService(ctx), ListingService(ctx, manifests))


SERVICES_KEY = web.AppKey("services", Services)
