"""``k3d``: point k3d clusters at the cache.

::

    registry-cache k3d create-args [--out registries.yaml]   → args for `k3d cluster create`
    registry-cache k3d apply CLUSTER [--dry-run]             → existing cluster: copy + restart
    registry-cache k3d connect CLUSTER                       → cache container joins k3d-CLUSTER

Every external command goes through a :class:`Runner`, so tests record the
sequence instead of needing docker and k3d. The advertised host defaults to the
virtual hosts when a domain is configured, else to the cache's container name
``registry-cache``, which k3d nodes resolve through Docker's DNS once they share
a network with it (``--network registry-cache`` at create time, or ``connect``).

Nodes are found by k3d's own labels (``k3d.cluster=NAME``; roles server and
agent: the load balancer has no k3s in it). The seed filtered on
``io.x-k3d.cluster``, a label k3d does not set.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import click

from ..clientconfig import Login, render_registries_yaml
from .clientconfig import advertise_from, atomic_write, endpoint_options, login_from, login_options
from .main import CliError
from .options import settings_from, settings_options

K3S_REGISTRIES = "/etc/rancher/k3s/registries.yaml"
CACHE_CONTAINER = "registry-cache"  # container_name in docker-compose.yml
CACHE_NETWORK = "registry-cache"  # the compose network (name: registry-cache)
CLUSTER_LABEL = "k3d.cluster"
ROLE_LABEL = "k3d.role"
NODE_ROLES = ("server", "agent")
COMMAND_TIMEOUT = 600.0  # `k3d cluster start` waits for the servers to come up
_CLUSTER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclass(frozen=True, slots=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""


@runtime_checkable
class Runner(Protocol):
    """How external commands run: a subprocess in real life, a recorder in tests."""

    def available(self, program: str) -> bool: ...

    def run(self, argv: Sequence[str]) -> Completed: ...


class SubprocessRunner:
    def __init__(self, timeout: float = COMMAND_TIMEOUT) -> None:
        self.timeout = timeout

    def available(self, program: str) -> bool:
        return shutil.which(program) is not None

    def run(self, argv: Sequence[str]) -> Completed:
        try:
            proc = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except FileNotFoundError:
            raise CliError(f"{argv[0]} not found on PATH") from None
        except subprocess.TimeoutExpired:
            raise CliError(f"`{shlex.join(argv)}` timed out after {self.timeout:.0f}s") from None
        return Completed(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


def require(runner: Runner, *programs: str) -> None:
    for program in programs:
        if not runner.available(program):
            raise CliError(f"{program} not found on PATH (needed: {', '.join(programs)})")


def check(result: Completed) -> Completed:
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        detail = f": {lines[-1].strip()}" if lines else ""
        raise CliError(f"`{shlex.join(result.argv)}` failed (exit {result.returncode}){detail}")
    return result


def list_nodes_argv(cluster: str) -> list[str]:
    fmt = '{{.Names}} {{.Label "' + ROLE_LABEL + '"}}'  # container names have no spaces
    return ["docker", "ps", "-a", "--filter", f"label={CLUSTER_LABEL}={cluster}", "--format", fmt]


def list_nodes(runner: Runner, cluster: str) -> list[str]:
    """The cluster's k3s containers (servers and agents), sorted; ``CliError`` if none."""
    out = check(runner.run(list_nodes_argv(cluster))).stdout
    nodes = []
    for line in out.splitlines():
        name, _, role = line.strip().partition(" ")
        if name and role in NODE_ROLES:
            nodes.append(name)
    if not nodes:
        raise CliError(f"no k3d nodes found for cluster {cluster!r} (see `k3d cluster list`)")
    return sorted(nodes)


def apply_plan(cluster: str, nodes: Sequence[str], source: str) -> list[list[str]]:
    """Copy into every node, then restart the cluster (k3s reads the file at start)."""
    plan = [["docker", "cp", source, f"{node}:{K3S_REGISTRIES}"] for node in nodes]
    plan.append(["k3d", "cluster", "stop", cluster])
    plan.append(["k3d", "cluster", "start", cluster])
    return plan


PLACEHOLDER_NODE = "<node>"


def preview_nodes(runner: Runner, cluster: str) -> tuple[list[str], str | None]:
    """For a dry run: the real nodes when docker answers, else a placeholder and why
    not (no docker binary, no daemon, no such cluster): a preview needs neither."""
    if not runner.available("docker"):
        return [PLACEHOLDER_NODE], "docker not found on PATH"
    try:
        return list_nodes(runner, cluster), None
    except CliError as exc:
        return [PLACEHOLDER_NODE], str(exc)


