"""A synthetic cache of any size, written exactly as the cache writes one.

Blob files go under ``DATA/blobs/sha256/xx/<hex>``, read-only (0444) as
``FileBlobStore.commit`` leaves them; their content is tiny (a few bytes, or the
real JSON of a manifest) and hashes to the file's name, so ``cache verify`` passes.
The index rows go in through the project's own ``Index.import_rows`` (SQLite in
the data directory, or PostgreSQL as one replica's local tier), with the sizes
a real cache would record (layers of megabytes to gigabytes).

The shape, deterministic for a seed: repositories spread over three upstreams
(60/25/15 %), each with 2-12 images; an image is an OCI image manifest (config,
one or two shared base layers, 1-6 layers of its own) or, for a fifth of them, an
OCI index of two platforms of which the second was never pulled half the time;
one image in twenty was pulled by digest only (no tag). As in a cache that has
lived a while: 2 % of the layers a manifest lists are gone (evicted), a few
objects are unreferenced (what ``cache gc`` removes) and a few verified files have
no row (what it adopts). Access times are spread over the last 60 days; a tag was
last checked and pulled when its manifest was last accessed.

``Sample`` holds what the probes request: tags, layers and configs, any of them
(for hits), and those accessed in the last 12 days (the newest fifth, which an
eviction pass to 90 % never takes: for the probe during a pass).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry_cache.index import base
from registry_cache.index.base import Index, LinkKey, ObjectRow, TagImport

from .sample import SAMPLE_SIZE, UPSTREAMS, Ref, Sample

WEIGHTS = (0.60, 0.25, 0.15)
DAY = 86_400.0
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
HOT = 12 * DAY  # samples are taken among objects accessed this recently
FLUSH_ROWS = 20_000  # rows per import_rows call


@dataclass
class Summary:
    objects: int = 0  # rows
    files: int = 0
    bytes: int = 0  # recorded sizes of the rows
    manifests: int = 0
    tags: int = 0
    links: int = 0
    repositories: int = 0
    missing_blobs: int = 0  # listed by a manifest, not stored
    unreferenced: int = 0
    unindexed_files: int = 0


@dataclass(frozen=True, slots=True)
class Stored:
    digest: str
    size: int  # as recorded in the index
    media_type: str | None
    content: bytes
    indexed: bool = True  # False: a verified file without a row


class Builder:
    """Writes files as it goes and hands the rows to the index in batches."""

    def __init__(
        self, data_dir: Path, index: Index, *, now: float, seed: int, refs: bool | None = None
    ) -> None:
        self.data_dir = data_dir
        self.index = index
        # What a stored manifest lists goes in too where the index keeps it (as the
        # cache records it when it stores the manifest); ``refs=False`` leaves it out,
        # as an index written by a release before that would have.
        supported = "refs" in inspect.signature(index.import_rows).parameters
        self.with_refs = supported if refs is None else refs and supported
        self._refs: dict[str, Any] = {}
        self.now = now
        self.rng = random.Random(seed)
        self.serial = 0
        self.summary = Summary()
        self.pick = random.Random(seed + 1)
        self.sample = Sample()  # any object: what the hit probes ask for
        self.hot = Sample()  # recently used: what an eviction pass leaves (its probe)
        self._seen = {"tags": 0, "layers": 0, "configs": 0}
        self._seen_hot = dict(self._seen)
        self._objects: list[ObjectRow] = []
        self._tags: list[TagImport] = []
        self._links: list[LinkKey] = []
        self._blobs = data_dir / "blobs" / "sha256"

    # ----------------------------------------------------------------- pieces

    def _when(self) -> tuple[float, float]:
        created = self.now - self.rng.uniform(0, 60 * DAY)
        return created, created + self.rng.uniform(0, self.now - created)

    def _content(self, kind: str) -> bytes:
        self.serial += 1
        return f"{kind} {self.serial}\n".encode()

    def _layer_size(self, median: float) -> int:
        return min(int(self.rng.lognormvariate(math.log(median), 1.3)), 4 << 30) + 1

    def blob(self, kind: str, size: int) -> Stored:
        content = self._content(kind)
        return Stored("sha256:" + hashlib.sha256(content).hexdigest(), size, None, content)

    def store(self, obj: Stored) -> float:
        """Write the file (and queue its row); the object's last access."""
        hex_ = obj.digest[7:]
        fd = os.open(
            f"{self._blobs}/{hex_[:2]}/{hex_}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444
        )
        try:
            os.write(fd, obj.content)
        finally:
            os.close(fd)
        self.summary.files += 1
        created, accessed = self._when()
        if obj.indexed:
            self._objects.append(ObjectRow(obj.digest, obj.size, obj.media_type, created, accessed))
            self.summary.objects += 1
            self.summary.bytes += obj.size
        else:
            self.summary.unindexed_files += 1
        return accessed

    def link(self, upstream: str, repo: str, digests: list[str]) -> None:
        self._links += [(upstream, repo, d) for d in digests]
        self.summary.links += len(digests)

    def tag(self, upstream: str, repo: str, tag: str, digest: str, pulled: float) -> None:
        # Checked when last pulled: the benchmark's tag TTL (30 days) keeps the sampled
        # ones fresh, so a probe never asks upstream.
        self._tags.append(TagImport(upstream, repo, tag, digest, pulled, pulled))
        self.summary.tags += 1

    def _offer(self, kind: str, ref: Ref, accessed: float) -> None:
        """Reservoir sampling among all objects (``sample``) and recently accessed ones
        (``hot``), with a generator of its own (the data set does not depend on it)."""
        for sample, seen, wanted in (
            (self.sample, self._seen, True),
            (self.hot, self._seen_hot, accessed >= self.now - HOT),
        ):
            if not wanted:
                continue
            seen[kind] += 1
            chosen: list[Ref] = getattr(sample, kind)
            if len(chosen) < SAMPLE_SIZE:
                chosen.append(ref)
            else:
                slot = self.pick.randrange(seen[kind])
                if slot < SAMPLE_SIZE:
                    chosen[slot] = ref

    async def flush(self, *, force: bool = False) -> None:
        if force or len(self._objects) + len(self._links) >= FLUSH_ROWS:
            objects, self._objects = self._objects, []
            tags, self._tags = self._tags, []
            links, self._links = self._links, []
            if self.with_refs:
                refs, self._refs = self._refs, {}
                await self.index.import_rows(objects, tags, links, refs=refs)
            else:
                await self.index.import_rows(objects, tags, links)

    def listed(self, manifest: Stored, blobs: list[str], children: list[str]) -> None:
        """Note what a stored manifest lists (for an index that keeps it)."""
        if self.with_refs:
            # Looked up here: an older release's index module has no such class.
            self._refs[manifest.digest] = base.ManifestRefs(tuple(blobs), tuple(children))

    # ----------------------------------------------------------------- images

    def image_manifest(
        self, upstream: str, repo: str, bases: list[Stored], *, stored: bool = True
    ) -> tuple[Stored, float]:
        """An image manifest with its config and layers (stored unless ``stored`` is
        False: a platform never pulled); the manifest and its last access."""
        config = self.blob("config", self.rng.randint(1_000, 15_000))
        layers = [*bases]
        layers += [
            self.blob("layer", self._layer_size(8 << 20)) for _ in range(self.rng.randint(1, 6))
        ]
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
            "layers": [
                {"mediaType": OCI_LAYER, "digest": b.digest, "size": b.size} for b in layers
            ],
        }
        content = json.dumps(body, separators=(",", ":")).encode()
        manifest = Stored(
            "sha256:" + hashlib.sha256(content).hexdigest(), len(content), OCI_MANIFEST, content
        )
        accessed = self.now - 60 * DAY
        if stored:
            pulled = self.store(manifest)
            self.summary.manifests += 1
            accessed = self.store(config)
            self._offer("configs", Ref(upstream, repo, config.digest), accessed)
            for layer in layers[len(bases) :]:
                if self.rng.random() < 0.02:
                    self.summary.missing_blobs += 1  # evicted since
                    continue
                accessed = self.store(layer)
                self._offer("layers", Ref(upstream, repo, layer.digest), accessed)
            self.link(upstream, repo, [manifest.digest, config.digest, *(b.digest for b in layers)])
            self.listed(manifest, [config.digest, *(b.digest for b in layers)], [])
            accessed = pulled
        return manifest, accessed

    def image_index(self, upstream: str, repo: str, bases: list[Stored]) -> tuple[Stored, float]:
        amd64, _ = self.image_manifest(upstream, repo, bases)
        arm64, _ = self.image_manifest(upstream, repo, bases, stored=self.rng.random() < 0.5)
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": child.digest,
                    "size": child.size,
                    "platform": {"architecture": arch, "os": "linux"},
                }
                for child, arch in ((amd64, "amd64"), (arm64, "arm64"))
            ],
        }
        content = json.dumps(body, separators=(",", ":")).encode()
        index = Stored(
            "sha256:" + hashlib.sha256(content).hexdigest(), len(content), OCI_INDEX, content
        )
        accessed = self.store(index)
        self.summary.manifests += 1
        self.link(upstream, repo, [index.digest, amd64.digest, arm64.digest])
        self.listed(index, [], [amd64.digest, arm64.digest])
        return index, accessed

    def repository(self, number: int, bases: list[Stored]) -> None:
        upstream = self.rng.choices(UPSTREAMS, WEIGHTS)[0]
        repo = f"team{number % 97}/app{number}"
        self.summary.repositories += 1
        count = self.rng.randint(2, 12)
        for position in range(count):
            # Popular base layers are shared by many images (stored once).
            shared = [bases[min(int(self.rng.paretovariate(1.2)) - 1, len(bases) - 1)]]
            if self.rng.random() < 0.3:
                shared.append(self.rng.choice(bases))
            if self.rng.random() < 0.2:
                root, accessed = self.image_index(upstream, repo, shared)
            else:
                root, accessed = self.image_manifest(upstream, repo, shared)
            if self.rng.random() < 0.05:
                continue  # pulled by digest only
            name = "latest" if position == count - 1 else f"1.{position}"
            # Pulling a tag is what touched its manifest last.
            self.tag(upstream, repo, name, root.digest, accessed)
            self._offer("tags", Ref(upstream, repo, name), accessed)
        if self.rng.random() < 0.1:
            self.store(self.blob("orphan", self._layer_size(1 << 20)))  # unreferenced
            self.summary.unreferenced += 1
        if self.rng.random() < 0.05:
            stray = self.blob("stray", self._layer_size(1 << 20))
            self.store(Stored(stray.digest, stray.size, None, stray.content, indexed=False))
            self.link(upstream, repo, [stray.digest])  # referenced: gc adopts it


def prepare(data_dir: Path) -> None:
    """The directories the cache creates at start (``Layout.create``) and the 256 fans."""
    for name in ("blobs", "fills", "quarantine", "tmp"):
        (data_dir / name).mkdir(parents=True, exist_ok=True)
    for fan in range(256):
        (data_dir / "blobs" / "sha256" / f"{fan:02x}").mkdir(parents=True, exist_ok=True)


async def build(
    data_dir: Path,
    index: Index,
    objects: int,
    *,
    now: float,
    seed: int = 1,
    refs: bool | None = None,
) -> tuple[Summary, Sample, Sample]:
    """Write a cache of about ``objects`` index rows into ``data_dir`` and ``index``
    (``refs``: see ``Builder``); its summary, and samples of any and of hot objects."""
    prepare(data_dir)
    builder = Builder(data_dir, index, now=now, seed=seed, refs=refs)
    bases = [
        builder.blob("base", builder._layer_size(30 << 20)) for _ in range(max(8, objects // 250))
    ]
    for layer in bases:
        builder.store(layer)
    number = 0
    while builder.summary.objects < objects:
        builder.repository(number, bases)
        number += 1
        await builder.flush()
    await builder.flush(force=True)
    return builder.summary, builder.sample, builder.hot
