"""Configuration: embedded defaults < config file < environment (.env) < CLI flags.

Loaded once into frozen pydantic objects and passed explicitly; nothing reads the
environment after start-up. Every validation problem becomes one ``ConfigError``
line that names the offending key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .units import parse_duration, parse_size

DEFAULT_UPSTREAMS: dict[str, str] = {
    "docker.io": "https://registry-1.docker.io",
    "ghcr.io": "https://ghcr.io",
    "quay.io": "https://quay.io",
}
# The seed's .env names, mapped to the upstream they authenticate.
SEED_CREDENTIALS: dict[str, str] = {
    "DOCKERHUB": "docker.io",
    "GHCR": "ghcr.io",
    "QUAY": "quay.io",
}
# Plain settings that may come from the environment: REGISTRY_CACHE_<KEY>.
ENV_SETTINGS = (
    "listen",
    "data_dir",
    "domain",
    "default_upstream",
    "tag_ttl",
    "workers",
    "log_level",
    "max_size",
    "max_disk_percent",
    "max_age",
    "shutdown_grace",
    "tls_cert",
    "tls_key",
    "htpasswd",
    "dashboard_auth",
)
ENV_PREFIX = "REGISTRY_CACHE_"
UPSTREAM_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _duration(value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


class UpstreamConfig(BaseModel):
    """One registry the cache mirrors, addressed by ``name`` (what clients call it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    url: str
    username: str | None = None
    password: SecretStr | None = None
    tag_ttl: float | None = Field(default=None, description="seconds; None = global")
    connect_timeout: float = 5.0
    # Waiting for response headers: well under containerd's 30 s, so a hanging
    # upstream becomes a prompt 503 (or a stale tag) rather than a client timeout.
    header_timeout: float = 10.0
    read_timeout: float = 60.0  # a blob body may stall this long per read (then: Range resume)
    # Docker Hub keeps official images under library/; default on for docker.io only.
    library_prefix: bool | None = None
    # Repositories (as upstream names them, library/ included) served through this
    # upstream: deny wins; with allow set, nothing else. fnmatch globs; * spans "/".
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    @field_validator("tag_ttl", "connect_timeout", "header_timeout", "read_timeout", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return None if value is None else _duration(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not UPSTREAM_NAME_RE.fullmatch(value):
            raise ValueError(f"invalid upstream name {value!r} (a registry host name)")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError(f"invalid URL {value!r} (http:// or https://host[:port])")
        return value.rstrip("/")

    @field_validator("allow", "deny", mode="before")
    @classmethod
    def _patterns(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple) and not all(isinstance(p, str) and p for p in value):
            raise ValueError("repository patterns must be non-empty strings")
        return value

    @property
    def uses_library_prefix(self) -> bool:
        return self.name == "docker.io" if self.library_prefix is None else self.library_prefix

    def serves(self, repository: str) -> bool:
        """Whether ``repository`` may be pulled through this upstream (allow/deny)."""
        if any(fnmatchcase(repository, pattern) for pattern in self.deny):
            return False
        return not self.allow or any(fnmatchcase(repository, p) for p in self.allow)

    @property
    def has_credentials(self) -> bool:
        return bool(self.username and self.password)


class Settings(BaseModel):
    """Everything ``serve`` and the other commands need, validated and immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: str = "0.0.0.0:5000"
    data_dir: Path = Path("data")
    domain: str | None = None
    default_upstream: str | None = "docker.io"
    tag_ttl: float = 300.0
    workers: int = Field(default=1, ge=1, le=64)
    log_level: str = "info"
    # A fill keeps going after its last client left, for at most this long.
    fill_timeout: float = 900.0
    # SIGTERM: stop accepting, let in-flight responses finish this long, then exit.
    shutdown_grace: float = 30.0
    # Bounded disk (issue: lifecycle); 0/None = unbounded.
    max_size: int | None = None
    max_disk_percent: float | None = Field(default=None, gt=0, le=100)
    max_age: float | None = None
    # Never evict what was written or accessed this recently (store/evict.py).
    evict_grace: float = 30.0
    # Hysteresis: above evict_at_percent of a limit, evict down to evict_to_percent.
    evict_at_percent: float = Field(default=95.0, gt=0, le=100)
    evict_to_percent: float = Field(default=90.0, gt=0, le=100)
    # Clients must authenticate (HTTP Basic) against these bcrypt entries; None: open.
    htpasswd: Path | None = None
    # The dashboard and /api/v1 ask for those logins too (None: yes when htpasswd is set).
    dashboard_auth: bool | None = None
    # Serve HTTPS with this certificate (chain) and key, both PEM; None: plain HTTP.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    upstreams: dict[str, UpstreamConfig] = Field(default_factory=dict)

    @field_validator("tag_ttl", "fill_timeout", "shutdown_grace", "evict_grace", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return _duration(value)

    @field_validator("max_age", mode="before")
    @classmethod
    def _max_age(cls, value: Any) -> Any:
        return None if value in (None, "", 0, "0") else _duration(value)

    @field_validator("max_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        if value in (None, "", 0, "0"):
            return None
        try:
            return parse_size(value)
        except ValueError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.lower() not in LOG_LEVELS:
            raise ValueError(f"invalid log level {value!r} (one of {', '.join(LOG_LEVELS)})")
        return value.lower()

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().lower().strip(".")
        if not UPSTREAM_NAME_RE.fullmatch(value):
            raise ValueError(f"invalid domain {value!r}")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together (both or neither)")
        return self

    @model_validator(mode="after")
    def _dashboard_auth_needs_logins(self) -> Settings:
        if self.dashboard_auth and self.htpasswd is None:
            raise ValueError("dashboard_auth: true needs htpasswd (there are no logins to ask for)")
        return self

    @property
    def dashboard_login(self) -> bool:
        """Whether the dashboard asks for the clients' logins."""
        return self.htpasswd is not None and self.dashboard_auth is not False

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"

    @model_validator(mode="after")
    def _watermarks_ordered(self) -> Settings:
        if self.evict_to_percent >= self.evict_at_percent:
            raise ValueError(
                f"evict_to_percent ({self.evict_to_percent:g}) must be below "
                f"evict_at_percent ({self.evict_at_percent:g})"
            )
        return self

    @model_validator(mode="after")
    def _default_upstream_known(self) -> Settings:
        if self.default_upstream is not None and self.default_upstream not in self.upstreams:
            raise ValueError(
                f"default_upstream {self.default_upstream!r} is not a configured upstream"
            )
        return self

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    def ttl_for(self, upstream: UpstreamConfig) -> float:
        return self.tag_ttl if upstream.tag_ttl is None else upstream.tag_ttl


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:5000`` for IPv6; ``:5000`` = all interfaces)."""
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]*):(\d{1,5})", value.strip())
    if not match or not 0 <= int(match.group(2)) <= 65535:
        raise ValueError(f"invalid listen address {value!r} (expected HOST:PORT)")
    host = match.group(1).strip("[]") or "0.0.0.0"
    return host, int(match.group(2))


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return data


def read_environment(environ: Mapping[str, str], dotenv: Path | None) -> dict[str, str]:
    """The process environment over the seed's ``.env`` (real variables win)."""
    merged: dict[str, str] = {}
    if dotenv is not None and dotenv.is_file():
        for key, value in dotenv_values(dotenv).items():
            if value is not None:
                merged[key] = value
    merged.update(environ)
    # The seed's .env leaves credentials blank; blank means unset.
    return {k: v for k, v in merged.items() if v.strip() != ""}


def env_layer(env: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    if "REGISTRY_DOMAIN" in env:
        layer["domain"] = env["REGISTRY_DOMAIN"]
    for key in ENV_SETTINGS:
        name = ENV_PREFIX + key.upper()
        if name in env:
            layer[key] = env[name]
    upstreams: dict[str, dict[str, Any]] = {}
    for prefix, upstream in SEED_CREDENTIALS.items():
        creds = {
            field: env[f"{prefix}_{field.upper()}"]
            for field in ("username", "password")
            if f"{prefix}_{field.upper()}" in env
        }
        if creds:
            upstreams[upstream] = creds
    if upstreams:
        layer["upstreams"] = upstreams
    return layer


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _normalise_upstreams(raw: Any) -> dict[str, Any]:
    """Accept ``name: URL`` shorthand and ``name: {enabled: false}`` / ``none`` to drop one."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError("upstreams: must be a mapping of name -> URL or settings")
    result: dict[str, Any] = {}
    for name, given in raw.items():
        if given is None or given in ("none", False):
            continue
        if isinstance(given, str):
            given = {"url": given}  # noqa: PLW2901 - shorthand expanded in place
        if not isinstance(given, Mapping):
            raise ConfigError(f"upstreams.{name}: must be a URL or a mapping")
        spec = dict(given)
        if spec.pop("enabled", True) is False:
            continue
        if "url" not in spec:
            if name in DEFAULT_UPSTREAMS:
                spec["url"] = DEFAULT_UPSTREAMS[name]
            else:
                raise ConfigError(f"upstreams.{name}.url: required for a non-default upstream")
        spec["name"] = str(name)
        result[str(name)] = spec
    return result


def build_settings(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    dotenv: Path | None = Path(".env"),
    flags: Mapping[str, Any] | None = None,
    upstream_flags: list[str] | tuple[str, ...] = (),
) -> Settings:
    """Merge every layer and validate; raise ``ConfigError`` with one clear line."""
    env = read_environment(os.environ if environ is None else environ, dotenv)
    if config_file is None and ENV_PREFIX + "CONFIG" in env:
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    raw: dict[str, Any] = {
        "upstreams": {name: {"url": url} for name, url in DEFAULT_UPSTREAMS.items()}
    }
    if config_file is not None:
        raw = _merge(raw, read_config_file(config_file))
    raw = _merge(raw, env_layer(env))
    for key, value in (flags or {}).items():
        if value is not None:
            raw[key] = value
    raw["upstreams"] = _apply_upstream_flags(raw.get("upstreams"), upstream_flags)
    raw["upstreams"] = _normalise_upstreams(raw["upstreams"])
    if isinstance(raw.get("default_upstream"), str) and raw["default_upstream"].lower() in (
        "none",
        "",
    ):
        raw["default_upstream"] = None
    ttl_override = (flags or {}).get("tag_ttl")
    if ttl_override is not None:
        for spec in raw["upstreams"].values():
            spec.pop("tag_ttl", None)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def _apply_upstream_flags(raw: Any, flags: list[str] | tuple[str, ...]) -> Any:
    if not flags:
        return raw
    upstreams = dict(raw or {})
    for flag in flags:
        name, sep, url = flag.partition("=")
        if not sep or not name:
            raise ConfigError(f"--upstream {flag!r}: expected NAME=URL (or NAME=none)")
        if url.lower() == "none":
            upstreams[name] = None
            continue
        current = upstreams.get(name)
        spec = dict(current) if isinstance(current, Mapping) else {}
        spec["url"] = url
        upstreams[name] = spec
    return upstreams


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem, as ``key.path: message`` on one line."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    if loc and loc[0] == "upstreams" and len(loc) >= 2:
        path = "upstreams." + ".".join(loc[1:])
    else:
        path = ".".join(loc) or "config"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown setting"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"invalid configuration: {path}: {message}{suffix}"