def apply_registries(runner: Runner, cluster: str, text: str, *, dry_run: bool = False) -> None:
    """Install ``text`` as every node's registries.yaml, restart, and verify."""
    unlisted: str | None = None
    if dry_run:
        nodes, unlisted = preview_nodes(runner, cluster)
    else:
        require(runner, "docker", "k3d")
        nodes = list_nodes(runner, cluster)
    if unlisted is not None:
        click.echo(f"# nodes not listed ({unlisted}); the real run lists them with:")
        click.echo(f"+ {shlex.join(list_nodes_argv(cluster))}")
        click.echo(f"# and runs the {PLACEHOLDER_NODE} commands for each server and agent")
    with tempfile.TemporaryDirectory(prefix="registry-cache-k3d-") as tmp:
        source = Path(tmp) / "registries.yaml"
        source.write_text(text, encoding="utf-8")
        for argv in apply_plan(cluster, nodes, str(source)):
            click.echo(f"+ {shlex.join(argv)}")
            if not dry_run:
                check(runner.run(argv))
    for node in nodes:
        argv = ["docker", "exec", node, "cat", K3S_REGISTRIES]
        click.echo(f"+ {shlex.join(argv)}")
        if dry_run:
            continue
        if check(runner.run(argv)).stdout != text:
            raise CliError(f"{node}: {K3S_REGISTRIES} differs from what was written")
    if dry_run:
        shown = "nodes not listed" if unlisted is not None else f"{len(nodes)} node(s)"
        click.echo(f"dry run: nothing changed ({shown} of {cluster!r})")
    else:
        click.echo(f"registries.yaml installed and verified on {len(nodes)} node(s)")


def _runner(ctx: click.Context) -> Runner:
    obj = ctx.find_root().obj
    if isinstance(obj, dict) and isinstance(obj.get("runner"), Runner):
        runner: Runner = obj["runner"]
        return runner
    return SubprocessRunner()


def _cluster(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not _CLUSTER_RE.fullmatch(value):
        raise click.BadParameter(f"invalid k3d cluster name {value!r}")
    return value


def _registries_text(params: dict[str, Any], login: Login | None) -> str:
    settings = settings_from(params)
    adv = advertise_from(settings, params, default_host=CACHE_CONTAINER)
    return render_registries_yaml(settings, adv, login)


@click.group(name="k3d")
def k3d() -> None:
    """Configure k3d clusters to pull through the cache."""


@k3d.command(name="apply")
@click.argument("cluster", callback=_cluster)
@click.option("--dry-run", is_flag=True, help="Print the commands; change nothing.")
@endpoint_options
@login_options()
@settings_options
@click.pass_context
def apply(ctx: click.Context, /, cluster: str, dry_run: bool, **params: Any) -> None:
    """Install registries.yaml into every node of CLUSTER and restart it."""
    login = login_from(params)
    shown = dict(params)
    text = _registries_text(params, login)
    if dry_run:
        click.echo(f"# registries.yaml for k3d cluster {cluster!r}:")
        # The password is not echoed: the dry run shows where it would go.
        click.echo(_registries_text(shown, login and login.masked()), nl=False)
    apply_registries(_runner(ctx), cluster, text, dry_run=dry_run)


@k3d.command(name="create-args")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("registries.yaml"),
    show_default=True,
    help="Where to write registries.yaml.",
)
@click.option(
    "--network",
    default=CACHE_NETWORK,
    show_default=True,
    help="Docker network the cluster joins (the cache's).",
)
@endpoint_options
@login_options()
@settings_options
def create_args(out: Path, network: str, **params: Any) -> None:
    """Write registries.yaml and print arguments for `k3d cluster create`.

    \b
    k3d cluster create dev $(registry-cache k3d create-args)
    """
    text = _registries_text(params, login_from(params))
    try:
        atomic_write(out, text)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
    args = ["--registry-config", str(out.absolute()), "--network", network]
    click.echo(shlex.join(args))


@k3d.command(name="connect")
@click.argument("cluster", callback=_cluster)
@click.option(
    "--container",
    default=CACHE_CONTAINER,
    show_default=True,
    help="The cache's container.",
)
@click.option("--dry-run", is_flag=True, help="Print the command; change nothing.")
@click.pass_context
def connect(ctx: click.Context, cluster: str, container: str, dry_run: bool) -> None:
    """Attach the cache's container to the network of CLUSTER (k3d-CLUSTER).

    For clusters created without --network registry-cache: the nodes can then
    reach the cache by its container name.
    """
    argv = ["docker", "network", "connect", f"k3d-{cluster}", container]
    click.echo(f"+ {shlex.join(argv)}")
    if dry_run:
        return
    runner = _runner(ctx)
    require(runner, "docker")
    result = runner.run(argv)
    if result.returncode != 0 and "already exists" in result.stderr:
        click.echo(f"{container} is already connected to k3d-{cluster}")
        return
    check(result)
    click.echo(f"{container} connected to k3d-{cluster}")
