"""The product never imports the benchmark suite (``benchmarks/`` beside ``src/``).

Every module of ``registry_cache`` is imported in a fresh interpreter whose path
also holds the repository root, where ``benchmarks`` would be found; afterwards
``benchmarks`` must not be among the loaded modules. Run in a subprocess so that
this test session's own imports (the harness uses the suite's ``free_port``)
cannot hide or fake the answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.harness.cache import REPO_ROOT, SRC_DIR, cli_env

PROBE = textwrap.dedent(
    """
    import importlib, importlib.util, json, pkgutil, sys
    import registry_cache
    names = ["registry_cache"]
    for info in pkgutil.walk_packages(registry_cache.__path__, "registry_cache."):
        names.append(info.name)
    failed = {}
    for name in names:
        if name.endswith("__main__"):
            continue  # running it would start the CLI
        try:
            importlib.import_module(name)
        except Exception as exc:  # reported, so a broken module cannot pass silently
            failed[name] = repr(exc)
    loaded = sorted(m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks."))
    print(json.dumps({"imported": names, "failed": failed, "benchmarks": loaded,
                      "findable": importlib.util.find_spec("benchmarks") is not None}))
    """
)


def _probe() -> dict[str, object]:
    env = cli_env()
    env["PYTHONPATH"] = f"{SRC_DIR}:{REPO_ROOT}"
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_no_product_module_imports_the_benchmark_suite() -> None:
    result = _probe()
    assert result["findable"] is True  # the suite could be imported: absence means something
    assert result["failed"] == {}
    imported = result["imported"]
    assert isinstance(imported, list)
    assert "registry_cache.cli.main" in imported
    assert "registry_cache.bench.runner" in imported  # the seed's benchmark stays in the product
    assert len(imported) > 40
    assert result["benchmarks"] == []


def test_the_suite_is_not_inside_the_product_package() -> None:
    assert not (SRC_DIR / "registry_cache" / "bench" / "suite").exists()
    assert not (SRC_DIR / "registry_cache" / "cli" / "bench_suite.py").exists()
    assert (REPO_ROOT / "benchmarks" / "__main__.py").is_file()
