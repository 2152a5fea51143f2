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
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .bucket.location import BucketLocation
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
    "log_format",
    "client_header_timeout",
    "max_connections",
    "max_size",
    "max_disk_percent",
    "max_age",
    "shutdown_grace",
    "tls_cert",
    "tls_key",
    "htpasswd",
    "index",
    "index_password",
    "index_password_file",
    "advertise",
    "cluster_secret",
    "cluster_secret_file",
    "dashboard",
    "dashboard_auth",
    "storage",
    "s3_endpoint",
    "s3_region",
    "s3_path_style",
    "s3_ca_file",
    "shared_max_size",
    "redirect_hits",
)
# The region of the bucket when neither s3_region nor REGISTRY_CACHE_S3_REGION says it.
AWS_REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")
ENV_PREFIX = "REGISTRY_CACHE_"
UPSTREAM_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
LOG_LEVELS = ("debug", "info", "warning", "error")
# A token realm listed per upstream: a host name or address, optionally with a port.
REALM_HOST_RE = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?|\[[0-9a-f:.]+\](:\d{1,5})?")
# The authority part of a URL (after an optional scheme), where userinfo would sit.
_AUTHORITY_RE = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:)?//([^/?#]*)|^([^/?#]*)")
# Upstream bodies read into memory (manifests, referrers, tag lists) are capped: the
# distribution registry itself refuses manifests over 4 MiB.
DEFAULT_BODY_CAP = 4 << 20
MIN_BODY_CAP = 1 << 10
LOG_FORMATS = ("text", "json")


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
    # Hosts besides the upstream's own registrable domain whose Bearer token realm may
    # receive username/password (upstream/origin.py has the rule).
    token_realms: tuple[str, ...] = ()
    # A tags/list answer larger than this is a 502 (or the cached tags), never read whole.
    tag_list_max_bytes: int = DEFAULT_BODY_CAP

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
    def _url(cls, value: str, info: ValidationInfo) -> str:
        # Before anything that could echo the value: it may hold a password.
        if has_userinfo(value):
            name = info.data.get("name", "<name>")
            raise ValueError(
                f"credentials in the URL are not allowed; use upstreams.{name}.username/password"
            )
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError(f"invalid URL {value!r} (http:// or https://host[:port])")
        return value.rstrip("/")

    @field_validator("token_realms", mode="before")
    @classmethod
    def _realms(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            return value
        hosts = []
        for item in value:
            host = item.strip().lower() if isinstance(item, str) else ""
            if not REALM_HOST_RE.fullmatch(host):
                raise ValueError(
                    f"invalid token realm host {str(item)[:100]!r} "
                    "(a host name, optionally :port, not a URL)"
                )
            hosts.append(host)
        return tuple(hosts)

    @field_validator("tag_list_max_bytes", mode="before")
    @classmethod
    def _cap(cls, value: Any) -> Any:
        try:
            size = parse_size(value)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if size < MIN_BODY_CAP:
            raise ValueError(f"{size} bytes is too small (at least 1KiB)")
        return size

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
    log_format: str = "text"
    # A connection must send complete request headers this long after it was
    # accepted or its previous response ended (so idle keep-alive ones close too).
    client_header_timeout: float = 30.0
    # Per worker; beyond it new connections are closed at once (web/connections.py).
    max_connections: int = Field(default=4096, ge=1)
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
    # The dashboard (GET /, /api/v1) and its per-request counting; false: neither (404 there).
    dashboard: bool = True
    # The dashboard and /api/v1 ask for those logins too (None: yes when htpasswd is set).
    dashboard_auth: bool | None = None
    # Serve HTTPS with this certificate (chain) and key, both PEM; None: plain HTTP.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    upstreams: dict[str, UpstreamConfig] = Field(default_factory=dict)
    # Cluster mode (README "Scaling out"): a PostgreSQL index shared by replicas.
    # None: SQLite in the data directory, one machine.
    index: str | None = None
    index_password: SecretStr | None = None
    index_password_file: Path | None = None
    # How the other replicas reach this one (http://10.0.0.5:5000); required with a
    # PostgreSQL index, as is the secret that guards the replicas' internal endpoint.
    advertise: str | None = None
    cluster_secret: SecretStr | None = None
    cluster_secret_file: Path | None = None
    # key → where its value came from, with the value ("REGISTRY_CACHE_DATA_DIR=d"),
    # for error messages that name it (set by build_settings).
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    def origin(self, key: str) -> str:
        """``--data-dir d``, ``REGISTRY_CACHE_DATA_DIR=d``, ``data_dir: d in /x.yaml`` or
        ``default data_dir: data``."""
        return self._origins.get(key) or f"default {key}: {getattr(self, key, None)}"

    # The shared content tier (README "Scaling out"): s3://BUCKET/PREFIX; None: the
    # data directory only. Credentials come from the AWS chain, never from here.
    storage: str | None = None
    s3_endpoint: str | None = None  # None: AWS S3 itself
    s3_region: str | None = None
    s3_path_style: bool | None = None  # None: path-style with an endpoint, else virtual hosts
    s3_ca_file: Path | None = None  # TLS verification against this CA bundle (always on)
    shared_max_size: int | None = None  # the bucket's cap, least recently used across replicas
    redirect_hits: bool = False  # blob GETs: 307 to a presigned URL when the bucket holds it

    @field_validator("tag_ttl", "fill_timeout", "shutdown_grace", "evict_grace", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return _duration(value)

    @field_validator("client_header_timeout", mode="before")
    @classmethod
    def _positive_duration(cls, value: Any) -> Any:
        seconds = _duration(value)
        if seconds <= 0:
            raise ValueError(f"must be above zero, not {value!r}")
        return seconds

    @field_validator("max_age", mode="before")
    @classmethod
    def _max_age(cls, value: Any) -> Any:
        return None if value in (None, "", 0, "0") else _duration(value)

    @field_validator("max_size", "shared_max_size", mode="before")
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

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value.lower() not in LOG_FORMATS:
            raise ValueError(f"invalid log format {value!r} (one of {', '.join(LOG_FORMATS)})")
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

    @field_validator("index")
    @classmethod
    def _index(cls, value: str | None) -> str | None:
        if value is None or not value.strip() or value.strip().lower() == "sqlite":
            return None
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise ValueError(
                "expected postgresql://USER@HOST:PORT/DATABASE (or sqlite, the default)"
            )
        if parts.password is not None:
            raise ValueError(
                "a password in the URL is not allowed: use index_password_file"
                " (or REGISTRY_CACHE_INDEX_PASSWORD)"
            )
        return value

    @field_validator("advertise")
    @classmethod
    def _advertise(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.password:
            raise ValueError(f"expected http(s)://HOST:PORT, got {value[:100]!r}")
        if parts.path:
            raise ValueError(f"expected http(s)://HOST:PORT without a path, got {value[:100]!r}")
        return value

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str | None) -> str | None:
        if value is None or not value.strip() or value.strip().lower() in ("none", "local"):
            return None
        return BucketLocation.parse(value).url

    @field_validator("s3_endpoint")
    @classmethod
    def _s3_endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if has_userinfo(value):
            raise ValueError(
                "credentials in the URL are not allowed: they come from the AWS environment"
            )
        if not re.fullmatch(r"https?://[^\s/?#@]+", value):
            raise ValueError(f"expected http(s)://HOST[:PORT], got {value[:100]!r}")
        return value

    @field_validator("s3_region")
    @classmethod
    def _s3_region(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", value.strip()):
            raise ValueError(f"invalid region {value[:70]!r} (e.g. us-east-1)")
        return value.strip()

    @property
    def bucket(self) -> BucketLocation | None:
        """Where the shared tier lives, if configured."""
        if self.storage is None:
            return None
        return BucketLocation.parse(self.storage)

    @property
    def path_style(self) -> bool:
        return self.s3_endpoint is not None if self.s3_path_style is None else self.s3_path_style

    @model_validator(mode="after")
    def _cluster_complete(self) -> Settings:
        if self.index is None:
            return self
        if self.advertise is None:
            raise ValueError(
                "advertise: required with a PostgreSQL index (cluster mode): how the other"
                " replicas reach this one, e.g. http://10.0.0.5:5000"
            )
        if self.cluster_secret is None and self.cluster_secret_file is None:
            raise ValueError(
                "cluster_secret_file: required with a PostgreSQL index (cluster mode), the"
                " same on every replica (or REGISTRY_CACHE_CLUSTER_SECRET)"
            )
        return self

    @property
    def clustered(self) -> bool:
        return self.index is not None

    def index_secret(self) -> str | None:
        """The PostgreSQL password: index_password, else the file's first line."""
        return _secret(self.index_password, self.index_password_file, "index_password_file")

    def cluster_key(self) -> str:
        """The cluster secret (ConfigError when it is unset, unreadable or too short)."""
        secret = _secret(self.cluster_secret, self.cluster_secret_file, "cluster_secret_file")
        if secret is None or len(secret) < 16:
            raise ConfigError(
                "invalid configuration: cluster_secret: at least 16 characters"
                " (e.g. openssl rand -hex 32 > FILE)"
            )
        return secret

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together (both or neither)")
        return self

    @model_validator(mode="after")
    def _dashboard_auth_needs_logins(self) -> Settings:
        if self.dashboard_auth and self.htpasswd is None:
            raise ValueError("dashboard_auth: true needs htpasswd (there are no logins to ask for)")
        if self.dashboard_auth and not self.dashboard:
            raise ValueError("dashboard_auth: true needs the dashboard (dashboard: false is set)")
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


def _secret(value: SecretStr | None, path: Path | None, key: str) -> str | None:
    if value is not None:
        return value.get_secret_value()
    if path is None:
        return None
    try:
        text = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(
            f"invalid configuration: {key}: cannot read {path.absolute()}: {exc.strerror or exc}"
        ) from None
    return text[0].strip() if text and text[0].strip() else None


def has_userinfo(url: str) -> bool:
    """Whether ``url`` carries ``user[:password]@`` before its host."""
    match = _AUTHORITY_RE.match(url.strip())
    authority = (match.group(1) if match.group(1) is not None else match.group(2)) if match else ""
    return "@" in (authority or "")


def redact_userinfo(text: str) -> str:
    """``text`` with anything that looks like URL userinfo replaced by ``***``."""
    return re.sub(r"(//|^|=)[^\s/@=]*@", r"\1***@", text)


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:5000`` for IPv6; ``:5000`` = all interfaces)."""
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]*):(\d{1,5})", value.strip())
    if not match or not 0 <= int(match.group(2)) <= 65535:
        raise ValueError(f"invalid listen address {value!r} (expected HOST:PORT)")
    host = match.group(1).strip("[]") or "0.0.0.0"
    return host, int(match.group(2))


def read_config_file(path: Path) -> dict[str, Any]:
    import yaml  # only with a config file: start-up of every command pays for imports

    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path.absolute()}: {exc.strerror or exc}"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file {path.absolute()}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path.absolute()}: top level must be a mapping")
    return data


def read_environment(environ: Mapping[str, str], dotenv: Path | None) -> dict[str, str]:
    """The process environment over the seed's ``.env`` (real variables win)."""
    merged: dict[str, str] = {}
    if dotenv is not None and dotenv.is_file():
        from dotenv import dotenv_values  # only when there is a .env (start-up time)

        for key, value in dotenv_values(dotenv).items():
            if value is not None:
                merged[key] = value
    merged.update(environ)
    # The seed's .env leaves credentials blank; blank means unset.
    return {k: v for k, v in merged.items() if v.strip() != ""}


def env_name(key: str) -> str:
    """The variable of a setting: ``REGISTRY_CACHE_<KEY>`` (the seed's REGISTRY_DOMAIN)."""
    return "REGISTRY_DOMAIN" if key == "domain" else ENV_PREFIX + key.upper()


def known_env_names() -> list[str]:
    """Every ``REGISTRY_CACHE_*`` variable the program reads (from ENV_SETTINGS)."""
    return [ENV_PREFIX + "CONFIG", *(ENV_PREFIX + key.upper() for key in ENV_SETTINGS)]


def unknown_env_warnings(env: Mapping[str, str]) -> list[str]:
    """One line per unknown ``REGISTRY_CACHE_*`` variable, naming the closest known one."""
    known = known_env_names()
    unknown = sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in known)
    if not unknown:
        return []
    import difflib  # only now: every command builds settings at start-up

    # Compared without the shared prefix, which would make every name look close.
    suffixes = [name.removeprefix(ENV_PREFIX) for name in known]
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1)
        hint = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""
        lines.append(f"{name} is not a known setting{hint}")
    return lines


