"""compare-paths: iperf3 JSON parsing (captured from real loopback runs) and verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry_cache.bench.paths import (
    IPERF_MODES,
    IperfError,
    IperfMissing,
    IperfNoServer,
    Thresholds,
    compared_bytes,
    iperf_argv,
    parse_iperf,
    run_iperf,
    verdicts,
)

DATA = Path(__file__).parent / "data"
GBIT = 1e9


@pytest.mark.parametrize(
    ("name", "streams", "reverse"),
    [("single", 1, 0), ("p4", 4, 0), ("reverse_p4", 4, 1)],
)
def test_parse_captured_iperf3_output(name: str, streams: int, reverse: int) -> None:
    text = (DATA / f"bench_iperf3_{name}.json").read_text()
    doc = json.loads(text)
    assert doc["start"]["test_start"]["num_streams"] == streams
    assert doc["start"]["test_start"]["reverse"] == reverse
    assert parse_iperf(text) == doc["end"]["sum_received"]["bits_per_second"]
    assert parse_iperf(text) > 1e9  # loopback


def test_refused_run_is_no_server() -> None:
    # iperf3 3.12 exits 0 here: only the JSON's "error" says it failed.
    with pytest.raises(IperfNoServer, match="Connection refused"):
        parse_iperf((DATA / "bench_iperf3_refused.json").read_text())


def test_other_iperf_errors() -> None:
    with pytest.raises(IperfError, match="busy"):
        parse_iperf(json.dumps({"error": "the server is busy running a test. try again later"}))
    with pytest.raises(IperfError, match="no JSON"):
        parse_iperf("iperf3: error - something\n")
    with pytest.raises(IperfError, match="sum_received"):
        parse_iperf(json.dumps({"end": {}}))


def test_iperf_argv() -> None:
    assert iperf_argv("iperf3", "10.0.0.5", 5201, 5, "-R -P 4") == [
        "iperf3",
        "-c",
        "10.0.0.5",
        "-p",
        "5201",
        "-J",
        "-t",
        "5",
        "--connect-timeout",
        "5000",
        "-R",
        "-P",
        "4",
    ]
    assert list(IPERF_MODES) == ["single", "-P 4", "-R -P 4"]
    # With a byte count, iperf3 moves exactly what the HTTP downloads move.
    argv = iperf_argv("iperf3", "h", 1, 5, "single", nbytes=1_500_000)
    assert argv[argv.index("-J") + 1 : argv.index("--connect-timeout")] == ["-n", "1500000"]
    assert "-t" not in argv


def test_compared_bytes_is_the_smaller_file() -> None:
    assert compared_bytes(1_500_000, 100_000_000) == 1_500_000
    assert compared_bytes(300_000_000, 100_000_000) == 100_000_000
    assert compared_bytes(1_500_000, None) == 1_500_000
    assert compared_bytes(None, None) is None


async def test_missing_binary() -> None:
    with pytest.raises(IperfMissing, match="not found on PATH"):
        await run_iperf("127.0.0.1", 9, 1, "single", binary="no-such-iperf3-binary")


def keys(cache: float | None, iperf: float | None, cdn: float | None) -> list[str]:
    return [v.key for v in verdicts(cache, iperf, cdn)]


def test_verdict_thresholds() -> None:
    assert keys(8 * GBIT, 10 * GBIT, None) == ["network-limit"]  # exactly 80%
    assert keys(7.99 * GBIT, 10 * GBIT, None) == ["in-between"]
    assert keys(5 * GBIT, 10 * GBIT, None) == ["in-between"]  # exactly 50%
    assert keys(4.99 * GBIT, 10 * GBIT, None) == ["cache-host"]
    assert keys(1 * GBIT, None, 1.5 * GBIT) == ["path-bottleneck"]  # exactly 1.5x
    assert keys(1 * GBIT, None, 1.49 * GBIT) == ["cache-not-slower"]
    assert keys(9 * GBIT, 10 * GBIT, 20 * GBIT) == ["network-limit", "path-bottleneck"]
    # iperf3 says the path carries 5x what the cache serves: a faster CDN confirms the
    # cache host, it does not blame the path (which used to print both).
    assert keys(2 * GBIT, 10 * GBIT, 4 * GBIT) == ["cache-host", "cdn-faster"]


RATES = st.one_of(st.none(), st.floats(min_value=0, max_value=1e12, allow_nan=False))


@given(cache=RATES, iperf=RATES, cdn=RATES)
def test_verdicts_never_blame_two_places(
    cache: float | None, iperf: float | None, cdn: float | None
) -> None:
    found = verdicts(cache, iperf, cdn)
    assert len({v.blames for v in found} - {None}) <= 1, found
    assert len({v.key for v in found}) == len(found)


def test_verdicts_skip_missing_sides() -> None:
    assert keys(None, 10 * GBIT, 20 * GBIT) == []
    assert keys(1 * GBIT, None, None) == []
    assert keys(1 * GBIT, 0.0, None) == []


def test_verdict_messages_state_numbers_and_rules() -> None:
    (verdict,) = verdicts(2 * GBIT, 10 * GBIT, None)
    assert "20% of iperf3" in verdict.message
    assert "cache host" in verdict.message
    assert verdict.rule == "cache < 50% of iperf3"
    (cdn,) = verdicts(1 * GBIT, None, 3 * GBIT)
    assert "3.0x faster" in cdn.message
    assert cdn.rule == "CDN >= 1.5x cache"


def test_custom_thresholds() -> None:
    strict = Thresholds(network_limit=0.95, cache_host=0.9, cdn_faster=1.1)
    assert [v.key for v in verdicts(9 * GBIT, 10 * GBIT, 9.5 * GBIT, strict)] == [
        "in-between",
        "cache-not-slower",
    ]
