"""Recently served manifests by digest, in memory (immutable, so always safe to keep)."""

from __future__ import annotations

from collections import OrderedDict


class ManifestMemo:
    """Recently served manifests by digest (immutable, so caching them is always safe)."""

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self._items: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._bytes = 0
        self._max = max_bytes

    def get(self, digest: str) -> tuple[bytes, str] | None:
        item = self._items.get(digest)
        if item is not None:
            self._items.move_to_end(digest)
        return item

    def put(self, digest: str, body: bytes, media_type: str) -> None:
        if digest in self._items or len(body) > self._max // 4:
            return
        self._items[digest] = (body, media_type)
        self._bytes += len(body)
        while self._bytes > self._max:
            _, (old, _) = self._items.popitem(last=False)
            self._bytes -= len(old)

    def drop(self, digest: str) -> None:
        item = self._items.pop(digest, None)
        if item is not None:
            self._bytes -= len(item[0])
