"""``registry-cache doctor``: is this node really pulling through the cache? Prove it.

Reads the node's runtime configuration (k3s, containerd, Docker, podman/CRI-O; every
path a flag, so it can check a copy), says per registry in plain words whether it
is mirrored to a cache and whether that cache answers, then resolves an image
through exactly the route the runtime would take and shows the cache's
``X-Registry-Cache`` mark. Each problem is named with its fix; any problem makes
the exit status 1.

Which image proves a registry: ``--image REF`` (e.g. ``docker.io/library/alpine:3.19``,
repeatable), else the cache's most pulled image of that upstream (``/api/v1/stats``);
without either the route is checked up to the cache's answer.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from ..bench.refs import RefError, parse_image
from ..doctor.nodeconfig import (
    DOCKER_HUB,
    Mirror,
    Problem,
    Runtime,
    read_containerd,
    read_docker,
    read_k3s,
    read_registries_conf,
)
from ..doctor.probe import Check, check
from .main import CliError

PathOption = click.Path(path_type=Path)


def _describe(c: Check) -> str:
    m = c.mirror
    route = {"ns": f"?ns={m.registry}", "plain": "no registry name", "prefix": "path prefix"}
    line = f"  {m.registry} → {m.base} ({route[m.style]}): "
    if not c.answered:
        return line + "mirrored, but the cache does not answer"
    login = f", logged in as {m.login[0]}" if m.login else ""
    what = "a registry-cache" if c.is_cache else "not a registry-cache"
    line += f"mirrored; it answers ({what}{login})"
    if c.proof is None and not c.problems:
        line += "\n    no image to prove it with: give --image " + m.registry + "/REPO:TAG"
    if c.proof is not None:
        p = c.proof
        line += (
            f"\n    proof: GET {p.url} → HTTP {p.status}, X-Registry-Cache: {p.cache or '(none)'}"
            + (f", served from its {p.upstream} upstream" if p.upstream else "")
        )
    return line


@click.command()
@click.option(
    "--k3s-registries",
    type=PathOption,
    default=Path("/etc/rancher/k3s/registries.yaml"),
    show_default=True,
    help="k3s's registries.yaml.",
)
@click.option(
    "--containerd-config",
    type=PathOption,
    default=Path("/etc/containerd/config.toml"),
    show_default=True,
    help="containerd's config.toml (its CRI config_path names the hosts directory).",
)
@click.option(
    "--certs-dir",
    type=PathOption,
    default=None,
    help="containerd hosts directory (<registry>/hosts.toml) [config_path, else none].",
)
@click.option(
    "--docker-config",
    type=PathOption,
    default=Path("/etc/docker/daemon.json"),
    show_default=True,
    help="Docker's daemon.json.",
)
@click.option(
    "--docker-certs-dir",
    type=PathOption,
    default=Path("/etc/docker/certs.d"),
    show_default=True,
    help="Where dockerd finds <host:port>/ca.crt.",
)
@click.option(
    "--registries-conf",
    type=PathOption,
    default=Path("/etc/containers/registries.conf"),
    show_default=True,
    help="containers registries.conf (registries.conf.d/*.conf beside it is read too).",
)
@click.option(
    "--auth-file",
    type=PathOption,
    default=None,
    help="podman/CRI-O auth.json holding the node's login to the cache.",
)
@click.option(
    "--image",
    "images",
    multiple=True,
    metavar="REF",
    help="Image to resolve through each route of its registry (repeatable).",
)
@click.option(
    "--registry",
    "registries",
    multiple=True,
    metavar="NAME",
    help="Only these registries are expected to go through the cache [every one it mirrors].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(  # noqa: PLR0917 - one parameter per click option
    k3s_registries: Path,
    containerd_config: Path,
    certs_dir: Path | None,
    docker_config: Path,
    docker_certs_dir: Path,
    registries_conf: Path,
    auth_file: Path | None,
    images: tuple[str, ...],
    registries: tuple[str, ...],
    as_json: bool,
) -> None:
    """Check that this node's container runtimes pull through the cache, and prove it."""
    wanted: dict[str, tuple[str, str]] = {}
    for text in images:
        try:
            ref = parse_image(text)
        except RefError as exc:
            raise click.BadParameter(str(exc), param_hint="--image") from None
        wanted[ref.registry] = (ref.repository, ref.reference)
    runtimes = [
        read_k3s(k3s_registries),
        read_containerd(containerd_config, certs_dir),
        read_docker(docker_config, docker_certs_dir),
        read_registries_conf(registries_conf, auth_file),
    ]
    report: list[dict[str, Any]] = []
    problems: list[Problem] = []
    lines: list[str] = []
    for runtime in runtimes:
        section = _run(runtime, wanted, set(registries))
        problems += section["problems"]
        report.append(section["json"])
        lines += section["lines"]
    if not any(r.present for r in runtimes):
        problems.append(
            Problem(
                "no container runtime configuration found",
                "none of the files given exist: "
                + ", ".join(f for r in runtimes for f in r.files[:1]),
                "run doctor on the node itself, or point --k3s-registries, --containerd-config, "
                "--docker-config or --registries-conf at its files",
            )
        )
    if as_json:
        doc = {"runtimes": report, "problems": [asdict(p) for p in problems]}
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo("\n".join(lines))
        if problems:
            click.echo(f"\nProblems found: {len(problems)}")
            for i, p in enumerate(problems, 1):
                click.echo(f"  {i}. {p.title}\n     {p.detail}\n     fix: {p.fix}")
        else:
            click.echo("\nNo problems found.")
    if problems:
        raise CliError(f"{len(problems)} problem(s) found")


