"""The container image, built from the project's Dockerfile and run for real.

No base image can be pulled here, so the base is made from Debian packages
(debootstrap from the machine's apt mirror, then ``docker import``) and passed as
the Dockerfile's ``PYTHON_IMAGE`` build argument (its default stays the public
python image). The build runs offline (``--network none``): stage 1's pip finds
wheels built on this machine in ``wheelhouse/`` through the Dockerfile's
``PIP_NO_INDEX``/``PIP_FIND_LINKS`` build arguments. The daemon is the harness's
dockerd (no bridge, so the container runs in the host's network namespace and the
cache is told to listen on 127.0.0.1 only) with the classic builder and overlay2
storage: vfs works too, but copies the whole image for every build step (a build
took 70-170 s with it here, 25 s with overlay2).

The container runs as Kubernetes runs it (deploy/kubernetes): read-only root, its
own user, nothing writable but the /data volume. A real client (skopeo) pulls an
image through it from a real upstream (docker-registry on 127.0.0.1), and the
image's HEALTHCHECK turns the container healthy.

The Debian base tarball is made once per test session, in the session's temp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from registry_cache.units import parse_size
from tests.harness import clients, debian
from tests.harness.cachelog import settled_blob_gets
from tests.harness.clients import pulled_blobs, pulled_manifest, skopeo_copy
from tests.harness.dockerd import Dockerd, dockerd_available
from tests.harness.images import build_image, push
from tests.harness.kustomize import render
from tests.harness.netns import write_hosts_file
from tests.harness.ports import free_port
from tests.harness.registry import UpstreamRegistry, registry_available

pytestmark = [pytest.mark.clients, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
# What the Dockerfile needs of its base: python3 with venv (and so pip), useradd, CAs.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "passwd")
BASE_TAG = "registry-cache-base:test"
IMAGE_TAG = "registry-cache:test"
# As the official python images set it (an imported tarball has no environment).
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Everything the Dockerfile's COPY may see (.dockerignore's allow-list decides).
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "constraints.txt", "README.md")
TIMINGS: dict[str, float] = {}


def require(available: bool, what: str) -> None:
    """Skip without ``what`` on a developer's machine; under CI=true, fail."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI=true: a missing tool fails the run)")
    pytest.skip(what)


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    require(os.geteuid() == 0, "building a Debian root filesystem needs root")
    require(debian.debootstrap_available(), "debootstrap missing: apt-get install debootstrap")
    require(dockerd_available(), "dockerd/docker missing: apt-get install docker.io")
    require(clients.skopeo_available(), "skopeo missing: apt-get install skopeo")
    require(registry_available(), "docker-registry missing: apt-get install docker-registry")


@pytest.fixture(scope="session")
def debian_base_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A minimal Debian root filesystem (this machine's release) as a tarball."""
    workdir = tmp_path_factory.mktemp("debian-base")
    started = time.monotonic()
    tarball = debian.debootstrap_tarball(workdir / "base.tar", BASE_PACKAGES, workdir)
    TIMINGS["debootstrap"] = time.monotonic() - started
    return tarball


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    workdir = tmp_path_factory.mktemp("image-dockerd")
    daemon_json = workdir / "daemon.json"
    daemon_json.write_text("{}")  # no mirrors: nothing is pulled, only built and run
    hosts = write_hosts_file(workdir / "hosts", [])
    with Dockerd(daemon_json, hosts, storage_driver="overlay2") as daemon:
        yield daemon


def build_context(dest: Path) -> Path:
    """The repository's build inputs, plus the wheels stage 1 installs offline."""
    dest.mkdir()
    for name in CONTEXT_FILES:
        shutil.copy(ROOT / name, dest / name)
    if (ROOT / "LICENSE").exists():
        shutil.copy(ROOT / "LICENSE", dest / "LICENSE")
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__"))
    # This venv's pip, with the machine's package index: the same pins the tests use,
    # and the build backend stage 1's isolated build needs.
    wheelhouse = dest / "wheelhouse"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheelhouse),
         "-c", str(dest / "constraints.txt"), str(dest), "setuptools>=68", "wheel"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    for own in wheelhouse.glob("registry_cache-*.whl"):
        own.unlink()  # stage 1 must build the project itself, from src/
    shutil.rmtree(dest / "build", ignore_errors=True)
    return dest


