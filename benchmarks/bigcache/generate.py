"""``python -m benchmarks.bigcache.generate``: build a data set with the measured sources.

Run as a subprocess with ``PYTHONPATH`` naming the ``src`` being measured, so the
rows go in through *that* revision's ``Index`` (its schema, its bulk path), exactly
as its own cache would have written them::

    python -m benchmarks.bigcache.generate --data DIR --objects N [--index-url URL
        --replica URL] [--out FILE]    # build; FILE gets the summary and the sample
                                      # (without --out the summary goes to stdout)
    python -m benchmarks.bigcache.generate --data DIR [--index-url URL --replica URL] --total
                                      # print the index's total size (bytes)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from registry_cache.index.base import Index

from . import dataset


async def open_index(data: Path, url: str | None, replica: str) -> Index:
    if url is None:
        from registry_cache.index.sqlite import SqliteIndex

        return await SqliteIndex.open(data / "index.sqlite3")
    from registry_cache.index.postgres import PostgresIndex

    return await PostgresIndex.open(url, replica=replica)


async def main(args: argparse.Namespace) -> None:
    args.data.mkdir(parents=True, exist_ok=True)
    index = await open_index(args.data, args.index_url, args.replica)
    try:
        if args.total:
            sys.stdout.write(f"{await index.total_size()}\n")
            return
        began = time.monotonic()
        summary, sample, hot = await dataset.build(
            args.data, index, args.objects, now=time.time(), seed=args.seed
        )
        doc = {
            "summary": asdict(summary),
            "sample": sample.to_json(),
            "hot": hot.to_json(),
            "seconds": time.monotonic() - began,
        }
        if args.out is not None:
            args.out.write_text(json.dumps(doc))
        else:  # built by hand: what was built, not the sample
            sys.stdout.write(
                json.dumps({"summary": doc["summary"], "seconds": doc["seconds"]}) + "\n"
            )
    finally:
        await index.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bigcache.generate")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--objects", type=int, default=0)
    parser.add_argument("--index-url")
    parser.add_argument("--replica", default="local")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--total", action="store_true")
    asyncio.run(main(parser.parse_args()))
