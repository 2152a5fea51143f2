"""The dashboard at ``/`` and its ``/api/v1`` JSON, after real pulls through a real cache.

A known set of pulls (manifest by tag, then config and layers, as every client
does) through the cache in front of a real docker-registry gives exact numbers:
hits, misses, bytes from cache and from upstream, pulls per image. The API must
report them, and the page in headless Chromium must show what the API says (its
``data-stat``/``data-value`` elements), with no console error. A slow upstream
(FaultProxy's rate limit) keeps a fill in flight long enough to watch its
progress move on the page.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import urllib3

from tests.harness.browser import Console, open_browser, require_browser
from tests.harness.cache import CacheServer, cli_env, run_cli
from tests.harness.faults import FaultProxy, Rule
from tests.harness.images import ALL_MANIFEST_TYPES, Image, build_image, push
from tests.harness.metrics import scrape
from tests.harness.registry import UpstreamRegistry

ACCEPT = ", ".join(ALL_MANIFEST_TYPES)
VOLATILE = {"disk.filesystem_free_bytes"}  # other processes write to the same disk
HTTP = urllib3.PoolManager(retries=False, timeout=30.0)


def get(url: str, **headers: str) -> urllib3.BaseHTTPResponse:
    return HTTP.request("GET", url, headers={"Accept": ACCEPT, **headers}, preload_content=True)


def api(cache: CacheServer, path: str = "/api/v1/stats") -> dict[str, Any]:
    response = get(cache.url + path)
    assert response.status == 200, response.data[:300]
    doc: dict[str, Any] = json.loads(response.data)
    return doc


def pull(cache: CacheServer, repo: str, tag: str, image: Image) -> list[str]:
    """What every client does: the manifest by tag, then config and layers. → cache statuses."""
    statuses = []
    response = get(f"{cache.url}/v2/{repo}/manifests/{tag}")
    assert response.status == 200 and response.data == image.manifest.data
    statuses.append(response.headers["X-Registry-Cache"])
    assert response.headers["X-Registry-Cache-Upstream"] == "docker.io"
    for blob in image.blobs:
        response = get(f"{cache.url}/v2/{repo}/blobs/{blob.digest}")
        assert response.status == 200 and len(response.data) == blob.size
        statuses.append(response.headers["X-Registry-Cache"])
    return statuses


def image_bytes(image: Image) -> int:
    return image.manifest.size + sum(b.size for b in image.blobs)


def cache_cli(cache: CacheServer, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cache.cwd, timeout=60)


def lookup(doc: Any, path: str) -> Any:
    for part in path.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def same(page_value: str, api_value: Any) -> bool:
    if api_value is None:
        return page_value == ""
    if isinstance(api_value, int | float) and not isinstance(api_value, bool):
        return float(page_value) == float(api_value)
    return page_value == str(api_value)


def test_api_and_page_report_a_known_set_of_pulls(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer], tmp_path: Path
) -> None:
    require_browser()
    test, app = build_image("dash-test", layers=2), build_image("dash-app", layers=1)
    push(upstream.url, "library/test", "1.0", test)
    push(upstream.url, "org/app", "2.0", app)
    cache = make_cache("--upstream", f"docker.io={upstream.url}", "--max-size", "1GiB")

    assert pull(cache, "library/test", "1.0", test) == ["MISS"] * 4
    for blob in test.blobs:  # committed a moment after the client's last byte
        assert cache.wait_for_blob(blob.digest, 10).exists()
    assert pull(cache, "library/test", "1.0", test) == ["HIT"] * 4
    assert pull(cache, "library/test", "1.0", test) == ["HIT"] * 4
    assert pull(cache, "org/app", "2.0", app) == ["MISS"] * 3
    missing = get(f"{cache.url}/v2/library/nope/manifests/9.9")
    assert missing.status == 404 and "X-Registry-Cache" not in missing.headers  # errors: no mark
    assert get(cache.url + "/v2/").headers["X-Registry-Cache"] == "NONE"

    doc = api(cache)
    hour = doc["summary"]["hour"]
    assert hour == doc["summary"]["day"]
    assert (hour["requests"], hour["hits"], hour["misses"]) == (17, 8, 7)
    assert hour["hit_ratio"] == round(8 / 15, 4)
    assert (hour["pulls"], hour["errors"], hour["upstream_requests_saved"]) == (4, 1, 8)
    assert hour["bytes_from_cache"] == hour["upstream_bytes_saved"] == 2 * image_bytes(test)
    # Upstream sent each manifest and blob once (the upstream client's own count).
    assert hour["bytes_from_upstream"] == image_bytes(test) + image_bytes(app)
    assert hour["bytes_served"] == 3 * image_bytes(test) + image_bytes(app)  # content bodies
    assert [(t["image"], t["pulls"]) for t in doc["top_images"]["by_pulls"]] == [
        ("docker.io/library/test", 3),
        ("docker.io/org/app", 1),
    ]
    assert doc["top_images"]["by_bytes"][0]["bytes"] == 3 * image_bytes(test)
    assert [(p["repository"], p["reference"], p["cache"]) for p in doc["recent"]["pulls"]] == [
        ("org/app", "2.0", "MISS"),
        ("library/test", "1.0", "HIT"),
        ("library/test", "1.0", "HIT"),
        ("library/test", "1.0", "MISS"),
    ]
    (error,) = doc["recent"]["errors"]
    assert (error["status"], error["error"], error["repository"]) == (
        404,
        "MANIFEST_UNKNOWN",
        "library/nope",
    )
    (hub,) = doc["upstreams"]
    assert (hub["name"], hub["state"], hub["reachable"], hub["last_error"]) == (
        "docker.io", "ok", True, None
    )  # fmt: skip
    stored = image_bytes(test) + image_bytes(app)
    deadline = time.monotonic() + 5  # the last fill is recorded just after its last byte went out
    while doc["disk"]["used_bytes"] != stored and time.monotonic() < deadline:
        time.sleep(0.05)
        doc = api(cache)
    assert doc["disk"]["used_bytes"] == stored
    assert doc["disk"]["cap_bytes"] == 1 << 30 and doc["disk"]["cap_source"] == "max_size"
    assert doc["replicas"][0]["self"] is True and doc["shared_tier"] is None
    points = api(cache, "/api/v1/history?range=hour")["points"]
    assert len(points) == 60 and sum(p["hits"] for p in points) == 8

    console = Console()
    with open_browser() as browser:
        for width, name in ((1280, "dashboard.png"), (390, "dashboard-phone.png")):
            page = console.watch(browser.new_page(viewport={"width": width, "height": 900}))
            page.goto(cache.url + "/")
            shown = page.eval_on_selector_all(
                "[data-stat]",
                "els => els.map(e => [e.dataset.stat, e.dataset.value, e.textContent])",
            )
            doc = api(cache)  # nothing reached /v2 since the page was rendered
            assert len(shown) > 30
            for path, value, _ in shown:
                if path in VOLATILE:
                    continue
                assert same(value, lookup(doc, path)), (path, value, lookup(doc, path))
            text = dict((p, t) for p, _, t in shown)
            assert text["summary.hour.hit_ratio"] == f"{8 / 15 * 100:.1f}%"
            assert text["top_images.by_pulls.0.pulls"] == "3"
            assert page.inner_text("[data-part=upstreams]").count("reachable") == 1
            assert "docker.io/library/nope:9.9" in page.inner_text("[data-part=recent]")
            width_used = page.evaluate("document.documentElement.scrollWidth")
            assert width_used <= width, f"the page overflows a {width} px wide screen"
            page.keyboard.press("Tab")  # the skip link comes first, and is visible on focus
            assert page.evaluate("document.activeElement.getAttribute('href')") == "#main"
            page.screenshot(path=str(tmp_path / name), full_page=True)
            page.close()
    assert console.errors == []
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000


def test_a_fill_in_flight_moves_on_the_page(
    upstream: UpstreamRegistry,
    proxy: FaultProxy,
    make_cache: Callable[..., CacheServer],
    tmp_path: Path,
) -> None:
    require_browser()
    image = build_image("dash-slow", layers=1, layer_size=3 << 20, workdir=tmp_path)
    push(upstream.url, "library/slow", "1.0", image)
    layer = image.layers[-1]
    proxy.add(Rule(path=f"/blobs/{layer.digest}", method="GET", rate=400_000))  # ~8 s
    cache = make_cache("--upstream", f"docker.io={proxy.url}")
    console = Console()
    done = threading.Event()
    got: list[int] = []

    def client() -> None:
        try:
            response = get(f"{cache.url}/v2/library/slow/blobs/{layer.digest}")
            got.append(len(response.data))
        finally:
            done.set()

    with open_browser() as browser:
        page = console.watch(browser.new_page(viewport={"width": 1280, "height": 900}))
        page.goto(cache.url + "/")
        assert "No fill in flight." in page.inner_text("[data-part=fills]")
        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        written = "[data-stat='fills.0.written']"
        page.wait_for_selector(written, timeout=10_000)  # the page refreshes fills each second
        first = int(page.get_attribute(written, "data-value") or 0)
        fills = api(cache, "/api/v1/fills")["fills"]
        assert [(f["repository"], f["digest"], f["size"]) for f in fills] == [
            ("library/slow", layer.digest, layer.size)
        ]
        assert fills[0]["followers"] == 1 and fills[0]["upstream"] == "docker.io"
        assert page.inner_text("[data-part=fills]").count("library/slow") == 1
        page.wait_for_function(  # the element is replaced at every refresh: look it up each time
            "([sel, first]) => Number(document.querySelector(sel)?.dataset.value) > first",
            arg=[written, first],
            timeout=10_000,
        )
        later = page.get_attribute(written, "data-value")
        assert later is not None and first < int(later) < layer.size
        page.screenshot(path=str(tmp_path / "fill.png"), full_page=True)
        assert done.wait(60)
        page.wait_for_function(
            "() => document.querySelector('[data-part=fills]').innerText.includes('No fill')",
            timeout=10_000,
        )
    thread.join(5)
    assert got == [layer.size]
    assert console.errors == []


def test_every_worker_answers_for_all_and_history_survives_a_restart(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]
) -> None:
    image = build_image("dash-workers", layers=1)
    push(upstream.url, "library/test", "1.0", image)
    cache = make_cache("--upstream", f"docker.io={upstream.url}", "--workers", "2")
    requests = 40
    for _ in range(requests):  # a new connection each: SO_REUSEPORT spreads them
        response = get(f"{cache.url}/v2/library/test/manifests/1.0", Connection="close")
        assert response.status == 200
    pids = {
        line.split("[", 1)[1].split("]", 1)[0]
        for line in cache.log_text().splitlines()
        if "registry_cache.access" in line and "/manifests/1.0" in line
    }
    assert len(pids) == 2, "both workers must have served some of the requests"
    # Prometheus counts the same answers, each worker its own, summed by any of them.
    counted = scrape(cache.url, fresh=True).value(
        "registry_cache_requests_total", kind="manifest", status="2xx"
    )
    assert counted == requests
    deadline = time.monotonic() + 15  # the other worker flushes every 5 s
    while True:
        doc = api(cache)
        if doc["summary"]["hour"]["requests"] == requests or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert doc["summary"]["hour"]["requests"] == requests
    assert doc["summary"]["hour"]["pulls"] == requests
    assert doc["node"]["workers"] == 2 and doc["node"]["workers_reporting"] == 2

    cache.restart()
    doc = api(cache)
    assert doc["summary"]["day"]["requests"] == requests  # from DATA/stats.sqlite3
    assert doc["top_images"]["by_pulls"][0]["pulls"] == requests


def test_dashboard_behind_the_registry_logins_and_configurable(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer], tmp_path: Path
) -> None:
    from tests.integration.test_client_auth import PASSWORD, htpasswd_file

    users = htpasswd_file(tmp_path / "htpasswd", "alice")
    cache = make_cache("--upstream", f"docker.io={upstream.url}", "--htpasswd", str(users))
    for path in ("/", "/api/v1/stats", "/api/v1/fills", "/api/v1/history", "/dashboard/parts"):
        refused = get(cache.url + path)
        assert refused.status == 401 and "Basic" in refused.headers["WWW-Authenticate"], path
    login = urllib3.make_headers(basic_auth=f"alice:{PASSWORD}")
    assert get(cache.url + "/", **login).status == 200
    assert get(cache.url + "/static/dashboard.js").status == 200  # holds no data
    assert get(cache.url + "/registries.yaml").status == 200  # client configs stay open
    assert get(cache.url + "/api/v1/history?range=year", **login).status == 400

    env = {"REGISTRY_CACHE_DASHBOARD_AUTH": "false"}
    open_cache = make_cache(
        "--upstream", f"docker.io={upstream.url}", "--htpasswd", str(users), env=env
    )
    assert get(open_cache.url + "/api/v1/stats").status == 200
    assert get(open_cache.url + "/v2/").status == 401  # the registry still asks
    page = get(open_cache.url + "/")
    assert page.status == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "containerd/docker.io/hosts.toml" in page.data.decode()  # config pages linked


def test_names_from_requests_are_escaped(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]
) -> None:
    cache = make_cache("--upstream", f"docker.io={upstream.url}")
    refused = get(f"{cache.url}/v2/library/a/manifests/%3Cimg%20src=x%20onerror=alert(1)%3E")
    assert refused.status == 404
    body = get(cache.url + "/").data.decode()
    assert "<img" not in body
    assert "library/a:&lt;img src=x onerror=alert(1)&gt;" in body


def test_status_prints_the_same_picture_in_a_pipe(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer], tmp_path: Path
) -> None:
    from tests.integration.test_client_auth import PASSWORD, htpasswd_file

    long_repo = "team/" + "very-long-repository-name-" * 6 + "end"
    image = build_image("dash-status", layers=1)
    push(upstream.url, long_repo, "1.0", image)
    users = htpasswd_file(tmp_path / "htpasswd", "ops")
    cache = make_cache("--upstream", f"docker.io={upstream.url}", "--htpasswd", str(users))
    login = urllib3.make_headers(basic_auth=f"ops:{PASSWORD}")
    assert get(f"{cache.url}/v2/{long_repo}/manifests/1.0", **login).status == 200
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n")
    creds = ["--login", "ops", "--password-file", str(password_file)]

    refused = cache_cli(cache, "status", "--cache", cache.url)
    assert refused.returncode == 1 and "asks for a login" in refused.stderr
    assert "Traceback" not in refused.stderr and refused.stderr.count("\n") == 1

    shown = cache_cli(cache, "status", "--cache", cache.url, *creds)
    assert shown.returncode == 0, shown.stderr
    assert f"docker.io/{long_repo}" in shown.stdout  # whole, though far wider than 80 columns
    assert "…" not in shown.stdout
    assert "reachable" in shown.stdout and "Traffic" in shown.stdout

    as_json = cache_cli(cache, "status", "--cache", cache.url, "--json", *creds)
    doc = json.loads(as_json.stdout)
    assert doc["summary"]["hour"]["pulls"] == 1
    assert doc["top_images"]["by_pulls"][0]["repository"] == long_repo

    watched = cache_cli(
        cache, "status", "--cache", cache.url, "--watch", "--count", "2", "--interval", "1", *creds
    )
    assert watched.returncode == 0 and watched.stdout.count("Traffic") == 2

    proc = subprocess.Popen(
        [sys.executable, "-m", "registry_cache", "status", "--cache", cache.url, "--watch", *creds],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        cwd=tmp_path,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "Traffic" in proc.stdout.readline() + proc.stdout.readline() + proc.stdout.readline()
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        # Read what it still writes while it exits: a child blocked on a full pipe
        # would never get there (once, on a loaded machine, it had not after 10 s).
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_dashboard_off_counts_nothing_and_answers_404_at_its_paths(
    upstream: UpstreamRegistry, make_cache: Callable[..., CacheServer]
) -> None:
    image = build_image("dash-off", layers=1)
    push(upstream.url, "library/off", "1.0", image)
    cache = make_cache("--upstream", f"docker.io={upstream.url}", "--no-dashboard")
    assert pull(cache, "library/off", "1.0", image) == ["MISS"] * 3  # the cache itself works
    for blob in image.blobs:
        assert cache.wait_for_blob(blob.digest, 10).exists()
    assert pull(cache, "library/off", "1.0", image) == ["HIT"] * 3
    for path in ("/", "/api/v1/stats", "/api/v1/fills", "/api/v1/history", "/dashboard/parts"):
        refused = get(cache.url + path)
        assert refused.status == 404, path
        assert json.loads(refused.data)["errors"][0]["code"] == "DASHBOARD_OFF", path
    assert get(cache.url + "/static/dashboard.js").status == 404
    assert get(cache.url + "/metrics").status == 200  # Prometheus counts on regardless
    assert get(cache.url + "/registries.yaml").status == 200
    status = cache_cli(cache, "status", "--cache", cache.url)
    assert status.returncode == 1 and "dashboard off" in status.stderr
    assert "Traceback" not in status.stderr and status.stderr.count("\n") == 1
    cache.stop()  # its last flush would have written the history file by now
    assert not (cache.data_dir / "stats.sqlite3").exists()

    env = {"REGISTRY_CACHE_DASHBOARD": "false"}  # the same from the environment
    from_env = make_cache("--upstream", f"docker.io={upstream.url}", env=env)
    assert get(from_env.url + "/api/v1/stats").status == 404
    assert get(from_env.url + "/v2/").status == 200
