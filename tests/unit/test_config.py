"""Configuration layers: defaults < file < env (.env) < flags, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry_cache.config import build_settings
from registry_cache.errors import ConfigError


def test_embedded_defaults() -> None:
    s = build_settings(environ={}, dotenv=None)
    assert s.listen == "0.0.0.0:5000" and (s.host, s.port) == ("0.0.0.0", 5000)
    assert s.data_dir == Path("data")
    assert {n: u.url for n, u in s.upstreams.items()} == {
        "docker.io": "https://registry-1.docker.io",
        "ghcr.io": "https://ghcr.io",
        "quay.io": "https://quay.io",
    }
    assert s.default_upstream == "docker.io" and s.domain is None
    assert s.tag_ttl == 300


def test_seed_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "REGISTRY_DOMAIN=registry.example.com\n"
        "DOCKERHUB_USERNAME=alice\nDOCKERHUB_PASSWORD=pw1\n"
        "GHCR_USERNAME=\nGHCR_PASSWORD=\n"
        "QUAY_USERNAME=bob\nQUAY_PASSWORD=pw2\n"
    )
    s = build_settings(environ={}, dotenv=dotenv)
    assert s.domain == "registry.example.com"
    hub = s.upstreams["docker.io"]
    assert hub.username == "alice" and hub.password is not None
    assert hub.password.get_secret_value() == "pw1"
    assert s.upstreams["ghcr.io"].username is None  # blank means unset
    assert s.upstreams["quay.io"].has_credentials
    assert "pw1" not in repr(s) and "pw1" not in str(s.model_dump())


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "listen: 127.0.0.1:6000\ndomain: file.example\ntag_ttl: 1h\n"
        "upstreams:\n  docker.io:\n    tag_ttl: 10m\n  internal.example:\n"
        "    url: https://reg.internal.example\n    username: u\n    password: p\n"
    )
    env = {"REGISTRY_DOMAIN": "env.example", "REGISTRY_CACHE_LISTEN": "127.0.0.1:7000"}
    s = build_settings(config_file=config, environ=env, dotenv=None)
    assert s.domain == "env.example" and s.listen == "127.0.0.1:7000" and s.tag_ttl == 3600
    assert s.ttl_for(s.upstreams["docker.io"]) == 600
    assert s.ttl_for(s.upstreams["ghcr.io"]) == 3600
    assert s.upstreams["internal.example"].url == "https://reg.internal.example"
    s = build_settings(
        config_file=config, environ=env, dotenv=None, flags={"listen": ":8000", "tag_ttl": "30s"}
    )
    assert s.listen == ":8000" and s.host == "0.0.0.0"
    # --tag-ttl is a flag: it beats every per-upstream TTL from the file.
    assert s.ttl_for(s.upstreams["docker.io"]) == 30


def test_real_environment_beats_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("REGISTRY_DOMAIN=dotenv.example\n")
    s = build_settings(environ={"REGISTRY_DOMAIN": "real.example"}, dotenv=dotenv)
    assert s.domain == "real.example"


def test_upstream_flags_add_override_remove() -> None:
    s = build_settings(
        environ={},
        dotenv=None,
        upstream_flags=["docker.io=http://127.0.0.1:5001", "quay.io=none", "r.example=https://r"],
    )
    assert s.upstreams["docker.io"].url == "http://127.0.0.1:5001"
    assert "quay.io" not in s.upstreams
    assert s.upstreams["r.example"].url == "https://r"


def test_config_file_can_disable_a_default(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("upstreams:\n  quay.io: {enabled: false}\n  ghcr.io: null\n")
    s = build_settings(config_file=config, environ={}, dotenv=None)
    assert list(s.upstreams) == ["docker.io"]


@pytest.mark.parametrize(
    ("content", "flags", "message"),
    [
        ("tag_ttl: soon\n", {}, "tag_ttl"),
        ("bogus: 1\n", {}, "bogus (bogus: 1 in "),
        ("upstreams:\n  docker.io:\n    url: ftp://x\n", {}, "upstreams.docker.io.url"),
        ("upstreams:\n  other.example: {}\n", {}, "upstreams.other.example.url"),
        ("upstreams:\n  docker.io:\n    read_timeout: x\n", {}, "upstreams.docker.io.read_timeout"),
        ("listen: nope\n", {}, "listen"),
        ("workers: 0\n", {}, "workers"),
        ("default_upstream: nowhere.example\n", {}, "default_upstream"),
        ("[unclosed\n", {}, "(line 2)"),
        ("- a list\n", {}, "top level must be a mapping"),
        ("", {"log_level": "loud"}, "log_level"),
        ("evict_at_percent: 80\nevict_to_percent: 85\n", {}, "must be below evict_at_percent"),
        ("evict_to_percent: 0\n", {}, "evict_to_percent"),
        ("evict_at_percent: 120\n", {}, "evict_at_percent"),
    ],
)
def test_invalid_config_is_one_line(
    tmp_path: Path, content: str, flags: dict[str, str], message: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(content)
    with pytest.raises(ConfigError) as info:
        build_settings(config_file=config, environ={}, dotenv=None, flags=flags)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        build_settings(config_file=Path("/nonexistent/x.yaml"), environ={}, dotenv=None)


def test_bad_upstream_flag() -> None:
    with pytest.raises(ConfigError, match="NAME=URL"):
        build_settings(environ={}, dotenv=None, upstream_flags=["nourl"])


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("workers: 3\n")
    s = build_settings(environ={"REGISTRY_CACHE_CONFIG": str(config)}, dotenv=None)
    assert s.workers == 3


def test_readme_config_example_is_valid(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("```yaml\nlisten:") + len("```yaml\n")
    example = readme[start : readme.index("```", start)]
    config = tmp_path / "c.yaml"
    config.write_text(example)
    s = build_settings(config_file=config, environ={}, dotenv=None)
    assert s.workers == 2 and s.max_size == 200 << 30 and "quay.io" not in s.upstreams
    assert s.upstreams["gcr.io"].url == "https://gcr.io"
    assert s.ttl_for(s.upstreams["docker.io"]) == 600
    assert not s.upstreams["registry.internal.example"].uses_library_prefix
