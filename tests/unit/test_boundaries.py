"""The storage layer's boundary holds: the data directory's layout (file paths of blobs,
partials, the index file) is known to the storage tiers only (``store/`` and the bucket
tier ``bucket/``) and to the composition roots that create it; everything else reaches
content through the ``BlobStore`` contract (body answers, never paths)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "registry_cache"
STORAGE = ("store", "bucket")
ROOTS = {
    "proxy/build.py",  # wires one worker: makes the layout, hands stores to the rest
    "server.py",  # start-up before forking: creates the layout and tidies leftovers
    "index/__init__.py",  # where the SQLite index file lives
}


def _imports_layout(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = node.module or ""
        if module.endswith("store.layout") or (
            module.endswith("store") and any(alias.name == "layout" for alias in node.names)
        ):
            return True
    return False


def _reads_layout_attribute(tree: ast.AST) -> bool:
    return any(isinstance(node, ast.Attribute) and node.attr == "layout" for node in ast.walk(tree))


def test_only_the_storage_tiers_and_the_composition_roots_know_the_layout() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.split("/")[0] in STORAGE or rel in ROOTS:
            continue
        tree = ast.parse(path.read_text(), rel)
        if _imports_layout(tree) or _reads_layout_attribute(tree):
            offenders.append(rel)
    assert offenders == []


def test_the_check_sees_an_offender() -> None:
    tree = ast.parse("from ..store.layout import Layout\nx = store.layout.blob_str(d)\n")
    assert _imports_layout(tree) and _reads_layout_attribute(tree)


def test_a_cache_without_a_cluster_or_bucket_loads_neither_client() -> None:
    # Each worker would carry asyncpg and aiobotocore (~2-3 MB RSS each) for nothing.
    code = (
        "import sys, registry_cache.server, registry_cache.proxy.build, registry_cache.web.app\n"
        "print(sorted(m for m in ('asyncpg', 'aiobotocore', 'botocore') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
