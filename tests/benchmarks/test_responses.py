"""The WAN scenarios' split of a pull, from distribution's own log lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.responses import ResponseLog, go_duration, parse, split

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def line(time: str, method: str, uri: str, duration: str, status: int = 200) -> str:
    # As docker-registry 2.8 writes it (fields trimmed to the ones the parser reads).
    return (
        f'time="{time}" level=info msg="response completed" go.version=go1.19.8 '
        f'http.request.host="127.0.0.2:5000" http.request.method={method} '
        f'http.request.remoteaddr="127.0.0.1:60390" http.request.uri="{uri}" '
        f"http.request.useragent=skopeo/1.9.3 http.response.contenttype=application/octet-stream "
        f"http.response.duration={duration} http.response.status={status} "
        f"http.response.written=41956703"
    )


def test_go_durations() -> None:
    assert go_duration("852.169267ms") == pytest.approx(0.852169267)
    assert go_duration("1m2.5s") == pytest.approx(62.5)
    assert go_duration("950µs") == pytest.approx(0.00095)
    with pytest.raises(ValueError):
        go_duration("12 parsecs")


def test_a_response_starts_its_duration_before_the_line() -> None:
    [response] = parse(
        line("2026-12-02T22:20:53.502340796Z", "GET", f"/v2/r/blobs/{DIGEST_A}", "852.5ms")
        + '\ntime="2026-12-02T22:20:53Z" level=info msg="listening"\n'
    )
    assert response.end - response.start == pytest.approx(0.8525)
    assert response.end % 60 == pytest.approx(53.502340796, abs=1e-6)
    assert (response.method, response.status) == ("GET", 200)
    # logrus quotes a value with a non-ASCII character: Go's microsecond sign.
    [quoted] = parse(line("2026-12-02T22:20:53Z", "GET", "/v2/r/blobs/x", '"898.031µs"'))
    assert quoted.end - quoted.start == pytest.approx(0.000898031, abs=1e-6)


def test_a_pull_splits_into_the_layers_span_and_the_last_alone(tmp_path: Path) -> None:
    log = tmp_path / "upstream.log"
    log.write_text(line("2026-12-02T22:00:00.000Z", "GET", "/v2/r/manifests/x", "5ms") + "\n")
    responses = ResponseLog(log)
    mark = responses.mark()
    with log.open("a") as out:
        out.write(line("2026-12-02T22:00:01.000Z", "HEAD", f"/v2/r/blobs/{DIGEST_A}", "1ms") + "\n")
        out.write(line("2026-12-02T22:00:01.500Z", "GET", f"/v2/r/blobs/{DIGEST_B}", "1s") + "\n")
        out.write(line("2026-12-02T22:00:01.800Z", "GET", f"/v2/r/blobs/{DIGEST_A}", "1.2s") + "\n")
    found = responses.blob_gets(mark, {DIGEST_A, DIGEST_B})
    assert [r.uri[-1] for r in found] == ["b", "a"]  # the HEAD and the manifest are not
    link = split(found)
    assert link.layers == pytest.approx(1.3)  # 0.5 s (B's start) to 1.8 s (A's end)
    assert link.last_alone == pytest.approx(0.3)


def test_a_blob_never_logged_is_a_clear_timeout(tmp_path: Path) -> None:
    log = tmp_path / "upstream.log"
    log.write_text("")
    with pytest.raises(TimeoutError, match="no response logged"):
        ResponseLog(log).blob_gets(0, {DIGEST_A}, timeout=0.1)