@pytest.fixture(scope="module")
def image(
    dockerd: Dockerd, debian_base_tarball: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    started = time.monotonic()
    dockerd.docker(
        "import", "--change", f"ENV PATH={BASE_PATH}", "--change", 'CMD ["python3"]',
        str(debian_base_tarball), BASE_TAG, timeout=300,
    )  # fmt: skip
    TIMINGS["docker import"] = time.monotonic() - started
    context = build_context(tmp_path_factory.mktemp("image-context") / "context")
    started = time.monotonic()
    dockerd.docker(
        "build", "--network", "none", "--tag", IMAGE_TAG,
        "--build-arg", f"PYTHON_IMAGE={BASE_TAG}",
        "--build-arg", "PIP_NO_INDEX=1",
        "--build-arg", "PIP_FIND_LINKS=/src/wheelhouse",
        str(context),
        env={"DOCKER_BUILDKIT": "0"},  # the classic builder works with the vfs driver
        timeout=480,
    )  # fmt: skip
    TIMINGS["docker build"] = time.monotonic() - started
    return IMAGE_TAG


def inspect(dockerd: Dockerd, container: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = json.loads(dockerd.docker("inspect", container).stdout)
    return data[0]


def wait_healthy(dockerd: Dockerd, container: str, timeout: float = 60.0) -> dict[str, Any]:
    """The container's State once its health is ``healthy``; fails on exit or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        state: dict[str, Any] = inspect(dockerd, container)["State"]
        if state["Health"]["Status"] == "healthy":
            return state
        if not state["Running"] or time.monotonic() > deadline:
            logs = dockerd.docker("logs", container, check_rc=False)
            pytest.fail(f"not healthy: {json.dumps(state)}\n{logs.stdout}{logs.stderr}")
        time.sleep(0.2)


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port`` (this network namespace)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if width == 8:
                    found.add(".".join(str(b) for b in reversed(raw)))
                else:
                    found.add(raw.hex())
    return found


def memory_request() -> int:
    """The smallest memory request of the Kubernetes workloads (deploy/kubernetes)."""
    requests = []
    for overlay in ("single-node", "cluster"):
        for resource in render(ROOT / "deploy" / "kubernetes" / "overlays" / overlay):
            if resource["kind"] in ("StatefulSet", "Deployment"):
                for container in resource["spec"]["template"]["spec"]["containers"]:
                    requests.append(parse_size(container["resources"]["requests"]["memory"]))
    return min(requests)


@pytest.fixture
def container_name(dockerd: Dockerd) -> Iterator[str]:
    name = f"registry-cache-test-{os.getpid()}-{time.monotonic_ns()}"
    yield name
    dockerd.docker("rm", "--force", "--volumes", name, check_rc=False)


def test_image_runs_read_only_as_its_user_and_serves_a_pull(
    dockerd: Dockerd,
    image: str,
    container_name: str,
    make_upstream: Callable[..., UpstreamRegistry],
    tmp_path: Path,
) -> None:
    hub = make_upstream()
    pushed = build_image("image-test", layers=2)
    push(hub.url, "library/test", "1.0", pushed)
    hub.clear_request_log()
    port = free_port()
    started = time.monotonic()
    dockerd.docker(
        "run", "--detach", "--name", container_name,
        "--read-only",                      # as readOnlyRootFilesystem; no tmpfs anywhere
        "--network", "host",                # no bridge in the harness's dockerd
        "--env", f"REGISTRY_CACHE_LISTEN=127.0.0.1:{port}",
        "--health-interval", "1s", "--health-start-period", "1s", "--health-timeout", "5s",
        image,
        "serve", "--data-dir", "/data",
        "--upstream", f"docker.io={hub.url}", "--upstream", "ghcr.io=none",
        "--upstream", "quay.io=none",
    )  # fmt: skip
    state = wait_healthy(dockerd, container_name)
    TIMINGS["run → healthy"] = time.monotonic() - started
    health = state["Health"]
    assert health["Log"] and all(entry["ExitCode"] == 0 for entry in health["Log"]), health
    info = inspect(dockerd, container_name)
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["Config"]["User"] == "10001:10001"
    pid = int(state["Pid"])
    assert proc_status(pid)["Uid"].split()[:2] == ["10001", "10001"]  # real and effective
    assert listening_addresses(port) == {"127.0.0.1"}

    # A real client, through the container, from the real upstream.
    out = tmp_path / "pulled"
    skopeo_copy(f"docker://127.0.0.1:{port}/library/test:1.0", out)
    blobs = {pushed.config.digest, *pushed.layer_digests}
    assert pulled_blobs(out) == blobs  # each verified by its content
    assert pulled_manifest(out) == pushed.manifest.read()
    assert settled_blob_gets(hub, blobs) == dict.fromkeys(blobs, 1)
    again = tmp_path / "again"
    skopeo_copy(f"docker://127.0.0.1:{port}/library/test:1.0", again)  # hits: from /data
    assert pulled_blobs(again) == blobs
    assert settled_blob_gets(hub, blobs) == dict.fromkeys(blobs, 1)

    # The root really is read-only, and the cache wrote only where it may.
    touched = dockerd.docker("exec", container_name, "touch", "/probe", check_rc=False)
    assert touched.returncode != 0 and "Read-only file system" in touched.stderr
    stored = dockerd.docker("exec", container_name, "ls", "/data/blobs/sha256").stdout.split()
    assert {d.split(":")[1][:2] for d in blobs} <= set(stored)
    # What the Kubernetes pods rely on: the preStop hook's sleep, and requests that
    # cover what the server used (measured, not assumed).
    dockerd.docker("exec", container_name, "sleep", "0")
    peak = int(proc_status(pid)["VmHWM"].split()[0]) * 1024
    TIMINGS["peak RSS MB"] = peak / 1e6
    assert peak < memory_request(), f"peak RSS {peak / 1e6:.1f} MB"

    # SIGTERM (docker stop, as the kubelet): in-flight work finishes, exit status 0.
    dockerd.docker("stop", "--time", "40", container_name, timeout=60)
    assert inspect(dockerd, container_name)["State"]["ExitCode"] == 0
    print("image test timings (s):", {k: round(v, 1) for k, v in TIMINGS.items()})
