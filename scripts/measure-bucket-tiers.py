"""One blob three ways, side by side in one run: a local-tier hit, a bucket hit, a cold fill.

    .venv/bin/python scripts/measure-bucket-tiers.py [--size-mib 256] [--runs 3] \
        [--engine seaweedfs|rgw]

Everything on 127.0.0.1, started and stopped here by PID: docker-registry as the
upstream, a real S3 engine (SeaweedFS by default) as the bucket, the cache with
``--storage`` as a subprocess; curl downloads to /dev/null and reports its time.

- cold fill: an empty data directory and an empty key prefix (upstream → local tier,
  then the background upload);
- bucket hit: an empty data directory, the prefix the cold fills uploaded to (the
  bucket → local tier, streamed to the client as it arrives);
- local-tier hit: the same cache again (sendfile from the data directory).

Prints each run and the medians, in MB/s, with ratios to the cold fill.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.bucket import BucketView, aws_env, storage_args  # noqa: E402
from tests.harness.cache import CacheServer, safe_upstream_args  # noqa: E402
from tests.harness.images import build_image, push  # noqa: E402
from tests.harness.registry import UpstreamRegistry  # noqa: E402
from tests.harness.rgw import CephRGW  # noqa: E402
from tests.harness.s3engine import S3Engine  # noqa: E402
from tests.harness.seaweedfs import SeaweedFS  # noqa: E402


def curl_seconds(url: str) -> float:
    out = subprocess.run(
        ["curl", "-sf", "--noproxy", "*", "-o", "/dev/null", "-w", "%{time_total}", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engine", choices=("seaweedfs", "rgw"), default="seaweedfs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rc-tiers-"))
    engine: S3Engine = SeaweedFS() if args.engine == "seaweedfs" else CephRGW()
    upstream = UpstreamRegistry(work / "upstream")
    caches: list[CacheServer] = []

    def cache(prefix: str) -> CacheServer:
        argv = safe_upstream_args(
            ["--upstream", f"docker.io={upstream.url}", *storage_args(engine, prefix)]
        )
        server = CacheServer(work / f"cache-{len(caches)}", argv, env=aws_env(engine))
        caches.append(server)
        return server.start()

    try:
        engine.start()
        upstream.start()
        image = build_image("tiers", layers=1, layer_size=args.size_mib << 20, workdir=work)
        layer = push(upstream.url, "library/tiers", "1", image).layer_digests[0]
        size = image.layers[0].size
        path = f"/v2/library/tiers/blobs/{layer}"
        results: dict[str, list[float]] = {"cold fill": [], "bucket hit": [], "local hit": []}
        for run in range(args.runs):
            prefix = f"run{run}"
            cold = cache(prefix)
            results["cold fill"].append(curl_seconds(cold.url + path))
            results["local hit"].append(curl_seconds(cold.url + path))
            view = BucketView(engine, prefix)
            deadline = time.monotonic() + 300
            while not view.holds(layer) and time.monotonic() < deadline:
                time.sleep(0.2)
            cold.stop()
            warm = cache(prefix)  # an empty data directory, the same bucket prefix
            results["bucket hit"].append(curl_seconds(warm.url + path))
            warm.stop()
            print(
                f"run {run + 1}: "
                + ", ".join(f"{k} {size / v[-1] / 1e6:.0f} MB/s" for k, v in results.items()),
                flush=True,
            )
        cold_median = statistics.median(results["cold fill"])
        print(f"\n{args.size_mib} MiB blob, {args.engine}, median of {args.runs}:")
        for name, times in results.items():
            median = statistics.median(times)
            print(
                f"  {name:10s} {median:6.3f} s  {size / median / 1e6:6.0f} MB/s"
                f"  x{cold_median / median:.2f} the cold fill"
            )
    finally:
        for server in caches:
            server.stop()
        upstream.stop()
        engine.close()


if __name__ == "__main__":
    main()
