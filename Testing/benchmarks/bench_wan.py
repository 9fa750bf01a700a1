"""Auto-segmentation and a later deepgrow click over a throttled link: the older plugins' path versus ClaraAWS.

A throttling TCP proxy on 127.0.0.1 stands between the client and a reference server whose
auto-segmentation takes ~2.5 s (its model plus a sleep). Per direction the proxy has a token bucket
(the link's bandwidth) and a one-way latency, with a bounded queue so a sender feels back-pressure
as on a real link; before measuring it checks itself that N bytes take N / bandwidth and that a
round trip takes 2 x latency. For each link it prints wall time, bytes each way (counted by the
proxy, headers and framing included) and the ratios ours / older path and ours / limit, where

    limit = the smaller full-volume upload / uplink + server time + result bytes / downlink + 2 RTT.

The proxy and the server run in a process of their own, as they would on other machines.
Paths measured, each with a fresh connection:
- older path: a Slicer storage-node ``.nii.gz`` write (SimpleITK's writer without slicer-core), a
  whole-file multipart upload with a Content-Length (``requests`` ``files=``), the result read back
  through a file; a click re-writes and re-sends the whole volume;
- ClaraAWS, encode then send (the previous release: compress all, then upload, level 1);
- ClaraAWS, compress while sending (chunked), at level 1 and at the level chosen from the uplink
  measured on the earlier uploads;
- ClaraAWS, pre-encoded when the volume was chosen (``AIAAClient.start_encode``; the click finds the
  bytes ready, so only the upload remains);
- ClaraAWS with the body crop (``BodyCrop``: HU > -500, 10 mm margin), compressing while sending;
- a later deepgrow click: ClaraAWS sends points into its session; the older path re-sends the volume;
- a later deepgrow click through the scene logic (``ClaraAWSLogic``: prepare, run, apply into a segment;
  needs slicer-core) against a model that answers the whole grid without a crop box, as MONAI Label
  does: the client's own time is the wall time less the server's time and the wire's (bytes / link
  rate and one round trip per request and per new connection, the connections counted by the proxy),
  once inflating with the zlib-ng package (when installed) and once with this Python's own zlib.
Targets: full volume ours / limit <= 1.05; with the crop below the full-volume limit; a later click
<= 1.2 x its limit; the client's own time for a later click through the scene under 50 ms.

Run: python Testing/benchmarks/bench_wan.py [--size 512,512,150] [--links 100/200/40,20/100/80]
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import socket
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import requests
import SimpleITK as sitk

from ClaraAWSLib.backends.aiaa.client import AIAAClient
from ClaraAWSLib.backends.transport import server_wire
from ClaraAWSLib.core import inflate
from ClaraAWSLib.core.compression import machine_speeds
from ClaraAWSLib.core.crop import BodyCrop
from ClaraAWSLib.core.imageio import SliceLimit
from ClaraAWSLib.server import ReferenceServer
from ClaraAWSLib.server.models import ModelOutput, PhantomOrganSegmenter, RegionGrowDeepgrow
from ClaraAWSLib.synthetic.phantom import make_phantom

AUTO_MODEL = "phantom_abdomen_seg"
DEEPGROW_MODEL = "region_grow_deepgrow"
SERVER_SECONDS = 2.5
SLICE = 16 * 1024


# --- the throttling proxy -------------------------------------------------------------------------


class TokenBucket:
    """``take(n)`` returns once ``n`` bytes fit the rate; shared by every connection in one direction."""

    def __init__(self, bytes_per_second: float) -> None:
        self.rate = float(bytes_per_second)
        # A link's queue absorbs about 10 ms of traffic: a sender thread scheduled late catches up, never exceeds the rate.
        self.burst = max(64 * 1024, int(self.rate * 0.01))
        self._tokens = float(self.burst)
        self._stamp = time.perf_counter()
        self._lock = threading.Lock()

    def take(self, count: int) -> None:
        with self._lock:  # one sender at a time: the link serialises bytes
            while True:
                now = time.perf_counter()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= count:
                    self._tokens -= count
                    return
                time.sleep((count - self._tokens) / self.rate)


class _Direction:
    """One direction of one connection: read, hold for the latency, send at the bucket's rate."""

    def __init__(self, source, target, bucket: TokenBucket, latency: float, counter, key: str) -> None:
        self.source, self.target, self.bucket, self.latency = source, target, bucket, latency
        self.counter, self.key = counter, key
        self.queue = collections.deque()
        self.queued = 0
        self.limit = int(bucket.rate * latency) + 256 * 1024  # what is "in flight" on the link, plus a buffer
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.source.recv(65536)
            except OSError:
                data = b""
            with self.cond:
                while data and self.queued > self.limit:
                    self.cond.wait()
                self.queue.append((time.perf_counter() + self.latency, data))
                self.queued += len(data)
                self.cond.notify_all()
            if not data:
                return

    def _write(self) -> None:
        while True:
            with self.cond:
                while not self.queue:
                    self.cond.wait()
                due, data = self.queue.popleft()
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                if not data:
                    self.target.shutdown(socket.SHUT_WR)
                    return
                view = memoryview(data)
                for start in range(0, len(view), SLICE):
                    piece = view[start : start + SLICE]
                    self.bucket.take(len(piece))
                    self.target.sendall(piece)
                    self.counter[self.key] += len(piece)
            except OSError:
                return
            finally:
                with self.cond:
                    self.queued -= len(data)
                    self.cond.notify_all()


