"""``registry-cache k3d``: command sequences through a recording runner (no docker/k3d)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from registry_cache.cli.k3d import (
    K3S_REGISTRIES,
    Completed,
    Runner,
    SubprocessRunner,
    apply_registries,
    list_nodes_argv,
)
from registry_cache.cli.main import CliError, cli

PS_OUTPUT = "k3d-dev-server-0 server\nk3d-dev-agent-0 agent\nk3d-dev-serverlb loadbalancer\n"


class RecordingRunner:
    """Answers like docker/k3d would; remembers what was copied into each node."""

    def __init__(
        self,
        ps_output: str = PS_OUTPUT,
        missing: Sequence[str] = (),
        fail: Sequence[str] | None = None,
        stderr: str = "",
        tamper: bool = False,
    ) -> None:
        self.calls: list[list[str]] = []
        self.files: dict[str, str] = {}
        self.ps_output = ps_output
        self.missing = set(missing)
        self.fail = list(fail) if fail else None
        self.stderr = stderr
        self.tamper = tamper

    def available(self, program: str) -> bool:
        return program not in self.missing

    def run(self, argv: Sequence[str]) -> Completed:
        argv = list(argv)
        self.calls.append(argv)
        if self.fail is not None and argv[: len(self.fail)] == self.fail:
            return Completed(tuple(argv), 1, "", self.stderr or "boom\nError: it broke")
        if argv[:2] == ["docker", "ps"]:
            return Completed(tuple(argv), 0, self.ps_output)
        if argv[:2] == ["docker", "cp"]:
            node, _, path = argv[3].partition(":")
            assert path == K3S_REGISTRIES
            self.files[node] = Path(argv[2]).read_text()
        if argv[:2] == ["docker", "exec"]:
            text = self.files.get(argv[2], "")
            return Completed(tuple(argv), 0, text + ("# edited\n" if self.tamper else ""))
        return Completed(tuple(argv), 0)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("REGISTRY_", "DOCKERHUB_", "GHCR_", "QUAY_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def invoke(runner: RecordingRunner | None, *args: str) -> Result:
    return CliRunner().invoke(cli, ["k3d", *args], obj={"runner": runner})


def test_recording_runner_is_a_runner() -> None:
    assert isinstance(RecordingRunner(), Runner)
    assert isinstance(SubprocessRunner(), Runner)


def test_apply_sequence_and_verification() -> None:
    rec = RecordingRunner()
    result = invoke(rec, "apply", "dev", "--domain", "registry.example.com")
    assert result.exit_code == 0, result.output
    src = rec.calls[1][2]
    assert rec.calls == [
        list_nodes_argv("dev"),
        ["docker", "cp", src, f"k3d-dev-agent-0:{K3S_REGISTRIES}"],
        ["docker", "cp", src, f"k3d-dev-server-0:{K3S_REGISTRIES}"],
        ["k3d", "cluster", "stop", "dev"],
        ["k3d", "cluster", "start", "dev"],
        ["docker", "exec", "k3d-dev-agent-0", "cat", K3S_REGISTRIES],
        ["docker", "exec", "k3d-dev-server-0", "cat", K3S_REGISTRIES],
    ]
    assert rec.calls[0][:5] == ["docker", "ps", "-a", "--filter", "label=k3d.cluster=dev"]
    assert "k3d-dev-serverlb" not in rec.files  # the load balancer runs no k3s
    doc = yaml.safe_load(rec.files["k3d-dev-server-0"])
    assert doc["mirrors"]["docker.io"]["endpoint"] == ["http://docker.io.registry.example.com:5000"]
    assert not Path(src).exists()  # the temporary copy is gone
    assert "verified on 2 node(s)" in result.output


def test_apply_without_domain_targets_the_cache_container() -> None:
    rec = RecordingRunner()
    result = invoke(rec, "apply", "dev")
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(rec.files["k3d-dev-agent-0"])
    assert doc["mirrors"]["ghcr.io"]["endpoint"] == ["http://registry-cache:5000"]


def test_apply_dry_run_only_lists_nodes() -> None:
    rec = RecordingRunner(missing=["k3d"])
    result = invoke(rec, "apply", "dev", "--dry-run", "--host", "cache.lan")
    assert result.exit_code == 0, result.output
    assert rec.calls == [list_nodes_argv("dev")]
    lines = result.output.splitlines()
    assert "+ k3d cluster stop dev" in lines and "+ k3d cluster start dev" in lines
    assert any(line.startswith("+ docker cp ") for line in lines)
    assert "http://cache.lan:5000" in result.output
    assert "nothing changed" in result.output


def test_apply_dry_run_previews_without_docker() -> None:
    rec = RecordingRunner(missing=["docker", "k3d"])
    result = invoke(rec, "apply", "dev", "--dry-run", "--host", "cache.lan")
    assert result.exit_code == 0, result.output
    assert rec.calls == []
    lines = result.output.splitlines()
    assert "# nodes not listed (docker not found on PATH); the real run lists them with:" in lines
    assert f"+ {shlex.join(list_nodes_argv('dev'))}" in lines
    assert any("<node>:/etc/rancher/k3s/registries.yaml" in line for line in lines)
    assert "+ k3d cluster stop dev" in lines and "+ k3d cluster start dev" in lines
    assert "http://cache.lan:5000" in result.output
    assert lines[-1] == "dry run: nothing changed (nodes not listed of 'dev')"


def test_apply_dry_run_previews_without_a_daemon_or_cluster() -> None:
    rec = RecordingRunner(fail=["docker", "ps"], stderr="Cannot connect to the Docker daemon")
    result = invoke(rec, "apply", "dev", "--dry-run", "--host", "cache.lan")
    assert result.exit_code == 0, result.output
    assert "Cannot connect to the Docker daemon" in result.output
    nobody = RecordingRunner(ps_output="")  # docker answers, but no such cluster
    result = invoke(nobody, "apply", "dev", "--dry-run", "--host", "cache.lan")
    assert result.exit_code == 0 and "no k3d nodes found for cluster 'dev'" in result.output


def test_apply_with_a_login_installs_it_and_the_dry_run_masks_it(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("n0de-pw\n")
    login = ["--login", "node", "--password-file", str(secret)]
    rec = RecordingRunner()
    result = invoke(rec, "apply", "dev", "--host", "cache.lan", *login)
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(rec.files["k3d-dev-server-0"])
    auth = doc["configs"]["cache.lan:5000"]["auth"]
    assert auth == {"username": "node", "password": "n0de-pw"}
    assert "n0de-pw" not in result.output
    dry = invoke(RecordingRunner(), "apply", "dev", "--dry-run", "--host", "cache.lan", *login)
    assert dry.exit_code == 0, dry.output
    assert "n0de-pw" not in dry.output and 'password: "********"' in dry.output
    alone = invoke(RecordingRunner(), "apply", "dev", "--login", "node")
    assert alone.exit_code == 2 and "--login and --password-file go together" in alone.output


def test_apply_missing_binary() -> None:
    rec = RecordingRunner(missing=["k3d"])
    result = invoke(rec, "apply", "dev", "--host", "cache.lan")
    assert isinstance(result.exception, CliError)
    assert "k3d not found on PATH" in str(result.exception)
    assert rec.calls == []


def test_apply_stops_at_a_failed_command() -> None:
    rec = RecordingRunner(fail=["k3d", "cluster", "stop"])
    with pytest.raises(CliError) as exc:
        apply_registries(rec, "dev", "mirrors: {}\n")
    assert str(exc.value) == "`k3d cluster stop dev` failed (exit 1): Error: it broke"
    assert ["k3d", "cluster", "start", "dev"] not in rec.calls


def test_apply_detects_a_mismatch() -> None:
    rec = RecordingRunner(tamper=True)
    with pytest.raises(CliError, match="differs"):
        apply_registries(rec, "dev", "mirrors: {}\n")


def test_apply_no_nodes() -> None:
    rec = RecordingRunner(ps_output="k3d-dev-serverlb loadbalancer\n")
    with pytest.raises(CliError, match="no k3d nodes found for cluster 'dev'"):
        apply_registries(rec, "dev", "mirrors: {}\n")


def test_invalid_cluster_name() -> None:
    result = invoke(RecordingRunner(), "apply", "dev;rm -rf", "--host", "x")
    assert result.exit_code == 2


def test_create_args_writes_file(tmp_path: Path) -> None:
    out = tmp_path / "conf dir" / "registries.yaml"
    out.parent.mkdir()
    result = invoke(None, "create-args", "--out", str(out), "--domain", "registry.example.com")
    assert result.exit_code == 0, result.output
    args = shlex.split(result.output)
    assert args == ["--registry-config", str(out), "--network", "registry-cache"]
    doc = yaml.safe_load(out.read_text())
    assert set(doc["mirrors"]) == {"docker.io", "ghcr.io", "quay.io"}


def test_create_args_default_path(tmp_path: Path) -> None:
    result = invoke(None, "create-args", "--network", "other")
    assert shlex.split(result.output) == [
        "--registry-config",
        str(tmp_path / "registries.yaml"),
        "--network",
        "other",
    ]
    assert "http://registry-cache:5000" in (tmp_path / "registries.yaml").read_text()


def test_connect() -> None:
    rec = RecordingRunner()
    result = invoke(rec, "connect", "dev")
    assert result.exit_code == 0, result.output
    assert rec.calls == [["docker", "network", "connect", "k3d-dev", "registry-cache"]]


def test_connect_already_connected_is_fine() -> None:
    stderr = "Error response from daemon: endpoint with name registry-cache already exists"
    rec = RecordingRunner(fail=["docker", "network"], stderr=stderr)
    result = invoke(rec, "connect", "dev")
    assert result.exit_code == 0 and "already connected" in result.output


def test_connect_failure_and_missing_docker() -> None:
    rec = RecordingRunner(fail=["docker", "network"], stderr="Error: No such network: k3d-dev")
    result = invoke(rec, "connect", "dev")
    assert isinstance(result.exception, CliError) and "No such network" in str(result.exception)
    missing = invoke(RecordingRunner(missing=["docker"]), "connect", "dev")
    assert isinstance(missing.exception, CliError)
    assert "docker not found" in str(missing.exception)


def test_connect_dry_run_runs_nothing() -> None:
    rec = RecordingRunner()
    result = invoke(rec, "connect", "dev", "--dry-run", "--container", "cache")
    assert rec.calls == []
    assert result.output.strip() == "+ docker network connect k3d-dev cache"


def test_subprocess_runner_missing_program() -> None:
    runner = SubprocessRunner()
    assert not runner.available("definitely-not-a-program-xyz")
    with pytest.raises(CliError, match="not found"):
        runner.run(["definitely-not-a-program-xyz"])
    done = runner.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
