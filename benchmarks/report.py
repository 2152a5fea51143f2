"""Targets, and the suite's results as a markdown table and as JSON.

A target is judged on the median of its figure over the repetitions, except
exact targets (``every_rep``), which every repetition must meet. A retired target
(``retired``: why) is still measured and shown beside its old goal, but no longer
judged: its row says "retired", never FAIL.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .calibration import describe
from .cluster import BUCKET_HIT, BUCKETED, CLUSTER, COLD, LOCAL, PEER, REPLICAS
from .dashboard import DASHBOARD_CPU, INSTRUCTIONS
from .pullers import CTR_FETCH, CTR_PULL, SKOPEO_OCI
from .readers import CURL, GO_READS
from .results import Figure, ScenarioResult
from .scenarios import CACHE, PROXY, PSS, RSS

RSS_LIMIT_MB = 150.0
RSS_GROWTH_LIMIT = 1.10  # "independent of blob size": 1 GiB vs 256 MiB cold GET
BLOB_SIZE_RATIO = "big blob vs herd blob"
# "The hot path pays nothing measurable" (issue 12): less than the noise between two
# identical caches here (the dashboard scenario measures that too).
DASHBOARD_CPU_LIMIT = 1.02
RETIRED_COLD = "retired: one core hashes at ~1.9 GB/s here; reported with its CPU per GiB"

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "<": operator.lt,
    "==": lambda a, b: abs(a - b) < 1e-9,
}
_SHOWN = {">=": "≥", "<=": "≤", "<": "<", "==": "="}


@dataclass(frozen=True, slots=True)
class Target:
    scenario: str
    figure: str
    op: str
    value: float
    label: str
    every_rep: bool = False
    retired: str = ""  # why it is no longer a goal (shown in the report); empty: judged

    def text(self, unit: str) -> str:
        shown = f"{_num(self.value)}x" if unit == "x" else f"{_num(self.value)} {unit}".strip()
        return f"{_SHOWN[self.op]} {shown}"

    def judge(self, figure: Figure) -> bool:
        check = _OPS[self.op]
        if self.every_rep:
            return all(check(v, self.value) for v in figure.values)
        return check(figure.median, self.value)


TARGETS: tuple[Target, ...] = (
    Target("warm-blob", "vs nginx", ">=", 0.9, "warm blob GET vs nginx sendfile"),
    Target("warm-blob", f"vs {PROXY}", ">=", 1.0, "warm blob GET vs distribution proxy"),
    Target("warm-blob", f"vs nginx, {GO_READS}", ">=", 0.9, f"warm blob GET vs nginx, {GO_READS}"),
    Target(
        "warm-blob",
        f"vs {PROXY}, {GO_READS}",
        ">=",
        1.1,
        f"warm blob GET vs distribution proxy, {GO_READS}",
    ),
    Target("warm-blob", f"vs nginx, {CURL}", ">=", 0.9, "warm blob GET vs nginx, curl"),
    Target(
        "warm-blob", f"vs {PROXY}, {CURL}", ">=", 1.1, "warm blob GET vs distribution proxy, curl"
    ),
    *(
        Target(
            "image-pull",
            f"speed-up vs {PROXY}, {client}",
            ">=",
            1.0,
            f"warm image pull vs distribution proxy, {client}",
        )
        for client in (SKOPEO_OCI, CTR_FETCH, CTR_PULL)
    ),
    Target("cli-startup", "registry-cache --help", "<", 0.3, "`registry-cache --help` start-up"),
    Target(
        "cli-startup", "registry-cache registries", "<", 0.3, "`registry-cache registries` start-up"
    ),
    *(
        target
        for wan in ("wan-far", "wan-near")
        for target in (
            Target(
                wan,
                f"{CACHE} cold pull vs direct, every pull",
                "<=",
                1.05,
                f"{wan}: cold pull vs direct",
            ),
            Target(
                wan,
                f"rollout: {CACHE} cold vs warm",
                "<=",
                1.15,
                f"{wan}: rollout of 8, cold vs warm",
            ),
            Target(
                wan,
                f"rollout: {CACHE} upstream bytes",
                "==",
                1.0,
                f"{wan}: rollout of 8, upstream bytes",
                True,
            ),
        )
    ),
    # Retired by issue 14: beyond this 2-core machine (SHA-256 at ~1.9 GB/s on one core;
    # nginx alone needs 3.9x one GET's time for the herd's bytes). Still reported.
    Target(
        "cold-blob",
        f"vs {PROXY}",
        ">=",
        1.2,
        "cold blob GET vs distribution proxy",
        retired=RETIRED_COLD,
    ),
    Target(
        "cold-blob",
        "vs upstream",
        ">=",
        0.6,
        "cold blob GET vs direct upstream",
        retired=RETIRED_COLD,
    ),
    Target("herd", f"{CACHE} upstream bytes", "==", 1.0, "herd: upstream bytes", True),
    Target(
        "herd",
        f"{CACHE} wall vs single",
        "<=",
        1.5,
        "herd: wall vs one cold GET",
        retired="retired: nginx alone needs ~3.9x for the herd's bytes here",
    ),
    Target("manifest-tag", f"vs {PROXY}", ">=", 10.0, "tag manifest vs distribution proxy"),
    Target("manifest-tag", f"{CACHE} p99", "<", 20.0, "tag manifest p99"),
    Target("manifest-digest", f"vs {PROXY}", ">=", 2.0, "digest manifest vs distribution proxy"),
    Target("workers", "2 vs 1 workers", ">=", 1.6, "--workers 2 vs 1 (tag manifests)"),
    Target(
        "memory", BLOB_SIZE_RATIO, "<=", RSS_GROWTH_LIMIT, "peak RSS, big vs herd blob cold GET"
    ),
    Target(
        "cluster",
        f"{CLUSTER} upstream bytes",
        "==",
        1.0,
        f"cluster herd over {REPLICAS} replicas: upstream bytes",
        True,
    ),
    Target("cluster", f"{CLUSTER} failed GETs", "==", 0.0, "cluster herd: failed GETs", True),
    Target(
        "cluster",
        f"{CLUSTER} upstream bytes, {COLD} and every hit",
        "==",
        1.0,
        f"cluster: {COLD}, {PEER} and {LOCAL}, upstream bytes",
        True,
    ),
    Target(
        "cluster",
        f"{BUCKETED} upstream bytes, {COLD} and every hit",
        "==",
        1.0,
        f"cluster with a bucket: {COLD}, {BUCKET_HIT} and {LOCAL}, upstream bytes",
        True,
    ),
    Target(
        "dashboard",
        DASHBOARD_CPU,
        "<=",
        DASHBOARD_CPU_LIMIT,
        "dashboard's counting: CPU per request, on vs off",
    ),
    Target(
        "dashboard",
        INSTRUCTIONS,
        "<=",
        DASHBOARD_CPU_LIMIT,
        "dashboard's counting: instructions per request, on vs off (callgrind)",
    ),
)


def memory_summary(results: Mapping[str, ScenarioResult]) -> ScenarioResult | None:
    """Peak RSS of the cold 1 GiB GET over that of the cold 256 MiB GET, per repetition."""
    cold, herd = results.get("cold-blob"), results.get("herd")
    if cold is None or herd is None:
        return None
    big = cold.figures.get(RSS)
    small = herd.figures.get(f"{RSS}, single GET")
    if big is None or small is None:
        return None
    memory = ScenarioResult("memory", "Memory: peak RSS against blob size (cold single GET)")
    for a, b in zip(big.values, small.values, strict=False):
        memory.add("peak RSS, cold GET of the big blob", "MB", a)
        memory.add("peak RSS, cold GET of the herd blob", "MB", b)
        memory.add(BLOB_SIZE_RATIO, "x", a / b)
    return memory


def all_targets(results: Mapping[str, ScenarioResult]) -> list[Target]:
    targets = [t for t in TARGETS if t.scenario in results]
    for name, result in results.items():
        if PSS in result.figures:  # several processes: what the node pays, shared pages once
            label = f"peak memory (PSS summed) during {name}"
            targets.append(Target(name, PSS, "<=", RSS_LIMIT_MB, label))
        elif RSS in result.figures:
            targets.append(Target(name, RSS, "<=", RSS_LIMIT_MB, f"peak RSS during {name}"))
    return targets


@dataclass(frozen=True, slots=True)
class Verdict:
    target: Target
    figure: Figure | None

    @property
    def met(self) -> bool | None:
        """Whether the figure meets the goal (None: not measured), retired or not."""
        if self.figure is None or not self.figure.values:
            return None
        return self.target.judge(self.figure)

    @property
    def passed(self) -> bool | None:
        """The verdict: None when not measured or when the target is retired."""
        return None if self.target.retired else self.met

    def as_json(self) -> dict[str, Any]:
        t = self.target
        return {
            "scenario": t.scenario,
            "figure": t.figure,
            "label": t.label,
            "target": f"{t.op} {t.value}",
            "judged_on": "every repetition" if t.every_rep else "median",
            "measured": self.figure.as_json() if self.figure is not None else None,
            "pass": self.passed,
            **({"retired": t.retired, "met": self.met} if t.retired else {}),
        }


def verdicts(results: Mapping[str, ScenarioResult]) -> list[Verdict]:
    return [Verdict(t, results[t.scenario].figures.get(t.figure)) for t in all_targets(results)]


def to_json(meta: Mapping[str, Any], results: Mapping[str, ScenarioResult]) -> dict[str, Any]:
    return {
        **meta,
        "scenarios": {name: result.as_json() for name, result in results.items()},
        "targets": [v.as_json() for v in verdicts(results)],
    }


def to_markdown(meta: Mapping[str, Any], results: Mapping[str, ScenarioResult]) -> str:
    machine, config = meta["machine"], meta["config"]
    lines = [
        f"### registry-cache benchmark suite (python -m benchmarks), {meta['started']}",
        "",
        f"- machine: {machine['description']}",
        f"- command: `{meta['command']}` (wall time {meta['seconds']:.0f} s)"
        + (f", revision {meta['revision']}" if meta.get("revision") else "")
        + (f", core {meta['core_fingerprint']}" if meta.get("core_fingerprint") else ""),
        f"- tools: {', '.join(f'{k} {v}' for k, v in meta['tools'].items())}",
        *(
            [f"- host speed: {describe(machine['calibration'], machine.get('steal'))}"]
            if "calibration" in machine
            else []
        ),
        f"- {config['reps']} repetitions; figures are median [min-max]; ratios are "
        "registry-cache over the other, per repetition (higher is better for rates, "
        "lower for times)",
        "",
        "| target | goal | measured | result |",
        "|---|---|---|---|",
    ]
    for verdict in verdicts(results):
        t, figure = verdict.target, verdict.figure
        shown = _summary(figure) if figure is not None and figure.values else "not measured"
        mark = t.retired or {True: "pass", False: "**FAIL**", None: "—"}[verdict.passed]
        goal = t.text(figure.unit if figure is not None else "")
        lines.append(f"| {t.label} | {goal} | {shown} | {mark} |")
    for result in results.values():
        lines += ["", f"#### {result.title}", ""]
        if result.error:
            lines.append(f"**not measured:** {result.error}")
            continue
        lines += ["| figure | median [min-max] |", "|---|---|"]
        lines += [f"| {key} | {_summary(fig)} |" for key, fig in result.figures.items()]
        lines += [f"\n_{note}_" for note in result.notes]
    return "\n".join(lines) + "\n"


def _summary(figure: Figure) -> str:
    unit = "x" if figure.unit == "x" else f" {figure.unit}"
    spread = "" if len(figure.values) < 2 else f" [{_num(figure.min)}-{_num(figure.max)}]"
    return f"{_num(figure.median)}{unit}{spread}"


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 0.995 else f"{value:.3g}"
