"""``registry-cache cache ls|du|verify|gc|prune``: the data directory, offline or live.

Every command takes the same configuration as ``serve`` (``--data-dir``, ``--config``,
environment) and is safe while the server runs: reads go through SQLite (WAL), and
deletions take ``DATA/evict.lock`` like eviction does (see store/maintenance.py).
With ``--storage`` each command covers the bucket too, after the data directory
(``bucket/maintenance.py``). ``--json`` prints one JSON document on stdout instead
of tables.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..config import Settings
from ..digest import Digest
from ..errors import IndexUnavailable, StorageUnavailable
from ..index import open_index
from ..index.front import IndexFront
from ..store.blobs import FileBlobStore
from ..store.inventory import Image, images
from ..store.maintenance import (
    MaintenanceBusy,
    collect_garbage,
    disk_usage,
    list_images,
    side_usage,
)
from ..store.maintenance import (
    prune as prune_data,
)
from ..store.maintenance import (
    verify as verify_data,
)
from ..units import format_duration, format_size, parse_duration
from .common import console, json_option
from .main import CliError
from .options import data_dir, settings_from, settings_options
from .priority import priority_option

if TYPE_CHECKING:
    from ..bucket.store import S3BlobStore

machine_readable = json_option("Machine-readable output.")
T = TypeVar("T")


@dataclass
class Data:
    settings: Settings
    store: FileBlobStore
    index: IndexFront
    loop: asyncio.AbstractEventLoop
    writable: bool = True  # False: the index was opened read-only
    bucket: S3BlobStore | None = None  # with --storage

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run one step of the command on the data directory's event loop."""
        return self.loop.run_until_complete(work)


@contextmanager
def open_data(params: dict[str, Any], *, read_only: bool = False) -> Iterator[Data]:
    """The configured data directory; CliError (one line) unless it holds a cache.

    ``read_only`` commands also work on a directory nobody may write to (a read-only
    copy or mount): the index is then opened read-only and immutable. A full disk is
    no reason to refuse: gc and prune are how space comes back.
    """
    settings = settings_from(params)
    checked = data_dir(settings, write=not read_only)
    store = FileBlobStore.at(checked.path)
    index_file = store.index_file
    if not settings.clustered and not index_file.is_file():
        raise CliError(f"{store.root} is not a cache data directory (no {index_file.name})")
    loop = asyncio.new_event_loop()
    writable = True
    try:
        try:
            # Nobody may write the directory (a read-only copy or mount): read-only,
            # immutable (index/sqlite.py).
            raw = loop.run_until_complete(open_index(settings, readonly=not checked.writable))
        except (IndexUnavailable, sqlite3.Error) as exc:
            if not read_only:
                raise CliError(f"cannot open {index_file}: {exc}") from None
            try:
                raw = loop.run_until_complete(open_index(settings, readonly=True))
            except (IndexUnavailable, sqlite3.Error) as again:
                raise CliError(f"cannot open {index_file}: {again}") from None
            writable = False
        index = IndexFront(raw)
        bucket = None
        try:
            if settings.storage is not None:
                from ..bucket.store import S3BlobStore

                bucket = loop.run_until_complete(S3BlobStore.connect(settings))
            yield Data(settings, store, index, loop, writable, bucket)
        except StorageUnavailable as exc:
            raise CliError(exc.message) from None
        except MaintenanceBusy as exc:
            raise CliError(f"busy: {exc}; try again") from None
        except (IndexUnavailable, sqlite3.Error) as exc:
            raise CliError(f"index {index_file}: {exc}") from None
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise CliError(f"{exc.strerror or exc}{where}") from None
        finally:
            if bucket is not None:
                loop.run_until_complete(bucket.close())
            loop.run_until_complete(raw.close())
    finally:
        loop.close()


def _emit(doc: dict[str, Any]) -> None:
    click.echo(json.dumps(doc, indent=2))


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _ago(timestamp: float) -> str:
    return f"{format_duration(max(0.0, time.time() - timestamp))} ago"


