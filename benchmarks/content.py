"""What the suite pulls: big layers and a multi-layer image, pushed to the upstream.

Layers are real gzip'd tars (one file of pseudo-random bytes) so any client can
unpack them, made fast: the bytes come from an 8 MiB ``os.urandom`` pool with a
distinct 16-byte stamp per MiB (no two layers, and no two MiB, are alike), and
gzip runs at level 0 (stored blocks: valid gzip, ~1 GB/s; random data would not
compress anyway). A 1 GiB layer takes a few seconds to write and about a second
to push: the two-step upload (``POST /v2/<repo>/blobs/uploads/``, then ``PUT
<Location>&digest=``) streams the file with ``sendfile``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urljoin

from . import httpio

REPO = "library/bench"
IMAGE_TAG = "v1"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
MANIFEST_ACCEPT = ", ".join(
    (
        MANIFEST_TYPE,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
MIB = 1 << 20
POOL_SIZE = 8 * MIB
TAR_BLOCK = 512
TAR_RECORD = 20 * TAR_BLOCK


class PushError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Blob:
    path: Path
    digest: str
    size: int
    media_type: str
    diff_id: str | None = None  # sha256 of the uncompressed tar (layers)

    @property
    def hex(self) -> str:
        return self.digest.partition(":")[2]

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True, slots=True)
class Image:
    tag: str
    digest: str  # of the manifest
    manifest: bytes
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)


@dataclass(frozen=True, slots=True)
class Content:
    repo: str
    big: Blob  # warm and cold blob GETs
    herd: Blob  # the herd's blob
    image: Image


def write_layer(directory: Path, stamp: str, size: int) -> Blob:
    """A gzip'd tar holding ``data/random.bin`` of ``size`` bytes, written to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    pool = os.urandom(POOL_SIZE)
    packer = zlib.compressobj(0, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    tar_hash, gz_hash = hashlib.sha256(), hashlib.sha256()
    tmp = directory / f".{stamp.replace('/', '-')}.partial"
    written = 0
    with tmp.open("wb") as out:

        def put(data: bytes) -> None:
            nonlocal written
            tar_hash.update(data)
            packed = packer.compress(data)
            if packed:
                gz_hash.update(packed)
                out.write(packed)
                written += len(packed)

        info = tarfile.TarInfo("data/random.bin")
        info.size, info.mode, info.mtime = size, 0o644, 1704067200
        header = info.tobuf(tarfile.PAX_FORMAT)
        put(header)
        left, index = size, 0
        label = hashlib.sha256(stamp.encode()).digest()[:8]
        while left > 0:
            count = min(MIB, left)
            offset = (index * 4099 * 64) % (POOL_SIZE - MIB)
            block = label + index.to_bytes(8, "big") + pool[offset : offset + MIB - 16]
            put(block[:count])
            left -= count
            index += 1
        tar_size = len(header) + size
        padding = -size % TAR_BLOCK + 2 * TAR_BLOCK  # pad the file, then two end blocks
        padding += -(tar_size + padding) % TAR_RECORD
        put(bytes(padding))
        tail = packer.flush()
        gz_hash.update(tail)
        out.write(tail)
        written += len(tail)
    digest = "sha256:" + gz_hash.hexdigest()
    path = directory / f"{gz_hash.hexdigest()}.tar.gz"
    tmp.replace(path)
    return Blob(path, digest, written, LAYER_TYPE, diff_id="sha256:" + tar_hash.hexdigest())


def write_json(directory: Path, doc: object, media_type: str) -> Blob:
    body = json.dumps(doc, indent=3).encode()
    digest = hashlib.sha256(body).hexdigest()
    path = directory / f"{digest}.json"
    path.write_bytes(body)
    return Blob(path, f"sha256:{digest}", len(body), media_type)


def build_image(directory: Path, stamp: str, layer_sizes: Sequence[int]) -> Image:
    layers = tuple(
        write_layer(directory, f"{stamp}/{i}", size) for i, size in enumerate(layer_sizes)
    )
    config = write_json(
        directory,
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        },
        CONFIG_TYPE,
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": config.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
        },
        indent=3,
    ).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    return Image(IMAGE_TAG, digest, manifest, config, layers)


def push_blob(registry: str, repo: str, blob: Blob) -> None:
    started = httpio.request(
        "POST", f"{registry}/v2/{repo}/blobs/uploads/", {"Content-Length": "0"}
    )
    location = started.headers.get("location")
    if started.status != 202 or not location:
        raise PushError(f"starting the upload of {blob.digest}: HTTP {started.status}")
    target = urljoin(registry + "/", location)
    target += ("&" if "?" in target else "?") + urlencode({"digest": blob.digest})
    done = httpio.upload("PUT", target, blob.path)
    if done.status != 201:
        raise PushError(f"uploading {blob.digest}: HTTP {done.status} {done.body[:200]!r}")


def push_manifest(registry: str, repo: str, reference: str, body: bytes, media_type: str) -> None:
    reply = httpio.request(
        "PUT", f"{registry}/v2/{repo}/manifests/{reference}", {"Content-Type": media_type}, body
    )
    if reply.status != 201:
        raise PushError(f"putting manifest {repo}:{reference}: HTTP {reply.status}")


def prepare(
    directory: Path, registry: str, big: int, herd: int, image_layers: Sequence[int]
) -> Content:
    """Write every blob to ``directory`` and push it all to ``registry`` under REPO."""
    big_blob = write_layer(directory, "big", big)
    herd_blob = write_layer(directory, "herd", herd)
    image = build_image(directory, "image", image_layers)
    for blob in (big_blob, herd_blob, image.config, *image.layers):
        push_blob(registry, REPO, blob)
    push_manifest(registry, REPO, image.tag, image.manifest, MANIFEST_TYPE)
    return Content(REPO, big_blob, herd_blob, image)
