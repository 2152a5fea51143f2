"""What the dashboard shows of a fill in flight (a read-only snapshot).

``FillManager.progress()`` fills in what a fill itself knows (digest, size, bytes
in the file, clients streaming it). Which upstream and repository asked for it
and when it started are not kept by the fill: the stats recorder notes them when
a request starts one (``stats.recorder``) and completes the snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FillProgress:
    digest: str
    size: int | None  # None until upstream announced it
    written: int  # bytes in the partial file
    followers: int  # clients streaming the fill now
    upstream: str | None = None
    repository: str | None = None
    started_at: float | None = None  # wall clock (time.time())


class FillClock:
    """When a fill reached each stage, for the line it logs when it ends.

    Seconds from the fill's start (monotonic): an operator (or the WAN benchmark)
    reads off where a slow fill's time went — waiting for upstream's answer, the
    transfer itself, or verifying and committing after the last byte.
    """

    __slots__ = ("_start", "answered", "committed", "first_byte", "last_byte", "verified")

    def __init__(self, now: float) -> None:
        self._start = now
        self.answered: float | None = None  # upstream's response headers
        self.first_byte: float | None = None
        self.last_byte: float | None = None
        self.verified: float | None = None  # the digest checked out: readers get the end
        self.committed: float | None = None  # fsynced and visible under blobs/

    def since_start(self, now: float) -> float:
        return now - self._start

    def text(self) -> str:
        stages = (
            ("answered", self.answered),
            ("first byte", self.first_byte),
            ("last byte", self.last_byte),
            ("verified", self.verified),
            ("committed", self.committed),
        )
        return ", ".join(f"{name} {at * 1000:.1f} ms" for name, at in stages if at is not None)