def _duration(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


@click.group()
def cache() -> None:
    """Inspect and maintain the cache's data directory (safe while the server runs)."""


# ------------------------------------------------------------------------- ls


def image_json(image: Image) -> dict[str, Any]:
    return {
        "upstream": image.upstream,
        "repository": image.repo,
        "tag": image.tag,
        "digest": image.digest,
        "media_type": image.media_type,
        "size": image.size,
        "objects": image.objects,
        "missing_blobs": image.missing,
        "platforms": image.platforms,
        "platforms_cached": image.platforms_cached,
        "complete": image.complete,
        "last_pulled": image.last_pulled,
        "last_pulled_at": _when(image.last_pulled),
    }


def _key(image: Image) -> tuple[str, str, str | None, str]:
    return (image.upstream, image.repo, image.tag, image.digest)


def _bucket_json(image: Image | None) -> dict[str, Any]:
    if image is None:
        return {"size": 0, "objects": 0, "missing_blobs": 0, "complete": False}
    return {
        "size": image.size,
        "objects": image.objects,
        "missing_blobs": image.missing,
        "complete": image.complete,
    }


def _state(image: Image | None) -> str:
    if image is None or not image.cached:
        return "manifest evicted"
    parts = []
    if image.platforms:
        parts.append(f"{image.platforms_cached}/{image.platforms} platforms")
    parts.append("complete" if not image.missing else f"{image.missing} blob(s) missing")
    return ", ".join(parts)


@cache.command("ls")
@settings_options
@machine_readable
def ls(as_json: bool, **params: Any) -> None:
    """Images (tags) per upstream: digest, cached size, last pull (and the bucket's copy).

    Every image, a table per upstream printed as it goes (pipe to less to page it);
    --json gives the same list for scripts.
    """
    with open_data(params, read_only=True) as data:
        found = list_images(data.store, data.index, writable=data.writable)
        held: dict[tuple[str, str, str | None, str], Image] | None = None
        if data.bucket is not None:
            # The bucket's side is one snapshot (bucket/maintenance.py); the data
            # directory's is still walked a page at a time.
            from ..bucket.maintenance import snapshot

            held = {_key(i): i for i in images(data.run(snapshot(data.index, data.bucket)))}
            found = _with_bucket_only(found, list(held.values()))
        if as_json:
            data.run(_ls_json(str(data.store.root), found, held))
        else:
            data.run(_ls_tables(str(data.store.root), found, held))


BucketImages = Mapping[tuple[str, str, str | None, str], Image]


def _order(image: Image) -> tuple[str, str, bool, str]:
    """The order of ``images`` and ``iter_images``."""
    return image.upstream, image.repo, image.tag is None, image.tag or image.digest


async def _with_bucket_only(
    found: AsyncIterator[Image], held: Sequence[Image]
) -> AsyncIterator[Image]:
    """The data directory's images with those only the bucket has, in order."""
    listed: set[tuple[str, str, str | None, str]] = set()
    rest = sorted(held, key=_order)
    at = 0
    async for image in found:
        while at < len(rest) and _order(rest[at]) < _order(image):
            if _key(rest[at]) not in listed:
                yield rest[at]
            at += 1
        listed.add(_key(image))
        yield image
    for image in rest[at:]:
        if _key(image) not in listed:
            yield image


async def _ls_json(
    root: str, found: AsyncIterator[Image], held: BucketImages | None = None
) -> None:
    """``{"data_dir": …, "images": […]}`` as ``json.dumps(indent=2)`` writes it, one
    image at a time (a million objects make an output of tens of megabytes). With
    ``held`` (the bucket's images), each entry says what the bucket has of it."""
    out = sys.stdout
    out.write("{\n" + f'  "data_dir": {json.dumps(root)},\n' + '  "images": [')
    first = True
    lines: list[str] = []
    async for image in found:
        entry = _image_entry(image)
        if held is not None:
            bucket = json.dumps(_bucket_json(held.get(_key(image))), indent=2)
            bucket = bucket.replace("\n", "\n      ")  # three levels down
            entry = f'{entry[:-6]},\n      "bucket": {bucket}{entry[-6:]}'  # before "\n    }"
        lines.append(entry if first else "," + entry)
        first = False
        if len(lines) >= 1024:
            out.write("".join(lines))
            lines.clear()
    out.write("".join(lines))
    out.write("]\n}\n" if first else "\n  ]\n}\n")
    out.flush()


_quote = json.encoder.encode_basestring_ascii  # what json.dumps writes of a str


def _text(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def _image_entry(image: Image) -> str:
    """``image_json(image)`` as ``json.dumps(indent=2)`` lays it out two levels down,
    written directly: the encoder took most of the time of a million-object listing."""
    return (
        "\n    {\n"
        f'      "upstream": {_quote(image.upstream)},\n'
        f'      "repository": {_quote(image.repo)},\n'
        f'      "tag": {_text(image.tag)},\n'
        f'      "digest": {_quote(image.digest)},\n'
        f'      "media_type": {_text(image.media_type)},\n'
        f'      "size": {image.size!r},\n'
        f'      "objects": {image.objects!r},\n'
        f'      "missing_blobs": {image.missing!r},\n'
        f'      "platforms": {image.platforms!r},\n'
        f'      "platforms_cached": {image.platforms_cached!r},\n'
        f'      "complete": {"true" if image.complete else "false"},\n'
        f'      "last_pulled": {image.last_pulled!r},\n'
        f'      "last_pulled_at": {_quote(_when(image.last_pulled))}\n'
        "    }"
    )


LS_COLUMNS = ("IMAGE", "DIGEST", "SIZE", "CACHED", "LAST PULL")
LS_BUCKET_COLUMNS = ("IMAGE", "DIGEST", "SIZE", "CACHED", "BUCKET", "LAST PULL")
SEPARATOR = "\x1f"  # a row held as one string until its table is printed


def ls_table(
    title: str, rows: Sequence[tuple[str, ...]], columns: Sequence[str] = LS_COLUMNS
) -> list[str]:
    """One upstream's table: columns two spaces apart, SIZE right-aligned."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    return [title, *_lines(widths, [tuple(columns), *rows], columns), ""]


def _lines(
    widths: Sequence[int], rows: Iterable[Sequence[str]], columns: Sequence[str] = LS_COLUMNS
) -> Iterator[str]:
    for cells in rows:
        parts = [
            cell.rjust(width) if column == "SIZE" else cell.ljust(width)
            for column, cell, width in zip(columns, cells, widths, strict=True)
        ]
        yield "  ".join(parts).rstrip()


async def _ls_tables(
    root: str, found: AsyncIterator[Image], held: BucketImages | None = None
) -> None:
    """A table per upstream, streamed: only the upstream being printed is held (its
    column widths need all of its rows), each row as one string. With ``held`` (the
    bucket's images), a BUCKET column says what the bucket has of each."""
    columns = LS_COLUMNS if held is None else LS_BUCKET_COLUMNS
    upstream: str | None = None
    rows: list[str] = []
    widths = [len(c) for c in columns]

    def flush() -> None:
        if upstream is None:
            return
        click.echo(click.style(upstream, italic=True))  # styles only on a terminal
        (header,) = _lines(widths, [columns], columns)
        click.echo(click.style(header, bold=True))
        # Laid out as they are written: the rows of an upstream with a hundred thousand
        # images, split into cells all at once, took more memory than the rest.
        chunk: list[str] = []
        for line in _lines(widths, (r.split(SEPARATOR) for r in rows), columns):
            chunk.append(line)
            if len(chunk) == 4096:
                click.echo("\n".join(chunk))
                chunk.clear()
        if chunk:
            click.echo("\n".join(chunk))
        click.echo()

    async for i in found:
        if i.upstream != upstream:
            flush()
            upstream, rows, widths = i.upstream, [], [len(c) for c in columns]
        cells: tuple[str, ...] = (
            i.name if i.tag else f"{i.repo}@{i.digest[:19]}",
            i.digest[:19],
            format_size(i.size),
            _state(i),
        )
        if held is not None:
            cells += (_state(held.get(_key(i))),)
        cells += (_ago(i.last_pulled),)
        widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]
        rows.append(SEPARATOR.join(cells))
    if upstream is None:
        click.echo(f"no images cached in {root}")
    flush()


# ------------------------------------------------------------------------- du


@cache.command("du")
@settings_options
@machine_readable
def du(as_json: bool, **params: Any) -> None:
    """Disk usage per upstream, plus shared, unreferenced and in-flight bytes.

    Totals come from the index; the blob directories are listed once for files it
    does not know (unindexed: what gc adopts or removes).
    """
    with open_data(params, read_only=True) as data:
        usage = data.run(disk_usage(data.store, data.index, writable=data.writable))
        settings = data.settings
        shared = None
        if data.bucket is not None:
            from ..bucket.maintenance import usage as bucket_usage

            shared = data.run(bucket_usage(data.bucket, data.index))
            bucket_url = data.bucket.location.url
    sums = usage.totals
    side = side_usage(data.store)
    partials, quarantine = side.partials, side.quarantine
    disk_used, disk_size = side.disk_used, side.disk_size
    doc: dict[str, Any] = {
        "data_dir": str(data.store.root),
        "upstreams": [
            {
                "upstream": u.upstream,
                "repositories": u.repos,
                "tags": u.tags,
                "objects": u.objects,
                "bytes": u.bytes,
            }
            for u in sums.upstreams
        ],
        "total": {"objects": sums.objects, "bytes": sums.bytes},
        "shared": {"objects": sums.shared_objects, "bytes": sums.shared_bytes},
        "unreferenced": {"objects": sums.unreferenced_objects, "bytes": sums.unreferenced_bytes},
        "unindexed": {"files": usage.unindexed_files, "bytes": usage.unindexed_bytes},
        "fills": {"files": partials[0], "bytes": partials[1]},
        "quarantine": {"files": quarantine[0], "bytes": quarantine[1]},
        "disk": {"used": disk_used, "size": disk_size},
        "limits": {
            "max_size": settings.max_size,
            "max_disk_percent": settings.max_disk_percent,
            "max_age": settings.max_age,
        },
    }
    if shared is not None:
        doc["bucket"] = {
            "storage": bucket_url,
            "objects": shared.objects,
            "bytes": shared.bytes,
            "stored": {"objects": shared.stored_objects, "bytes": shared.stored_bytes},
            "unindexed": {"objects": shared.unindexed, "bytes": shared.unindexed_bytes},
            "pending_uploads": shared.pending_uploads,
            "max_size": settings.shared_max_size,
        }
    if as_json:
        _emit(doc)
        return
    table = Table(box=None, pad_edge=False)
    for column in ("UPSTREAM", "REPOS", "TAGS", "OBJECTS", "SIZE"):
        table.add_column(column, justify="left" if column == "UPSTREAM" else "right")
    for u in sums.upstreams:
        table.add_row(u.upstream, str(u.repos), str(u.tags), str(u.objects), format_size(u.bytes))
    table.add_section()
    table.add_row("total", "", "", str(sums.objects), format_size(sums.bytes), style="bold")
    extra = [
        ("shared by repositories", sums.shared_objects, sums.shared_bytes),
        ("unreferenced (gc)", sums.unreferenced_objects, sums.unreferenced_bytes),
        ("unindexed files (gc)", usage.unindexed_files, usage.unindexed_bytes),
        ("fills in flight/partial", *partials),
        ("quarantine", *quarantine),
    ]
    for label, count, size in extra:
        table.add_row(label, "", "", str(count), format_size(size), style="dim")
    out = console()
    out.print(table)
    limits = []
    if settings.max_size:
        limits.append(f"max size {format_size(settings.max_size)}")
    if settings.max_disk_percent:
        used = 100 * disk_used / disk_size if disk_size else 0.0
        limits.append(f"max disk {settings.max_disk_percent:g}% (now {used:.1f}%)")
    if settings.max_age:
        limits.append(f"max age {format_duration(settings.max_age)}")
    out.print("limits: " + (", ".join(limits) if limits else "none (unbounded)"))
    if shared is not None:
        cap = settings.shared_max_size
        out.print(
            f"bucket {bucket_url}: {shared.objects} object(s), {format_size(shared.bytes)}"
            f" (cap {format_size(cap) if cap else 'none'}); listed {shared.stored_objects},"
            f" {format_size(shared.stored_bytes)}; {shared.unindexed} unindexed (gc),"
            f" {shared.pending_uploads} upload(s) in progress or abandoned",
            markup=False,
        )


# --------------------------------------------------------------------- verify


@cache.command("verify")
@settings_options
@priority_option
@machine_readable
def verify(as_json: bool, **params: Any) -> None:
    """Re-hash every object; quarantine bad ones; exit 1 if any were bad."""
    out = console(stderr=as_json)  # with --json, progress (if any) goes to stderr
    with open_data(params) as data:
        columns = (
            TextColumn("verifying"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=out, transient=True, disable=not out.is_terminal) as bar:
            task = bar.add_task("verify", total=None)
            report = data.run(
                verify_data(
                    data.store,
                    data.index,
                    # The total costs a walk of every file: only for a bar someone sees.
                    on_total=(lambda total: bar.update(task, total=total))
                    if out.is_terminal
                    else None,
                    on_bytes=lambda n: bar.advance(task, n),
                )
            )
        shared = None
        if data.bucket is not None:
            from ..bucket.maintenance import verify as verify_bucket

            bucket = data.bucket.location
            columns = (TextColumn("verifying the bucket"), *columns[1:])
            with Progress(
                *columns, console=out, transient=True, disable=not out.is_terminal
            ) as bar:
                task = bar.add_task("verify", total=None)
                shared = data.run(
                    verify_bucket(
                        data.bucket,
                        data.index,
                        on_total=lambda total: bar.update(task, total=total),
                        on_bytes=lambda n: bar.advance(task, n),
                    )
                )
        quarantine = data.store.quarantine_dir
    corrupt = len(report.corrupt) + (len(shared.corrupt) if shared else 0)
    missing = len(report.missing) + (len(shared.missing) if shared else 0)
    if as_json:
        doc: dict[str, Any] = {
            "checked": report.checked,
            "bytes": report.bytes,
            "corrupt": list(report.corrupt),
            "missing": list(report.missing),
            "vanished": report.vanished,
            "ok": report.ok and (shared is None or shared.ok),
        }
        if shared is not None:
            doc["bucket"] = {
                "checked": shared.checked,
                "bytes": shared.bytes,
                "corrupt": list(shared.corrupt),
                "missing": list(shared.missing),
                "ok": shared.ok,
            }
        _emit(doc)
    else:
        out.print(f"checked {report.checked} object(s), {format_size(report.bytes)}")
        for digest in report.corrupt:
            out.print(f"corrupt: {digest} (moved to {quarantine}/)", markup=False)
        for digest in report.missing:
            out.print(f"missing: {digest} (indexed, file gone; row dropped)", markup=False)
        if shared is not None:
            out.print(
                f"checked {shared.checked} object(s) in {bucket.url}, {format_size(shared.bytes)}",
                markup=False,
            )
            for digest in shared.corrupt:
                where = bucket.quarantined(Digest.parse(digest))
                out.print(f"corrupt in the bucket: {digest} (moved to {where})", markup=False)
            for digest in shared.missing:
                out.print(f"missing from the bucket: {digest} (row dropped)", markup=False)
        if not corrupt and not missing:
            out.print("all objects verified")
    if corrupt or missing:
        gone = "without a file" if shared is None else "without their file or object"
        raise CliError(
            f"verify found {corrupt} corrupt object(s) (quarantined) and"
            f" {missing} index row(s) {gone} (dropped)"
        )


# ------------------------------------------------------------------------- gc


@cache.command("gc")
@settings_options
@priority_option
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="Leave anything written or used more recently than this.",
)
@click.option("--dry-run", is_flag=True, help="Report what would go; change nothing.")
@machine_readable
def gc(grace: str, dry_run: bool, as_json: bool, **params: Any) -> None:
    """Remove orphans, stale partials and temporary files; index stray verified files."""
    seconds = _duration(grace, "--grace") or 0.0
    with open_data(params) as data:
        report = data.run(collect_garbage(data.store, data.index, grace=seconds, dry_run=dry_run))
        shared = None
        if data.bucket is not None:
            from ..bucket.maintenance import collect_garbage as collect_bucket
            from ..bucket.upload import Journal

            journal = Journal.beside(data.store)
            shared = data.run(
                collect_bucket(data.bucket, data.index, journal, grace=seconds, dry_run=dry_run)
            )
    if as_json:
        doc: dict[str, Any] = {
            "dry_run": report.dry_run,
            "orphans": list(report.orphans),
            "orphan_bytes": report.orphan_bytes,
            "adopted": list(report.adopted),
            "missing": list(report.missing),
            "files": list(report.files),
            "file_bytes": report.file_bytes,
        }
        if shared is not None:
            doc["bucket"] = {
                "orphans": list(shared.orphans),
                "orphan_bytes": shared.orphan_bytes,
                "adopted": list(shared.adopted),
                "missing": list(shared.missing),
                "uploads": shared.uploads,
            }
        _emit(doc)
        return
    verb = "would remove" if dry_run else "removed"
    out = console()
    out.print(
        f"{verb} {len(report.orphans)} orphan object(s) ({format_size(report.orphan_bytes)}),"
        f" {len(report.files)} leftover file(s) ({format_size(report.file_bytes)}),"
        f" {len(report.missing)} index row(s) without a file;"
        f" {'would index' if dry_run else 'indexed'} {len(report.adopted)} stray file(s)"
    )
    for name in report.files:
        out.print(f"  {name}", markup=False)
    if shared is not None:
        out.print(
            f"bucket: {verb} {len(shared.orphans)} orphan object(s)"
            f" ({format_size(shared.orphan_bytes)}), {shared.uploads} abandoned upload(s),"
            f" {len(shared.missing)} index row(s) without an object;"
            f" {'would index' if dry_run else 'indexed'} {len(shared.adopted)} stray object(s)"
        )


# ---------------------------------------------------------------------- prune


@cache.command("prune")
@settings_options
@priority_option
@click.option(
    "--older-than",
    metavar="DURATION",
    help="Tags not pulled and objects not accessed for this long (e.g. 30d).",
)
@click.option(
    "--repo",
    "patterns",
    multiple=True,
    metavar="PATTERN",
    help="Repositories to forget: upstream/repo or repo, shell wildcards (repeatable).",
)
@click.option(
    "--grace",
    metavar="DURATION",
    help="Leave anything used more recently than this [evict_grace, 30s].",
)
@click.option("--dry-run", is_flag=True, help="Report what would go; change nothing.")
@machine_readable
def prune(
    older_than: str | None,
    patterns: tuple[str, ...],
    grace: str | None,
    dry_run: bool,
    as_json: bool,
    **params: Any,
) -> None:
    """Remove old images (--older-than) and/or repositories (--repo)."""
    if older_than is None and not patterns:
        raise click.UsageError("give --older-than DURATION and/or --repo PATTERN")
    age = _duration(older_than, "--older-than")
    with open_data(params) as data:
        pin = _duration(grace, "--grace")
        shared = None
        if data.bucket is not None:
            from ..bucket.maintenance import prune as prune_bucket

            # First: the data directory's step forgets the links that tell which
            # repositories an object belongs to.
            shared = data.run(
                prune_bucket(
                    data.bucket,
                    data.index,
                    older_than=age,
                    patterns=patterns,
                    grace=data.settings.evict_grace if pin is None else pin,
                    dry_run=dry_run,
                )
            )
        report = data.run(
            prune_data(
                data.store,
                data.index,
                older_than=age,
                patterns=patterns,
                grace=data.settings.evict_grace if pin is None else pin,
                dry_run=dry_run,
            )
        )
    if as_json:
        doc: dict[str, Any] = {
            "dry_run": report.dry_run,
            "tags": [f"{t.upstream}/{t.repo}:{t.tag}" for t in report.tags],
            "objects": list(report.removed),
            "bytes": report.freed,
            "kept_in_use": report.kept,
        }
        if shared is not None:
            doc["bucket"] = {"objects": list(shared.removed), "bytes": shared.bytes}
        _emit(doc)
        return
    verb = "would remove" if dry_run else "removed"
    out = console()
    out.print(
        f"{verb} {len(report.tags)} tag(s) and {len(report.removed)} object(s)"
        f" ({format_size(report.freed)})"
        + (f"; kept {report.kept} in use or too recent" if report.kept else "")
    )
    if shared is not None:
        out.print(f"bucket: {verb} {len(shared.removed)} object(s) ({format_size(shared.bytes)})")
    for t in report.tags:
        out.print(f"  {t.upstream}/{t.repo}:{t.tag}", markup=False)
