"""Our load engine against wrk on the same do-nothing gunicorn endpoint (goal: >= 0.7x wrk's rate).

    .venv/bin/python benchmarks/loadgen.py [--concurrency 8] [--duration 3] [--repeats 3]

Starts gunicorn (one gthread worker) serving the ``app`` below on a free port, then alternates
wrk and our engine (GET and a digits-sized POST) and prints medians and ranges. Both generators
share the machine's cores with the server, as they will in a real bench.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

BODY = b'{"ok": true}'


def app(environ, start_response):
    """A do-nothing WSGI app: read the body, answer a tiny JSON document."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]


def main() -> None:
    """Start the app, measure both generators side by side, print a table."""
    from onnxdeploy.bench.bodies import http_request
    from onnxdeploy.bench.engines.native import LoadSpec, run_load
    from onnxdeploy.bench.engines.wrk import available, run_wrk
    from onnxdeploy.bench.httpclient import is_up
    from onnxdeploy.bench.servers import free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", dest="json_path", help="Also write the results as JSON here.")
    args = parser.parse_args()
    if not available("wrk"):
        sys.exit("wrk is not on the PATH (apt-get install wrk); it is the reference here")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    here = Path(__file__).resolve().parent
    gunicorn = Path(sys.executable).with_name("gunicorn")
    proc = subprocess.Popen(
        [str(gunicorn), "--chdir", str(here), "-b", f"127.0.0.1:{port}", "-w", "1", "-k", "gthread",
         "--threads", "4", "--log-level", "warning", "loadgen:app"],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not is_up(url, "/"):
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit("gunicorn did not start")
            time.sleep(0.1)
        post = b'{"inputs": [[' + b", ".join([b"0.5"] * 64) + b"]]}"
        cases = {"GET /": ("/", None), "POST /predict (64 floats)": ("/predict", post)}
        rows = []
        for label, (path, body) in cases.items():
            rates: dict[str, list[float]] = {"wrk": [], "ours": []}
            cpu: dict[str, list[float]] = {"wrk": [], "ours": []}
            for rep in range(args.repeats):
                order = ("wrk", "ours") if rep % 2 == 0 else ("ours", "wrk")
                for who in order:
                    if who == "wrk":
                        r = run_wrk(url, path, [body] if body else None,
                                    concurrency=args.concurrency, duration_s=args.duration)
                        rates["wrk"].append(r.requests / r.elapsed_s)
                        cpu["wrk"].append(100 * r.cpu_s / r.elapsed_s)
                    else:
                        raw = http_request("POST" if body else "GET", path, f"127.0.0.1:{port}", body or b"")
                        res = run_load(LoadSpec("127.0.0.1", port, [raw], concurrency=args.concurrency,
                                                duration_s=args.duration))
                        rates["ours"].append(res.ok / res.elapsed_s)
                        cpu["ours"].append(100 * res.cpu_s / res.elapsed_s)
            rows.append((label, rates, cpu))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)

    print(f"\nc={args.concurrency}, {args.duration:g}s per run, {args.repeats} repeats, alternating; "
          f"{os.cpu_count()} CPUs shared by server and generator\n")
    print("| endpoint | wrk req/s (median, range) | ours req/s (median, range) | ours / wrk | CPU wrk / ours |")
    print("|---|---|---|---|---|")
    for label, rates, cpu in rows:
        w, o = statistics.median(rates["wrk"]), statistics.median(rates["ours"])
        print(f"| {label} | {w:,.0f} ({min(rates['wrk']):,.0f}–{max(rates['wrk']):,.0f}) | "
              f"{o:,.0f} ({min(rates['ours']):,.0f}–{max(rates['ours']):,.0f}) | {o / w:.2f}x | "
              f"{statistics.median(cpu['wrk']):.0f}% / {statistics.median(cpu['ours']):.0f}% |")
    if args.json_path:
        from onnxdeploy.report.jsonio import write_json

        write_json(args.json_path, {
            "concurrency": args.concurrency, "duration_s": args.duration, "repeats": args.repeats,
            "cases": [{"endpoint": label, "rps": rates, "cpu_percent": cpu,
                       "ratio_ours_to_wrk": statistics.median(rates["ours"]) / statistics.median(rates["wrk"])}
                      for label, rates, cpu in rows],
        })


if __name__ == "__main__":
    main()
