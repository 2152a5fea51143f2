"""What a scenario produces: named figures, one value per repetition.

A figure's summary is its median with the min and max; ratios between
contenders are figures too, computed per repetition from measurements taken
back to back (so a noisy moment affects both sides of a ratio alike).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

GB = 1e9
MB = 1e6


@dataclass(slots=True)
class Figure:
    unit: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"unit": self.unit, "values": [round(v, 6) for v in self.values]}
        if self.values:
            out.update(median=round(self.median, 6), min=round(self.min, 6), max=round(self.max, 6))
        return out


@dataclass(slots=True)
class ScenarioResult:
    name: str
    title: str
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def add(self, key: str, unit: str, value: float) -> None:
        figure = self.figures.setdefault(key, Figure(unit))
        if figure.unit != unit:
            raise ValueError(f"{self.name}/{key}: unit {unit} after {figure.unit}")
        figure.values.append(value)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "figures": {key: figure.as_json() for key, figure in self.figures.items()},
            "notes": self.notes,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, name: str, doc: dict[str, Any]) -> ScenarioResult:
        """The inverse of ``as_json`` (a scenario measured in another process)."""
        result = cls(name, str(doc["title"]), notes=list(doc.get("notes", [])))
        result.error = doc.get("error")
        for key, figure in doc.get("figures", {}).items():
            result.figures[key] = Figure(str(figure["unit"]), [float(v) for v in figure["values"]])
        return result