def env_layer(env: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    if "REGISTRY_DOMAIN" in env:
        layer["domain"] = env["REGISTRY_DOMAIN"]
    for key in ENV_SETTINGS:
        name = env_name(key)
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


_SECRET_KEY = re.compile(r"password|secret|token", re.IGNORECASE)
_USERINFO = re.compile(r"(://[^/@\s:]*):[^/@\s]*@")


def _shown(key: str, value: Any) -> str:
    """A value as an error message may show it: never a secret, nor a URL's password."""
    if _SECRET_KEY.search(key):
        return "********"
    return _USERINFO.sub(r"\1:********@", str(value))


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
    origins: dict[str, str] = {}
    if config_file is not None:
        from_file = read_config_file(config_file)
        where = config_file.absolute()
        origins.update(
            {str(k): f"{k}: {_shown(str(k), v)} in {where}" for k, v in from_file.items()}
        )
        raw = _merge(raw, from_file)
    from_env = env_layer(env)
    origins.update({k: f"{env_name(k)}={_shown(k, v)}" for k, v in from_env.items()})
    raw = _merge(raw, from_env)
    for key, value in (flags or {}).items():
        if value is not None:
            raw[key] = value
            origins[key] = f"--{key.replace('_', '-')} {_shown(key, value)}"
    origins.pop("upstreams", None)  # holds credentials; errors there name their own path
    if raw.get("s3_region") in (None, ""):
        # The AWS SDKs' own variables, when nothing of ours names the bucket's region.
        region = next((env[name] for name in AWS_REGION_ENV if name in env), None)
        if region is not None:
            raw["s3_region"] = region
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
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, origins)) from None
    settings._origins.update(origins)
    return settings


