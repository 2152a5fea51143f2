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
