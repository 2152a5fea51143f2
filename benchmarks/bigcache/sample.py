"""What the probes request, as the data set's builder chose it (plain data, JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field

SAMPLE_SIZE = 2000  # of each kind
UPSTREAMS = ("registry-a.test", "registry-b.test", "registry-c.test")


@dataclass(frozen=True, slots=True)
class Ref:
    """What a probe asks for: a tag (``name`` a tag) or a blob (``name`` a digest)."""

    upstream: str
    repo: str
    name: str


@dataclass
class Sample:
    tags: list[Ref] = field(default_factory=list)
    layers: list[Ref] = field(default_factory=list)
    configs: list[Ref] = field(default_factory=list)

    def to_json(self) -> dict[str, list[list[str]]]:
        return {
            kind: [[r.upstream, r.repo, r.name] for r in refs]
            for kind, refs in (
                ("tags", self.tags),
                ("layers", self.layers),
                ("configs", self.configs),
            )
        }

    @classmethod
    def from_json(cls, doc: dict[str, list[list[str]]]) -> Sample:
        return cls(*([Ref(*r) for r in doc[kind]] for kind in ("tags", "layers", "configs")))