def _apply_upstream_flags(raw: Any, flags: list[str] | tuple[str, ...]) -> Any:
    if not flags:
        return raw
    upstreams = dict(raw or {})
    for flag in flags:
        name, sep, url = flag.partition("=")
        if not sep or not name:
            shown = redact_userinfo(flag)
            raise ConfigError(f"--upstream {shown!r}: expected NAME=URL (or NAME=none)")
        if url.lower() == "none":
            upstreams[name] = None
            continue
        current = upstreams.get(name)
        spec = dict(current) if isinstance(current, Mapping) else {}
        spec["url"] = url
        upstreams[name] = spec
    return upstreams


def describe_validation_error(exc: ValidationError, origins: Mapping[str, str] = {}) -> str:
    """The first problem, as ``key.path (where it came from): message`` on one line."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    if loc and loc[0] == "upstreams" and len(loc) >= 2:
        path = "upstreams." + ".".join(loc[1:])
    else:
        path = ".".join(loc)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown setting"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    source = origins.get(loc[0]) if len(loc) == 1 else None
    if source:
        path = f"{path} ({source})"
    message = _USERINFO.sub(r"\1:********@", message)  # a validator may echo a URL
    # A check across settings (no location) names its key in the message itself.
    where = f"{path}: " if path else ""
    return f"invalid configuration: {where}{message}{suffix}"
