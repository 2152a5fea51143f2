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


def test_log_format_and_connection_limits() -> None:
    defaults = build_settings(environ={}, dotenv=None)
    assert defaults.log_format == "text" and defaults.client_header_timeout == 30
    assert defaults.max_connections == 4096
    env = {
        "REGISTRY_CACHE_LOG_FORMAT": "JSON",
        "REGISTRY_CACHE_CLIENT_HEADER_TIMEOUT": "1m",
        "REGISTRY_CACHE_MAX_CONNECTIONS": "100",
    }
    s = build_settings(environ=env, dotenv=None)
    assert s.log_format == "json" and s.client_header_timeout == 60 and s.max_connections == 100
    flags = {"client_header_timeout": "2.5s", "max_connections": 7, "log_format": "text"}
    s = build_settings(environ=env, dotenv=None, flags=flags)
    assert s.log_format == "text" and s.client_header_timeout == 2.5 and s.max_connections == 7


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
        ("", {"log_format": "xml"}, "log_format (--log-format xml): invalid log format 'xml'"),
        ("client_header_timeout: 0\n", {}, "client_header_timeout (client_header_timeout: 0 in "),
        ("client_header_timeout: soon\n", {}, "client_header_timeout"),
        ("max_connections: 0\n", {}, "max_connections"),
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
    assert s.upstreams["registry.internal.example"].token_realms == ("sso.example.net",)
    assert s.upstreams["docker.io"].tag_list_max_bytes == 16 << 20


@pytest.mark.parametrize(
    "url",
    [
        "https://robot:hunter2-pw@reg.example",
        "https://robot:hunter2-pw@reg.example/v2 with space",  # invalid otherwise too
        "robot:hunter2-pw@reg.example",  # no scheme at all
        "https://hunter2-pw@reg.example:5000",  # a bare user (or token) is a credential too
    ],
)
def test_credentials_in_an_upstream_url_are_refused(tmp_path: Path, url: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"upstreams:\n  docker.io:\n    url: '{url}'\n")
    with pytest.raises(ConfigError) as info:
        build_settings(config_file=config, environ={}, dotenv=None)
    text = str(info.value)
    assert text == (
        "invalid configuration: upstreams.docker.io.url: credentials in the URL are not "
        "allowed; use upstreams.docker.io.username/password"
    )
    with pytest.raises(ConfigError) as info:
        build_settings(environ={}, dotenv=None, upstream_flags=[f"reg.example={url}"])
    assert "upstreams.reg.example.url: credentials in the URL are not allowed" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_a_malformed_upstream_flag_never_echoes_a_password() -> None:
    with pytest.raises(ConfigError) as info:  # ':' typed for '=': not NAME=URL at all
        build_settings(environ={}, dotenv=None, upstream_flags=["x:https://u:hunter2@h"])
    assert "NAME=URL" in str(info.value) and "hunter2" not in str(info.value)


def test_token_realms_and_tag_list_cap_per_upstream(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "upstreams:\n  docker.io:\n    token_realms: [Auth.Example.COM, 'tokens.example:8443']\n"
        "    tag_list_max_bytes: 16MiB\n"
    )
    s = build_settings(config_file=config, environ={}, dotenv=None)
    hub = s.upstreams["docker.io"]
    assert hub.token_realms == ("auth.example.com", "tokens.example:8443")
    assert hub.tag_list_max_bytes == 16 << 20
    assert s.upstreams["ghcr.io"].token_realms == ()
    assert s.upstreams["ghcr.io"].tag_list_max_bytes == 4 << 20


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "token_realms: ['https://auth.example/token']",
            "upstreams.docker.io.token_realms: invalid token realm host "
            "'https://auth.example/token' (a host name, optionally :port, not a URL)",
        ),
        ("token_realms: ['']", "upstreams.docker.io.token_realms: invalid token realm host ''"),
        ("tag_list_max_bytes: lots", "upstreams.docker.io.tag_list_max_bytes: invalid size"),
        ("tag_list_max_bytes: 10", "tag_list_max_bytes: 10 bytes is too small (at least 1KiB)"),
    ],
)
def test_bad_token_realms_and_caps(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"upstreams:\n  docker.io:\n    {content}\n")
    with pytest.raises(ConfigError) as info:
        build_settings(config_file=config, environ={}, dotenv=None)
    assert message in str(info.value) and "\n" not in str(info.value)