class ThrottlingProxy:
    """127.0.0.1:port -> target, ``up`` / ``down`` in bit/s, ``rtt`` in seconds (half of it each way)."""

    def __init__(self, target_port: int, up_bits: float, down_bits: float, rtt: float) -> None:
        self.target_port = target_port
        self.up = TokenBucket(up_bits / 8)
        self.down = TokenBucket(down_bits / 8)
        self.latency = rtt / 2
        self.bytes = collections.Counter()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.bytes["connections"] += 1
            server = socket.create_connection(("127.0.0.1", self.target_port))
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A connection's TCP handshake crosses the link too: one round trip before the first byte.
            time.sleep(2 * self.latency)
            _Direction(client, server, self.up, self.latency, self.bytes, "up")
            _Direction(server, client, self.down, self.latency, self.bytes, "down")

    def reset_counts(self) -> None:
        self.bytes.clear()

    def close(self) -> None:
        self.listener.close()


def _sink_server(send_back: int):
    """A TCP server that reads until a 1-byte end marker, then answers ``send_back`` bytes (at least 1)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                total = int.from_bytes(conn.recv(8, socket.MSG_WAITALL), "big")
                received = 0
                while received < total:
                    received += len(conn.recv(1 << 20))
                conn.sendall(b"x" * max(1, send_back))

    threading.Thread(target=serve, daemon=True).start()
    return listener


def self_check(up_bits: float, down_bits: float, rtt: float, amount: int = 4 << 20) -> str:
    """Measure the proxy against its own settings; raises when it is off by more than 10 %."""
    results = []
    for direction, rate in (("up", up_bits / 8), ("down", down_bits / 8), ("rtt", None)):
        sent = amount if direction == "up" else 0
        back = amount if direction == "down" else 1
        listener = _sink_server(back)
        proxy = ThrottlingProxy(listener.getsockname()[1], up_bits, down_bits, rtt)
        with socket.create_connection(("127.0.0.1", proxy.port)) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            time.sleep(3 * rtt)  # past the simulated handshake
            started = time.perf_counter()
            conn.sendall(sent.to_bytes(8, "big") + b"\0" * sent)
            received = 0
            while received < back:
                received += len(conn.recv(1 << 20))
            seconds = time.perf_counter() - started
        proxy.close()
        listener.close()
        expected = rtt + (amount / rate if rate else 0.0)
        if abs(seconds - expected) > 0.1 * expected + 0.005:
            raise SystemExit(f"The proxy is off: {direction} took {seconds:.3f} s where {expected:.3f} s was expected.")
        results.append(f"{direction} {seconds:.3f} s (expected {expected:.3f})")
    return "proxy self-check: " + ", ".join(results)


# --- the server -----------------------------------------------------------------------------------


class SlowSegmenter:
    """Stands in for a GPU model: the phantom model's labels and info, taking ``SERVER_SECONDS`` mostly asleep.

    The reference model itself needs far longer than a GPU on a 512^3-class CT and would compete with
    the client for this machine's two cores; a thresholded body plus a sleep keeps the server's time
    near a real inference's and its CPU use small.
    """

    def __init__(self) -> None:
        self._inner = PhantomOrganSegmenter()
        self.name, self.type = self._inner.name, self._inner.type

    def info(self):
        return self._inner.info()

    def run(self, request):
        started = time.perf_counter()
        array = sitk.GetArrayViewFromImage(request.image)
        labels = (array > 150).astype(np.uint8) + (array > 400).astype(np.uint8)
        time.sleep(max(0.0, SERVER_SECONDS - (time.perf_counter() - started)))
        return ModelOutput(labels, {})


class FullGridDeepgrow:
    """The reference deepgrow model answering as MONAI Label does: the whole grid, no crop box."""

    name = "region_grow_deepgrow_full_grid"

    def __init__(self) -> None:
        self._inner = RegionGrowDeepgrow()
        self.type = self._inner.type

    def info(self):
        return dict(self._inner.info(), name=self.name)

    def run(self, request):
        output = self._inner.run(request)
        return ModelOutput(output.labels, {key: value for key, value in output.params.items() if key != "crop"})


# --- the paths ------------------------------------------------------------------------------------


def slicer_write(volume, path: Path) -> None:
    """What the older plugins do inside Slicer (saveNode through a storage node); SimpleITK without slicer-core."""
    try:
        import slicer
    except ImportError:
        sitk.WriteImage(volume.to_sitk(), str(path), useCompression=True)
        return
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(volume.grid.ijk_to_ras()))
    slicer.mrmlScene = scene
    slicer.util.updateVolumeFromArray(node, volume.array)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(True)
    storage.WriteData(node)


def older_path(url: str, volume, endpoint: str, model: str, params: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "volume.nii.gz"
        slicer_write(volume, path)
        with open(path, "rb") as stream:
            response = requests.post(f"{url}/v1/{endpoint}", params={"model": model},
                                     files={"datapoint": ("volume.nii.gz", stream)}, data={"params": params})
        response.raise_for_status()
        from ClaraAWSLib.core.multipart import parse_multipart

        part = next(p for p in parse_multipart(response.headers["Content-Type"], response.content) if p.filename)
        result = Path(folder) / "result.nii.gz"
        result.write_bytes(part.data)
        return sitk.GetArrayFromImage(sitk.ReadImage(str(result)))


def _far_end(role: str, conn, up_bits: float, down_bits: float, rtt: float, target_port: int = 0) -> None:
    """The server or the network, each in a process of its own (on other machines in reality).

    Commands over ``conn``: "reset" starts a measurement, "read" answers what happened since then
    (the proxy: bytes up and down; the server: its seconds), "stop" ends the process.
    """
    if role == "server":
        server = ReferenceServer(models=[SlowSegmenter(), RegionGrowDeepgrow(), FullGridDeepgrow()]).start()
        conn.send(server.port)
    else:
        proxy = ThrottlingProxy(target_port, up_bits, down_bits, rtt)
        conn.send(proxy.port)
    before = 0
    while True:
        command = conn.recv()
        if command == "reset":
            if role == "server":
                before = len(server.stats.compute_seconds)
            else:
                proxy.reset_counts()
            conn.send(None)
        elif command == "read":
            if role == "server":
                # From each request body's last byte to its answer: decoding, the model, the result file.
                conn.send(sum(seconds for _, seconds in server.stats.compute_seconds[before:]))
            else:
                conn.send((proxy.bytes["up"], proxy.bytes["down"], proxy.bytes["connections"]))
        else:
            (server.stop if role == "server" else proxy.close)()
            conn.send(None)
            return


class FarEnd:
    """The reference server and the throttling proxy in front of it, in two processes."""

    def __init__(self, up_bits: float, down_bits: float, rtt: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._ends = []
        port = 0
        for role in ("server", "proxy"):
            conn, child = context.Pipe()
            process = context.Process(target=_far_end, args=(role, child, up_bits, down_bits, rtt, port), daemon=True)
            process.start()
            port = conn.recv()
            self._ends.append((conn, process))
        self.url = f"http://127.0.0.1:{port}"

    def ask(self, command: str):
        answers = []
        for conn, _ in self._ends:
            conn.send(command)
            answers.append(conn.recv())
        return answers

    def close(self) -> None:
        self.ask("stop")
        for _, process in self._ends:
            process.join(10)


def measure(far, action, connections: bool = False):
    """(wall seconds, bytes up, bytes down, server seconds, value[, new connections]) of one run through the proxy."""
    time.sleep(0.3)
    far.ask("reset")
    started = time.perf_counter()
    value = action()
    wall = time.perf_counter() - started
    handled, (sent, received, opened) = far.ask("read")
    return (wall, sent, received, handled, value) + ((opened,) if connections else ())


def run_link(phantom, up_mbit: float, down_mbit: float, rtt_ms: float) -> None:
    up, down, rtt = up_mbit * 1e6, down_mbit * 1e6, rtt_ms / 1000
    print(f"\n=== link {up_mbit:g} Mbit/s up, {down_mbit:g} Mbit/s down, {rtt_ms:g} ms RTT ===")
    print(self_check(up, down, rtt))
    volume = phantom.ct
    clicks = _click_points(phantom)
    far = FarEnd(up, down, rtt)
    try:
        url = far.url

        def ours(image_factory, **client_options):
            def action():
                with AIAAClient(url, **client_options) as client:
                    image = image_factory(client)
                    result = client.auto_segment({"name": AUTO_MODEL, "type": "segmentation"}, image)
                    labels = result.labels()
                    return result, labels

            return action

        rows = {}
        rows["older path (storage node .nii.gz, whole-file upload)"] = measure(
            far, lambda: older_path(url, volume, "segmentation", AUTO_MODEL, "{}"))
        rows["ClaraAWS, encode then send (level 1)"] = measure(
            far, ours(lambda c: volume, stream_uploads=False, adaptive_level=False))
        rows["ClaraAWS, compress while sending, level 1"] = measure(far, ours(lambda c: volume, adaptive_level=False))
        rows["ClaraAWS, compress while sending"] = measure(far, ours(lambda c: volume))
        level = rows["ClaraAWS, compress while sending"][4][0].upload_level
        pre = {}

        def pre_encoded(client):
            return pre["encode"]

        with AIAAClient(url) as chooser:
            pre["encode"] = chooser.start_encode(volume)
            pre["encode"].result()  # the user picked the volume a while before clicking
        rows["ClaraAWS, pre-encoded when the volume was chosen"] = measure(far, ours(pre_encoded))

        def cropped():
            with AIAAClient(url) as client:
                client.body_crop[AUTO_MODEL] = BodyCrop(threshold=-500, margin_mm=10)
                result = client.auto_segment({"name": AUTO_MODEL, "type": "segmentation"}, volume)
                return result, result.labels()

        rows["ClaraAWS, body crop, compress while sending"] = measure(far, cropped)

        older_up = rows["older path (storage node .nii.gz, whole-file upload)"][1]
        full_up = min(older_up, *(row[1] for name, row in rows.items() if name.startswith("ClaraAWS") and "crop" not in name))
        older_wall = rows["older path (storage node .nii.gz, whole-file upload)"][0]
        speeds = machine_speeds(volume, wait=True)
        table = ", ".join(f"{lv}: {speed / 1e6:.0f} MB/s x{ratio:.3f}" for lv, (speed, ratio) in speeds.table.items())
        measured = server_wire(url).history.throughput() or 0.0
        print(f"Uplink measured on earlier uploads {measured * 8 / 1e6:.1f} Mbit/s; this machine deflates {table}")
        print(f"Auto-segmentation (levels: streamed {level}, pre-encoded {pre['encode'].level}):")
        print(f"  {'path':<52} {'wall':>7} {'up MB':>7} {'down MB':>8} {'server':>7} {'limit':>7} {'/older':>7} {'/limit':>7}")
        for name, (wall, sent, received, handled, _) in rows.items():
            limit = full_up / (up / 8) + handled + received / (down / 8) + 2 * rtt
            print(f"  {name:<52} {wall:6.2f}s {sent / 1e6:7.2f} {received / 1e6:8.3f} {handled:6.2f}s {limit:6.2f}s "
                  f"{wall / older_wall:7.2f} {wall / limit:7.2f}")
        check_same_labels(rows)

        # --- a later deepgrow click ---
        with AIAAClient(url) as client:
            session = client.create_session(volume)
            client.deepgrow(DEEPGROW_MODEL, clicks[:1], [], session=session)  # the first click

            def our_click():
                result = client.deepgrow(DEEPGROW_MODEL, clicks[:2], [], current_point=clicks[1], session=session)
                crop = result.params.get("crop")
                stop = crop[2][1] + 1 if crop else None
                return result.labels(SliceLimit(volume.grid, stop) if stop is not None else None)

            click = measure(far, our_click)
            client.close_session(session)
        scene_click(far, volume, clicks, up, down, rtt)
        params = '{"foreground": %s, "background": [], "current_point": %s}' % (clicks[:2], clicks[1])
        older_click = measure(far, lambda: older_path(url, volume, "deepgrow", DEEPGROW_MODEL, params))
        print("A later deepgrow click:")
        for name, (wall, sent, received, handled, _) in (("older path (re-writes and re-sends the volume)", older_click),
                                                         ("ClaraAWS (points into the session)", click)):
            limit = click[1] / (up / 8) + handled + received / (down / 8) + 2 * rtt
            print(f"  {name:<52} {wall:6.2f}s {sent / 1e6:7.3f} {received / 1e6:8.3f} {handled:6.2f}s {limit:6.2f}s "
                  f"{wall / older_click[0]:7.2f} {wall / limit:7.2f}")
    finally:
        far.close()


def scene_click(far, volume, clicks, up: float, down: float, rtt: float) -> None:
    """A later click through ClaraAWSLogic into a segment, against a full-grid answer; needs slicer-core."""
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Testing/, for slicer_scene
        import slicer_scene as ss
        from ClaraAWSLib import ClaraAWSLogic
    except ImportError as error:
        print(f"A later click through the scene: skipped ({error}; install slicer-core)")
        return
    harness = ss.new_scene()
    node = ss.add_volume(harness, volume)
    segmentation = ss.new_segmentation(harness, node)
    segment = segmentation.GetSegmentation().AddEmptySegment("", "spleen", [0.6, 0.4, 0.6])
    world = [ss.voxel_to_world(node, click) for click in clicks]
    logic = ClaraAWSLogic(harness.scene)
    logic.connect(far.url)
    try:
        logic.deepgrow(node, segmentation, segment, FullGridDeepgrow.name, world[:1])  # the first click uploads

        def later_click():
            request = logic.prepareDeepgrow(node, segmentation, segment, FullGridDeepgrow.name, world[:2])
            request.run()
            applied = time.perf_counter()
            logic.apply(request)
            return request, time.perf_counter() - applied

        by_engine = {}
        package = inflate._zlib_ng
        try:
            for engine, module in _inflaters(package):
                inflate._zlib_ng = module
                by_engine[engine] = [measure(far, later_click, connections=True) for _ in range(3)]
        finally:
            inflate._zlib_ng = package
    finally:
        logic.cleanup()
    print("A later deepgrow click through the scene (ClaraAWSLogic), full-grid answer without a crop box:")
    print(f"  {'inflater':<{_ENGINE_WIDTH}} {'click':<6} {'wall':>7} {'up KB':>7} {'down KB':>8} {'server':>7} {'wire':>7} "
          f"{'client':>7}  (decode {'':>4} apply)")
    for engine, rows in by_engine.items():
        overheads = []
        for number, (wall, sent, received, handled, (request, apply_seconds), opened) in enumerate(rows, start=2):
            wire = sent / (up / 8) + received / (down / 8) + rtt * (1 + opened)
            overheads.append(wall - handled - wire)
            print(f"  {engine:<{_ENGINE_WIDTH}} {number:<6} {wall:6.3f}s {sent / 1e3:7.2f} {received / 1e3:8.1f} {handled:6.3f}s "
                  f"{wire:6.3f}s {1000 * overheads[-1]:5.0f}ms  ({1000 * request.timings.get('decode', 0.0):4.0f}ms "
                  f"{1000 * apply_seconds:4.0f}ms)")
        median = 1000 * sorted(overheads)[1]
        print(f"  {engine:<{_ENGINE_WIDTH}} later-click client overhead (wall - server - wire): median "
              f"{median:.0f} ms (target under 50 ms: {'met' if median < 50 else 'MISSED'})")


_ENGINE_WIDTH = 46


def _inflaters(package):
    """The zlib-ng package (as the pip install, and as Slicer 5.10 and newer whose Python's zlib is zlib-ng)
    and this Python's own zlib (classic zlib: Slicer 5.8 until zlib-ng is installed), side by side."""
    if package is not None:
        yield "zlib-ng package (as Slicer 5.10+'s own zlib)", package
    own = "zlib-ng" if inflate.python_zlib_is_zlib_ng() else "classic, as Slicer 5.8"
    yield f"Python's zlib {zlib.ZLIB_RUNTIME_VERSION} ({own})"[:_ENGINE_WIDTH], None


def check_same_labels(rows) -> None:
    """Every path must bring back the same labels (the crop's placed back on the full grid)."""
    reference = rows["older path (storage node .nii.gz, whole-file upload)"][4]
    for name, row in rows.items():
        if name.startswith("ClaraAWS"):
            labels = row[4][1].array
            if not np.array_equal(labels, reference):
                differ = int(np.count_nonzero(labels != reference))
                print(f"  note: {name} differs from the older path's labels in {differ} voxels")


def _click_points(phantom):
    spleen = np.argwhere(phantom.truth.array == phantom.labels.index("spleen") + 1)
    rng = np.random.default_rng(0)
    picks = spleen[rng.choice(len(spleen), size=2, replace=False)]
    return [[int(i), int(j), int(k)] for k, j, i in picks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512,512,150")
    parser.add_argument("--links", default="100/200/40,20/100/80", help="up/down Mbit/s and RTT ms, comma-separated")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(","))
    phantom = make_phantom(size=size, spacing=(0.7, 0.7, 2.0))
    print(f"CT {list(size)} int16 ({phantom.ct.array.nbytes / 1e6:.1f} MB), server auto-segmentation ~{SERVER_SECONDS} s")
    for link in args.links.split(","):
        up_mbit, down_mbit, rtt_ms = (float(v) for v in link.split("/"))
        run_link(phantom, up_mbit, down_mbit, rtt_ms)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