def _run(
    runtime: Runtime, wanted: dict[str, tuple[str, str]], expected: set[str]
) -> dict[str, Any]:
    lines = [f"{runtime.name} ({', '.join(runtime.files)})"]
    problems = list(runtime.problems)
    checks: list[Check] = []
    if not runtime.present:
        lines.append("  not configured on this node")
    for note in runtime.notes:
        lines.append(f"  note: {note}")
    mirrored: set[str] | None = None
    for mirror in runtime.mirrors:
        c = check(mirror, _pick(mirror, wanted))
        checks.append(c)
        problems += c.problems
        lines.append(_describe(c))
        if c.upstreams is not None:
            mirrored = (mirrored or set()) | set(c.upstreams)
    if runtime.unmirrorable is not None and runtime.mirrors:
        others = sorted((expected or mirrored or set()) - {runtime.unmirrorable})
        for registry in others:
            lines.append(
                f"  {registry}: NOT mirrored (Docker's registry-mirrors apply to Docker Hub only)"
            )
            problems.append(
                Problem(
                    "Docker's mirror applying to Docker Hub only",
                    f"{runtime.files[0]}: the cache mirrors {registry}, but dockerd sends only "
                    f"Docker Hub pulls to registry-mirrors: `docker pull {registry}/…` goes "
                    "straight to that registry",
                    f"pull through the cache's name instead (`docker pull <cache>/{registry}/…`, "
                    "its path prefix), or check only Docker Hub with --registry docker.io",
                )
            )
    elif runtime.present and not runtime.mirrors and runtime.name != "Docker":
        lines.append("  no registry is mirrored")
    return {
        "lines": lines,
        "problems": problems,
        "json": {
            "runtime": runtime.name,
            "files": runtime.files,
            "present": runtime.present,
            "notes": runtime.notes,
            "mirrors": [_check_doc(c) for c in checks],
        },
    }


def _pick(mirror: Mirror, wanted: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    image = wanted.get(mirror.registry)
    if image is None:
        return None
    repo, tag = image
    if mirror.registry == DOCKER_HUB and "/" not in repo:
        repo = f"library/{repo}"
    return repo, tag


def _check_doc(c: Check) -> dict[str, Any]:
    m = c.mirror
    return {
        "registry": m.registry,
        "endpoint": m.base,
        "style": m.style,
        "source": m.source,
        "login": m.login[0] if m.login else None,  # never the password
        "answered": c.answered,
        "is_registry_cache": c.is_cache,
        "proof": asdict(c.proof) if c.proof else None,
        "problems": [p.title for p in c.problems],
    }
