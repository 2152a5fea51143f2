"""The ``registry-cache`` command group.

Commands are imported lazily (pip's pattern) so ``registry-cache serve`` does not
pay for the benchmark's imports. This module is the one place where exceptions
become exit codes: 0 ok, 1 operation failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from .. import __version__
from ..errors import ConfigError

# name -> (module, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("serve", "serve", "Run the pull-through cache server."),
    "registries": ("clientconfig", "registries", "Print k3s/k3d registries.yaml."),
    "containerd-hosts": ("clientconfig", "containerd_hosts", "Write containerd hosts.toml files."),
    "docker-daemon": ("clientconfig", "docker_daemon", "Print (or merge) Docker daemon.json."),
    "registries-conf": ("clientconfig", "registries_conf", "Print containers registries.conf."),
    "k3d": ("k3d", "k3d", "Configure k3d clusters to pull through the cache."),
    "benchmark": ("benchmark", "benchmark", "Benchmark pulls: upstream vs the cache."),
    "compare-paths": ("compare_paths", "compare_paths", "Compare network paths (iperf3, HTTP)."),
    "cache": ("cache", "cache", "Inspect and maintain the cache's data directory."),
    "warm": ("warm", "warm", "Pre-pull images into the cache."),
    "status": ("status", "status", "Show a running cache's dashboard in the terminal."),
    "doctor": ("doctor", "doctor", "Check that this node pulls through the cache, and prove it."),
}


class CliError(Exception):
    """An operation failed; printed as one line, exit 1."""


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None or not self._available(cmd_name):
            return None
        module = importlib.import_module(f"{__package__}.{spec[0]}")
        command: click.Command = getattr(module, spec[1])
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from COMMANDS' one-line helps: click's own would import
        every command module (aiohttp, rich, pydantic...) just to print ``--help``."""
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name][0]
        return importlib.util.find_spec(f"{__package__}.{module}") is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="registry-cache")
def cli() -> None:
    """A pull-through cache for Docker Hub, ghcr.io, quay.io and any OCI registry."""


def main(argv: list[str] | None = None) -> Any:
    try:
        return cli.main(args=argv, prog_name="registry-cache", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("registry-cache: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        click.echo(f"registry-cache: {exc}", err=True)
        sys.exit(2)
    except CliError as exc:
        click.echo(f"registry-cache: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
