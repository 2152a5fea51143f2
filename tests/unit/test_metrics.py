"""The metrics module: label mapping, hook parsing, the text exposition."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from registry_cache import metrics


def sample(name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_request_kinds() -> None:
    assert metrics.request_kind("/v2/library/a/manifests/1") == "manifest"
    assert metrics.request_kind("/v2/ghcr.io/o/blobs/x/blobs/sha256:ab") == "blob"
    assert metrics.request_kind("/v2/a/tags/list") == "tags"
    assert metrics.request_kind("/v2/a/referrers/sha256:ab") == "referrers"
    assert metrics.request_kind("/v2/_catalog") == "catalog"
    assert metrics.request_kind("/metrics") == "other"


def test_counters_and_labels() -> None:
    before = sample("registry_cache_requests_total", kind="blob", cache="HIT", status="2xx")
    metrics.observe_request("/v2/a/blobs/sha256:ab", "HIT", 206)
    metrics.observe_request("/v2/a/blobs/sha256:ab", None, 503)
    after = sample("registry_cache_requests_total", kind="blob", cache="HIT", status="2xx")
    assert after == before + 1
    assert sample("registry_cache_requests_total", kind="blob", cache="NONE", status="5xx") >= 1


def test_ratelimit_hook_parses_docker_hub_header() -> None:
    metrics.ratelimit("docker.io", "76;w=21600")
    assert sample("registry_cache_upstream_ratelimit_remaining", upstream="docker.io") == 76
    metrics.ratelimit("docker.io", "garbage")  # ignored, the last good value stays
    assert sample("registry_cache_upstream_ratelimit_remaining", upstream="docker.io") == 76
