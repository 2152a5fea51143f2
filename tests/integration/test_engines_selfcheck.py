"""The cluster-mode engines check themselves: PostgreSQL 15, SeaweedFS and Ceph RGW.

Each engine is real (no fake S3, no mocked database): start, stop and start again
by PID, data kept across the restart, nothing listening or connecting outside
127.0.0.1, every process gone after close, and the client round trips the product
will lean on (asyncpg: advisory locks, LISTEN/NOTIFY, password auth; S3: put, get,
ranged get, multipart with list/abort, copy, presigned GET, delete).
Objects stay at 64 MiB or less: a memstore OSD keeps them in RAM.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import asyncpg
import botocore.exceptions
import pytest

from tests.harness.ports import port_is_open
from tests.harness.postgres import PostgresDatabase, PostgresServer
from tests.harness.rgw import CephRGW
from tests.harness.s3engine import S3Engine
from tests.harness.seaweedfs import SeaweedFS
from tests.harness.sockets import off_loopback, pid_alive, sockets, tree_pids

MIB = 1 << 20
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _blob(size: int, seed: bytes) -> bytes:
    """``size`` reproducible, incompressible bytes."""
    block = hashlib.sha256(seed).digest() * (MIB // 32)
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest() + block[32:]
        counter += 1
    return bytes(out[:size])


def _assert_gone(pids: set[int]) -> None:
    deadline = time.monotonic() + 5
    while (alive := [p for p in pids if pid_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive == [], f"still running after stop: {alive}"


def _assert_loopback_only(pids: set[int], expect_listening: set[int]) -> None:
    # An engine is ready when its client port answers; a side listener (weed mini's
    # admin or a gRPC port) may open a moment later, so wait for all of them.
    deadline = time.monotonic() + 15
    while True:
        socks = sockets(pids)
        listening = {int(s.local.rsplit(":", 1)[1]) for s in socks if s.listening}
        if expect_listening <= listening or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert expect_listening <= listening, (expect_listening, socks)  # ss saw the engine
    assert off_loopback(socks) == []


# -- PostgreSQL --------------------------------------------------------------------
async def test_postgres_stop_start_keeps_data_and_port_and_leaves_no_process(
    postgres: PostgresServer,
) -> None:
    port, url = postgres.port, postgres.url
    assert url == f"postgresql://test@127.0.0.1:{port}/test"
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before stop')")
    pids = tree_pids([postgres.pid or 0])
    assert len(pids) >= 4  # postmaster + checkpointer, writer, walwriter, ... + our backend
    _assert_loopback_only(pids, {port})

    postgres.stop()
    _assert_gone(pids)
    assert not port_is_open(port)
    with pytest.raises((ConnectionError, OSError, asyncpg.PostgresError)):
        await conn.fetchval("SELECT 1")  # the fast shutdown cut the client off
    await conn.close(timeout=2)

    postgres.start()
    assert postgres.port == port and postgres.url == url
    conn = await asyncpg.connect(url)
    assert await conn.fetchval("SELECT v FROM kept") == "before stop"
    await conn.close()
    assert max(postgres.start_seconds) < 15 and max(postgres.stop_seconds) < 5


async def test_postgres_recovers_after_kill9(postgres: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres.url)
    await conn.execute("CREATE TABLE t (v int); INSERT INTO t VALUES (42)")
    await conn.close()
    pids = tree_pids([postgres.pid or 0])
    postgres.kill()
    _assert_gone(pids)
    postgres.start()  # crash recovery from WAL
    conn = await asyncpg.connect(postgres.url)
    assert await conn.fetchval("SELECT v FROM t") == 42
    await conn.close()


async def test_asyncpg_advisory_lock_and_listen_notify(pg_database: PostgresDatabase) -> None:
    a = await asyncpg.connect(pg_database.url)
    b = await asyncpg.connect(pg_database.url)
    try:
        # Advisory locks: what a fill lease across replicas can stand on.
        assert await a.fetchval("SELECT pg_try_advisory_lock(4242)") is True
        assert await b.fetchval("SELECT pg_try_advisory_lock(4242)") is False
        assert await a.fetchval("SELECT pg_advisory_unlock(4242)") is True
        assert await b.fetchval("SELECT pg_try_advisory_lock(4242)") is True
        await b.close()  # a session lock dies with its connection
        assert await a.fetchval("SELECT pg_try_advisory_lock(4242)") is True

        # LISTEN/NOTIFY: cross-replica invalidation.
        got: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        await a.add_listener("evicted", lambda _c, _pid, ch, payload: got.put_nowait((ch, payload)))
        c = await asyncpg.connect(pg_database.url)
        began = time.monotonic()
        await c.execute("SELECT pg_notify('evicted', 'sha256:abc')")
        assert await asyncio.wait_for(got.get(), timeout=5) == ("evicted", "sha256:abc")
        assert time.monotonic() - began < 1.0
        await c.close()
    finally:
        await a.close()
        await b.close()


async def test_pg_database_is_fresh_and_its_own(pg_database: PostgresDatabase) -> None:
    assert pg_database.name != pg_database.server.database
    assert pg_database.url.endswith(f"/{pg_database.name}")
    conn = await asyncpg.connect(pg_database.url)
    try:
        assert await conn.fetchval("SELECT current_database()") == pg_database.name
        tables = await conn.fetchval(
            "SELECT count(*) FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        assert tables == 0
    finally:
        await conn.close()


async def test_postgres_password_auth_and_the_password_never_leaks(
    make_postgres: Callable[..., PostgresServer],
) -> None:
    password = "pw-" + os.urandom(9).hex()
    server = make_postgres(password=password)
    assert password not in server.url and password not in server.dsn
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(server.url, password="wrong")
    with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.ClientCannotConnectError)):
        await asyncpg.connect(server.url)  # no password at all
    conn = await asyncpg.connect(server.url_with_password())
    assert await conn.fetchval("SELECT current_user") == "test"
    await conn.close()
    # The harness's own admin statements use the unix socket and need no password.
    server.create_database("other")
    conn = await asyncpg.connect(server.url_for("other"), password=password)
    await conn.close()

    # Nowhere on disk in clear (pg_authid keeps a SCRAM verifier), nor on a command line.
    assert server.dir is not None
    needle = password.encode()
    leaked = [p for p in server.dir.rglob("*") if p.is_file() and needle in p.read_bytes()]
    assert leaked == []
    cmdlines = [Path(f"/proc/{pid}/cmdline") for pid in tree_pids([server.pid or 0])]
    assert cmdlines and not [c for c in cmdlines if needle in c.read_bytes()]


# -- S3 engines ---------------------------------------------------------------------
def _client_error_status(exc: botocore.exceptions.ClientError) -> int:
    return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])


def test_s3_engine_put_get_range_copy_presign_delete(s3_engine: S3Engine) -> None:
    s3, bucket = s3_engine.client(), s3_engine.bucket
    body = _blob(64 * MIB, b"put-get")
    s3.put_object(Bucket=bucket, Key="blobs/a", Body=body)
    assert s3.head_object(Bucket=bucket, Key="blobs/a")["ContentLength"] == len(body)
    got = s3.get_object(Bucket=bucket, Key="blobs/a")["Body"]
    assert b"".join(got.iter_chunks(MIB)) == body

    ranged = s3.get_object(Bucket=bucket, Key="blobs/a", Range="bytes=1000-1999")
    assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert ranged["ContentRange"] == f"bytes 1000-1999/{len(body)}"
    assert ranged["Body"].read() == body[1000:2000]

    s3.copy_object(Bucket=bucket, Key="blobs/b", CopySource={"Bucket": bucket, "Key": "blobs/a"})
    assert s3.head_object(Bucket=bucket, Key="blobs/b")["ContentLength"] == len(body)

    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "blobs/b"}, ExpiresIn=60
    )
    assert url.startswith(s3_engine.endpoint_url + "/")
    with _opener.open(url, timeout=30) as resp:
        assert resp.status == 200
        assert resp.read() == body
    with pytest.raises(urllib.error.HTTPError) as denied:  # the signature covers the key
        _opener.open(url.replace("/blobs/b?", "/blobs/a?"), timeout=30)
    assert denied.value.code == 403

    for key in ("blobs/a", "blobs/b"):
        s3.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(botocore.exceptions.ClientError) as gone:
        s3.head_object(Bucket=bucket, Key="blobs/a")
    assert _client_error_status(gone.value) == 404


def test_s3_engine_multipart_complete_list_abort(s3_engine: S3Engine) -> None:
    s3, bucket = s3_engine.client(), s3_engine.bucket
    parts_data = [_blob(5 * MIB, b"p1"), _blob(5 * MIB, b"p2"), b"tail" * 100]
    up = s3.create_multipart_upload(Bucket=bucket, Key="staging/x")
    uid = up["UploadId"]
    parts = []
    for number, data in enumerate(parts_data, start=1):
        r = s3.upload_part(
            Bucket=bucket, Key="staging/x", UploadId=uid, PartNumber=number, Body=data
        )
        parts.append({"PartNumber": number, "ETag": r["ETag"]})
    # Nothing is visible under the key until the upload completes.
    with pytest.raises(botocore.exceptions.ClientError) as missing:
        s3.head_object(Bucket=bucket, Key="staging/x")
    assert _client_error_status(missing.value) == 404
    listed = s3.list_multipart_uploads(Bucket=bucket, Prefix="staging/")
    assert [u["UploadId"] for u in listed.get("Uploads", [])] == [uid]

    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="staging/x", UploadId=uid, MultipartUpload={"Parts": parts}
    )
    head = s3.head_object(Bucket=bucket, Key="staging/x")
    assert head["ContentLength"] == sum(len(p) for p in parts_data)
    assert head["ETag"].strip('"').endswith("-3")
    if isinstance(s3_engine, CephRGW):
        # RGW 16.2 quirk: CompleteMultipartUpload answers an empty ETag (HEAD is right).
        assert done.get("ETag", "") == ""
    else:
        assert done["ETag"] == head["ETag"]
    full = s3.get_object(Bucket=bucket, Key="staging/x")["Body"].read()
    assert full == b"".join(parts_data)

    # An abandoned upload is listed, and gone (with its parts) once aborted.
    other = s3.create_multipart_upload(Bucket=bucket, Key="staging/abandoned")["UploadId"]
    s3.upload_part(
        Bucket=bucket, Key="staging/abandoned", UploadId=other, PartNumber=1, Body=parts_data[0]
    )
    listed = s3.list_multipart_uploads(Bucket=bucket, Prefix="staging/")
    assert [u["UploadId"] for u in listed.get("Uploads", [])] == [other]
    s3.abort_multipart_upload(Bucket=bucket, Key="staging/abandoned", UploadId=other)
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix="staging/").get("Uploads", []) == []
    with pytest.raises(botocore.exceptions.ClientError):
        s3.list_parts(Bucket=bucket, Key="staging/abandoned", UploadId=other)
    s3.delete_object(Bucket=bucket, Key="staging/x")


def test_s3_engine_stop_start_keeps_objects_and_endpoint(s3_engine: S3Engine) -> None:
    s3, bucket = s3_engine.client(), s3_engine.bucket
    body = _blob(8 * MIB, b"restart")
    s3.put_object(Bucket=bucket, Key="kept", Body=body)
    endpoint, port = s3_engine.endpoint_url, s3_engine.port
    pids = tree_pids(s3_engine.pids)
    assert pids

    s3_engine.stop()
    _assert_gone(pids)
    assert not port_is_open(port)
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        s3.head_object(Bucket=bucket, Key="kept")

    s3_engine.start()
    assert s3_engine.endpoint_url == endpoint
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == body
    assert tree_pids(s3_engine.pids).isdisjoint(pids)  # new processes, old ones gone
    print(
        f"{s3_engine.name}: start {[round(s, 2) for s in s3_engine.start_seconds]} s, "
        f"stop {[round(s, 2) for s in s3_engine.stop_seconds]} s"
    )


def test_s3_engine_binds_and_talks_only_on_loopback(s3_engine: S3Engine) -> None:
    s3_engine.client().put_object(Bucket=s3_engine.bucket, Key="k", Body=b"x")  # some traffic
    pids = tree_pids(s3_engine.pids)
    assert s3_engine.port in s3_engine.listen_ports
    _assert_loopback_only(pids, s3_engine.listen_ports)


def test_s3_engine_close_ends_every_process_and_removes_its_files(s3_engine: S3Engine) -> None:
    pids = tree_pids(s3_engine.pids)
    state_dir = s3_engine.dir
    assert state_dir is not None and state_dir.is_dir() and pids
    s3_engine.close()
    _assert_gone(pids)
    assert not state_dir.exists()
    assert [p for p in s3_engine.listen_ports if port_is_open(p)] == []
    for port in s3_engine.listen_ports:  # weed's unix sockets are named for its ports
        assert list(Path("/tmp").glob(f"seaweedfs-*-{port}.sock")) == []


def test_rgw_keeps_its_files_in_its_state_dir(rgw: CephRGW) -> None:
    # Ceph's defaults would write under /var/log/ceph, /var/lib/ceph and /run/ceph.
    began = time.time() - 60  # only files Ceph touched while this engine lived
    rgw.client().put_object(Bucket=rgw.bucket, Key="k", Body=b"x")
    rgw.stop()
    rgw.start()
    assert rgw.dir is not None
    assert (rgw.dir / "log" / "cluster.log").exists()
    outside = [
        p
        for root in ("/var/log/ceph", "/var/lib/ceph", "/run/ceph")
        for p in Path(root).rglob("*")
        if p.is_file() and p.stat().st_mtime > began
    ]
    assert outside == []


def test_seaweedfs_keeps_objects_across_kill9(seaweedfs: SeaweedFS) -> None:
    # stop() falls back to SIGKILL when weed's volume server hangs in its shutdown:
    # what was acknowledged must survive that.
    s3, bucket = seaweedfs.client(), seaweedfs.bucket
    body = _blob(4 * MIB, b"kill9")
    s3.put_object(Bucket=bucket, Key="survives", Body=body)
    pids = tree_pids(seaweedfs.pids)
    seaweedfs.kill()
    _assert_gone(pids)
    seaweedfs.start()
    assert s3.get_object(Bucket=bucket, Key="survives")["Body"].read() == body
