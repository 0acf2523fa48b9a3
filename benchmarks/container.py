"""The serving image against the same server on the host: digits-cnn, c=8, wrk, side by side.

    CONTAINERS_CONF=... python benchmarks/container.py [--base IMAGE] [--image TAG]
        [--duration 4] [--repeats 5] [--json out.json] [--vs TAG] [--starts-only]

Builds (or reuses, with --image) an image with ``onnxdeploy containerize``, then runs rounds of
wrk at 8 connections against ``onnxdeploy serve`` on the host (twice: A and B, an A/A control) and
the container on the host network (no port forwarding in the path), all with the same defaults
(one worker per core, one ORT thread each); the order inside a round rotates. Reports medians
(min-max), the ratio container/host-A (goal: >= 0.9x) beside host-B/host-A (the A/A control: how
far two identical servers drift apart on this machine), the image size (goal: <= 350 MB) and
start-to-ready (``podman run`` to the first 200 from /v2/health/ready; goal <= 3 s), the median
and range of --starts starts, with the part ``podman run`` itself took.

On this test machine podman needs a containers.conf (tests/containers.py writes it; pass
--containers-conf to write one here). Figures move with the load of other processes on the
shared cores: compare only the two columns of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from containers import BASE_IMAGE, configure, ensure_base_image, podman, wait_http  # noqa: E402

from onnxdeploy.bench.engines import wrk as external  # noqa: E402
from onnxdeploy.bench.servers import free_port  # noqa: E402
from onnxdeploy.data import digits_split  # noqa: E402
from onnxdeploy.environment import environment  # noqa: E402
from onnxdeploy.export import ExportOptions, export_model  # noqa: E402

GOAL_RATIO = 0.9
GOAL_SIZE_MB = 350
GOAL_READY_S = 3.0


def body() -> bytes:
    x = digits_split()[2][0].reshape(1, 1, 8, 8)
    return json.dumps({"inputs": x.tolist()}).encode()


def wrk(port: int, duration: float) -> dict:
    r = external.run_wrk(f"http://127.0.0.1:{port}", "/predict", [body()], concurrency=8,
                         duration_s=duration, threads=2)
    errors = sum(r.errors.values())
    # successes only: a request that failed is no throughput (errors are reported beside it)
    return {"rps": r.requests / r.elapsed_s, "p99_ms": r.latency_ms["p99"],
            "errors": errors}


def host_server(model: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONNXDEPLOY_") and k != "PORT"}
    proc = subprocess.Popen([sys.executable, "-m", "onnxdeploy", "serve", str(model), "--port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    wait_http(f"http://127.0.0.1:{port}/v2/health/ready")
    return proc


def container(image: str, port: int) -> tuple[str, float, float]:
    """(container id, seconds from ``podman run`` to ready, seconds ``podman run -d`` took)."""
    t0 = time.monotonic()
    cid = podman("run", "-d", "--rm", "--network", "host", "--read-only", "-e", f"PORT={port}",
                 image).stdout.strip()
    started = time.monotonic() - t0
    wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=120)
    return cid, time.monotonic() - t0, started


def median_range(values: list[float], fmt: str = ",.0f") -> str:
    return (f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}}, "
            f"n={len(values)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default=None, help=f"base image (default: {BASE_IMAGE}, made here)")
    ap.add_argument("--image", help="an image containerize already built (skip the build)")
    ap.add_argument("--duration", type=float, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="rounds (host A, container, host B)")
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--vs", metavar="IMAGE",
                    help="a second image whose starts alternate with --image's (A B, B A, ...): "
                         "start to ready side by side (the same image twice is the A/A control)")
    ap.add_argument("--starts-only", action="store_true", help="skip the throughput rounds")
    ap.add_argument("--containers-conf", action="store_true",
                    help="write this test machine's containers.conf and use it")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="onnxdeploy-container-bench-"))
    if args.containers_conf:
        configure(work)
    model = work / "digits-cnn.onnx"
    export_model("digits-cnn", model, ExportOptions())
    image = args.image
    build = {}
    if image is None:
        image = "localhost/onnxdeploy-bench:digits-cnn"
        base = args.base or ensure_base_image()
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "onnxdeploy", "containerize", str(model), "-t",
                            image, "--base", base, "--json"], capture_output=True, text=True)
        if r.returncode:
            sys.exit(r.stderr)
        build = json.loads(r.stdout)
        build["containerize_s"] = time.monotonic() - t0
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())

    load_before = os.getloadavg()
    starts, podman_runs = [], []
    vs_starts, vs_podman_runs = [], []
    for i in range(args.starts):
        pairs = [(image, starts, podman_runs)]
        if args.vs:
            pairs.append((args.vs, vs_starts, vs_podman_runs))
            pairs = pairs[::-1] if i % 2 else pairs
        for img, into, into_podman in pairs:
            port = free_port()
            cid, took, started = container(img, port)
            into.append(took)
            into_podman.append(started)
            podman("stop", "-t", "30", cid)
    env = environment()
    if args.vs:
        print(f"CPU: {env['cpu']} ({env['usable_cores']} usable cores); load average "
              f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
        print(f"start to ready, {args.starts} starts each, alternated:")
        for img, values, runs_ in ((image, starts, podman_runs), (args.vs, vs_starts, vs_podman_runs)):
            print(f"  {img}: {median_range(values, '.2f')} s; of which podman run -d "
                  f"{median_range(runs_, '.2f')} s")
    if args.starts_only:
        if args.json:
            args.json.write_text(json.dumps({
                "start_to_ready_s": {image: starts, **({args.vs: vs_starts} if args.vs else {})},
                "podman_run_s": {image: podman_runs,
                                 **({args.vs: vs_podman_runs} if args.vs else {})},
                "load_average": [load_before[0], os.getloadavg()[0]], "environment": env},
                indent=1))
        if not args.vs:
            print(f"start to ready {median_range(starts, '.2f')} s; of which podman run -d "
                  f"{median_range(podman_runs, '.2f')} s")
        return

    order = ["host-A", "container", "host-B"]
    runs: dict[str, list[dict]] = {k: [] for k in order}
    for i in range(args.repeats):
        for which in order[i % 3:] + order[:i % 3]:
            port = free_port()
            if which.startswith("host"):
                proc = host_server(model, port)
                try:
                    runs[which].append(wrk(port, args.duration))
                finally:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(30)
            else:
                cid, _, _ = container(image, port)
                try:
                    runs[which].append(wrk(port, args.duration))
                finally:
                    podman("stop", "-t", "30", cid)
    rps = {k: [r["rps"] for r in v] for k, v in runs.items()}
    ratio = statistics.median(rps["container"]) / statistics.median(rps["host-A"])
    control = statistics.median(rps["host-B"]) / statistics.median(rps["host-A"])
    print(f"CPU: {env['cpu']} ({env['usable_cores']} usable cores); load average "
          f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"digits-cnn, /predict one sample, wrk c=8, {args.repeats} rounds of {args.duration:g} s "
          f"runs (order rotated), medians (min-max):")
    for k in order:
        print(f"  {k:<10} {median_range(rps[k])} req/s, p99 "
              f"{statistics.median(r['p99_ms'] for r in runs[k]):.1f} ms")
    print(f"  ratio container/host-A {ratio:.2f}x (goal >= {GOAL_RATIO}x: "
          f"{'met' if ratio >= GOAL_RATIO else 'missed'}); A/A control host-B/host-A "
          f"{control:.2f}x")
    ready = statistics.median(starts)
    print(f"image {image}: {size / 1e6:.0f} MB (goal <= {GOAL_SIZE_MB} MB: "
          f"{'met' if size / 1e6 <= GOAL_SIZE_MB else 'missed'})")
    print(f"start to ready {median_range(starts, '.2f')} s (goal <= {GOAL_READY_S:g} s: "
          f"{'met' if ready <= GOAL_READY_S else 'missed'}); of which podman run -d "
          f"{median_range(podman_runs, '.2f')} s")
    if build:
        print(f"containerize {build['containerize_s']:.0f} s ({', '.join(f'{k} {v:.1f} s' for k, v in build['timings_s'].items())})")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "ratio": ratio, "aa_control": control,
                                         "image_bytes": size, "start_to_ready_s": starts,
                                         "podman_run_s": podman_runs, "build": build,
                                         "environment": env}, indent=1))
    if args.image is None:
        podman("rmi", "-f", image, check=False)


if __name__ == "__main__":
    urllib.request.getproxies = dict  # local URLs only: no proxy from the environment
    main()
