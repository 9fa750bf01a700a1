"""Bounded load on the reference server: N clients x M mixed requests, failures, latency and memory.

The server runs as its own process (``clara-aws serve --port 0``, default limits), so its memory is
measured apart from the clients': resident set size before, after, and its peak (VmHWM). Each client
thread has its own AIAAClient and cycles through a mix: list models, auto-segment (upload), open a
session, extreme points and deepgrow clicks on that session, close it. Figures printed: requests and
failures, latency p50/p95/p99 per kind and overall, server memory, sessions left on the server.

Run: python Testing/benchmarks/bench_server_load.py [--clients 8] [--requests 20] [--size 96,96,40]
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import numpy as np

from ClaraAWSLib.backends.aiaa.client import AIAAClient
from ClaraAWSLib.core.errors import ClaraError
from ClaraAWSLib.core.imageio import encode_volume
from ClaraAWSLib.synthetic.phantom import make_phantom


def start_server() -> tuple:
    script = Path(sys.executable).with_name("clara-aws")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ClaraAWSLib.cli"]
    process = subprocess.Popen(command + ["serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for _ in range(50):
        match = re.search(r"http://127\.0\.0\.1:\d+", process.stdout.readline())
        if match:
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
            return process, match.group(0)
    process.kill()
    raise SystemExit("the reference server did not start")


def memory_mb(pid: int) -> Dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def percentile(values: List[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def organ_points(phantom, organ: str):
    voxels = np.argwhere(phantom.truth.array == phantom.labels.index(organ) + 1)  # [k, j, i]
    extremes = []
    for axis in (2, 1, 0):
        for pick in (voxels[:, axis].argmin(), voxels[:, axis].argmax()):
            k, j, i = voxels[pick]
            extremes.append([int(i), int(j), int(k)])
    k, j, i = np.round(voxels.mean(axis=0)).astype(int)
    return extremes, [int(i), int(j), int(k)]


def client_work(url: str, encoded, extremes, centre, count: int, latencies, failures, lock) -> None:
    kinds = ["models", "segment", "session", "dextr3d", "deepgrow", "deepgrow", "close"]
    session = None
    with AIAAClient(url) as client:
        for number in range(count):
            kind = kinds[number % len(kinds)]
            if kind in ("dextr3d", "deepgrow", "close") and session is None:
                kind = "session"
            started = time.perf_counter()
            try:
                if kind == "models":
                    client.models()
                elif kind == "segment":
                    client.segmentation("phantom_abdomen_seg", encoded).labels()
                elif kind == "session":
                    session = client.create_session(encoded)
                elif kind == "dextr3d":
                    client.dextr3d("region_grow_annotation", extremes, session=session).labels()
                elif kind == "deepgrow":
                    client.deepgrow("region_grow_deepgrow", [centre], [], current_point=centre, session=session).labels()
                else:
                    client.close_session(session)
                    session = None
                ok = True
            except ClaraError as error:
                ok = False
                with lock:
                    failures.append(f"{kind}: {error}")
            with lock:
                if ok:
                    latencies[kind].append(time.perf_counter() - started)
        if session is not None:
            client.close_session(session)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--size", default="96,96,40")
    parser.add_argument("--rounds", type=int, default=3, help="repeat the load; flat memory shows as equal RSS after each")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(","))
    phantom = make_phantom(size=size, spacing=(3.2, 3.2, 6.0), seed=3)
    encoded = encode_volume(phantom.ct)
    extremes, centre = organ_points(phantom, "spleen")

    process, url = start_server()
    try:
        before = memory_mb(process.pid)
        latencies: Dict[str, List[float]] = defaultdict(list)
        failures: List[str] = []
        lock = threading.Lock()
        rounds_rss = []
        started = time.perf_counter()
        for _ in range(args.rounds):
            threads = [
                threading.Thread(target=client_work, args=(url, encoded, extremes, centre, args.requests, latencies, failures, lock))
                for _ in range(args.clients)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            rounds_rss.append(memory_mb(process.pid)["VmRSS"])
        elapsed = time.perf_counter() - started
        after = memory_mb(process.pid)
        with AIAAClient(url) as probe:
            still_open = probe.http.get(url + "/docs/", timeout=30).status_code
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)

    total = args.clients * args.requests * args.rounds
    every = [seconds for values in latencies.values() for seconds in values]
    print(f"Reference server under load: {args.rounds} rounds of {args.clients} clients x {args.requests} mixed requests = {total}, "
          f"CT {list(size)} ({encoded.size_bytes / 1e6:.2f} MB upload), {elapsed:.1f} s wall")
    print(f"failures: {len(failures)} of {total}")
    for failure in failures[:10]:
        print(f"  {failure}")
    print(f"{'kind':<10} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for kind in sorted(latencies):
        values = latencies[kind]
        print(f"{kind:<10} {len(values):>4} {1e3 * percentile(values, .5):>8.1f} {1e3 * percentile(values, .95):>8.1f} "
              f"{1e3 * percentile(values, .99):>8.1f}")
    if every:
        print(f"{'all':<10} {len(every):>4} {1e3 * percentile(every, .5):>8.1f} {1e3 * percentile(every, .95):>8.1f} "
              f"{1e3 * percentile(every, .99):>8.1f}")
    print(f"server memory: RSS {before['VmRSS']:.0f} MB before, after each round "
          f"{', '.join(f'{rss:.0f}' for rss in rounds_rss)} MB, peak {after['VmHWM']:.0f} MB")
    print(f"server answered /docs/ after the load: HTTP {still_open}; exit code on SIGTERM: {code}")


if __name__ == "__main__":
    main()
