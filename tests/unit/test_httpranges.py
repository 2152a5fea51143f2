"""The response-side length and range headers, and what their three readers make of bad ones.

The readers (upstream client, bucket transfers, replica client) run against a scripted
server on 127.0.0.1: a bad header is their usual error for that server, never a traceback.
"""

from __future__ import annotations

import pytest
import urllib3

from registry_cache.bucket.transfer import Transfers
from registry_cache.cluster.peers import PeerClient
from registry_cache.errors import BadGateway, StorageUnavailable, Unavailable
from registry_cache.httpranges import (
    ContentRange,
    ContentRangeInvalid,
    body_span,
    header_int,
    parse_content_range,
    parse_unsatisfied_total,
)
from tests.harness.scripted import Answer, Scripted, client_for

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("0", 0),
        ("1024", 1024),
        (" 12 ", 12),
        ("", None),
        ("-1", None),
        ("+5", None),
        ("1_000", None),
        ("١٢", None),  # int() reads Arabic-Indic digits; a header must not
        ("12abc", None),
    ],
)
def test_header_int(value: str | None, expected: int | None) -> None:
    assert header_int(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-9/10", ContentRange(0, 9, 10)),
        ("bytes 4-9/10", ContentRange(4, 9, 10)),
        ("Bytes 4-9/10", ContentRange(4, 9, 10)),  # the unit is case-insensitive
        ("bytes 65536-65551/2097152", ContentRange(65536, 65551, 2097152)),
        ("bytes 4-9/*", ContentRange(4, 9, None)),  # total unknown to the server
        ("  bytes 4-9/10  ", ContentRange(4, 9, 10)),
    ],
)
def test_content_range(value: str, expected: ContentRange) -> None:
    assert parse_content_range(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,  # a 206 without the header: where its bytes start is unknown
        "",
        "4-9/10",  # no unit
        "items 4-9/10",
        "bytes 4-9",  # no total
        "bytes 4/10",
        "bytes -9/10",
        "bytes 4-/10",
        "bytes 9-4/10",  # last before first
        "bytes 4-10/10",  # past the end
        "bytes */10",  # a 416's form in a 206
        "bytes 4-9/ten",
        "bytes -4-9/10",
        "bytes 4-9/-10",
        "bytes 4-9/10/11",
    ],
)
def test_invalid_content_range_is_one_error(value: str | None) -> None:
    with pytest.raises(ContentRangeInvalid):
        parse_content_range(value)


def test_content_range_must_start_where_asked() -> None:
    assert parse_content_range("bytes 4-9/10", 4) == ContentRange(4, 9, 10)
    with pytest.raises(ContentRangeInvalid, match="sent bytes from 0 when asked from 4"):
        parse_content_range("bytes 0-9/10", 4)


def test_upstream_range_from_elsewhere_is_a_bad_gateway(server: Scripted) -> None:
    server.script["/v2/library/x/blobs/"] = [
        Answer(206, {"Content-Range": "bytes 0-9/10"}, b"0123456789")
    ]
    with pytest.raises(BadGateway, match="sent bytes from 0 when asked from 4"):
        client_for(server.url).open_blob("library/x", DIGEST, 4)


def test_body_span_of_a_whole_or_partial_answer() -> None:
    # A 200 is the whole object from byte 0, even when a range was asked for.
    assert body_span(200, {"Content-Length": "10"}, 4) == (0, 10)
    assert body_span(200, {}, 0) == (0, None)
    assert body_span(206, {"Content-Range": "bytes 4-9/10"}, 4) == (4, 10)
    assert body_span(206, {"Content-Range": "bytes 4-9/*"}, 4) == (4, None)
    for headers in ({}, {"Content-Range": "bytes 0-9/10"}):
        with pytest.raises(ContentRangeInvalid):
            body_span(206, headers, 4)


def test_unsatisfied_total() -> None:
    assert parse_unsatisfied_total("bytes */10") == 10
    assert parse_unsatisfied_total("bytes */0") == 0
    for value in (None, "", "bytes */*", "bytes 0-9/10", "bytes */ten", "*/10"):
        with pytest.raises(ContentRangeInvalid):
            parse_unsatisfied_total(value)


def test_message_shows_a_bounded_printable_header() -> None:
    with pytest.raises(ContentRangeInvalid) as info:
        parse_content_range("bytes \x1b[31m" + "9" * 200)
    message = str(info.value)
    assert "\x1b" not in message and len(message) < 120


# --------------------------------------------------------------- the readers


BAD_206 = [
    Answer(206, {"Content-Range": "bytes 4-9/ten"}, b"456789"),
    Answer(206, {}, b"456789"),
]


@pytest.mark.parametrize("answer", BAD_206, ids=["malformed", "missing"])
def test_upstream_bad_content_range_is_a_bad_gateway(server: Scripted, answer: Answer) -> None:
    server.script["/v2/library/x/blobs/"] = [answer]
    upstream = client_for(server.url)
    with pytest.raises(BadGateway, match=r"upstream docker\.io sent (an invalid|no) Content-Range"):
        upstream.open_blob("library/x", DIGEST, offset=4)


def test_upstream_unknown_total_is_an_unknown_size(server: Scripted) -> None:
    server.script["/v2/library/x/blobs/"] = [
        Answer(206, {"Content-Range": "bytes 4-9/*"}, b"456789")
    ]
    stream = client_for(server.url).open_blob("library/x", DIGEST, 4)
    assert (stream.start, stream.size) == (4, None)
    stream.close()


@pytest.mark.parametrize("answer", BAD_206, ids=["malformed", "missing"])
def test_bucket_bad_content_range_is_storage_unavailable(server: Scripted, answer: Answer) -> None:
    server.script["/object"] = [answer]
    transfers = Transfers("test-bucket")
    try:
        with pytest.raises(StorageUnavailable, match="bucket test-bucket sent"):
            transfers.open_range(server.url + "/object", 4)
    finally:
        transfers.close()


def test_bucket_range_from_elsewhere_is_storage_unavailable(server: Scripted) -> None:
    server.script["/object"] = [Answer(206, {"Content-Range": "bytes 0-9/10"}, b"0123456789")]
    transfers = Transfers("test-bucket")
    try:
        with pytest.raises(
            StorageUnavailable, match="bucket test-bucket sent bytes from 0 when asked from 4"
        ):
            transfers.open_range(server.url + "/object", 4)
        server.script["/object"] = [Answer(206, {"Content-Range": "bytes 4-9/10"}, b"456789")]
        stream = transfers.open_range(server.url + "/object", 4)
        assert (stream.start, stream.size) == (4, 10)
        stream.close()
    finally:
        transfers.close()


@pytest.mark.parametrize("answer", BAD_206, ids=["malformed", "missing"])
def test_replica_bad_content_range_is_unavailable(server: Scripted, answer: Answer) -> None:
    server.script["/_internal/v1/blobs/"] = [answer]
    peers = PeerClient("0123456789abcdef0123", urllib3.PoolManager())
    with pytest.raises(Unavailable, match=f"replica {server.url} sent"):
        peers.open_blob(server.url, DIGEST, 4)


def test_replica_range_from_elsewhere_is_unavailable(server: Scripted) -> None:
    server.script["/_internal/v1/blobs/"] = [
        Answer(206, {"Content-Range": "bytes 0-9/10"}, b"0123456789")
    ]
    peers = PeerClient("0123456789abcdef0123", urllib3.PoolManager())
    with pytest.raises(Unavailable, match="sent bytes from 0 when asked from 4"):
        peers.open_blob(server.url, DIGEST, 4)
