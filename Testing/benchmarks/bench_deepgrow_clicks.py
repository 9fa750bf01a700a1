"""Deepgrow clicks on a 512x512x150 CT over loopback: one upload per volume versus re-sending it per click.

For each click it measures the bytes the client sent and the client's own time: the wall time of the
call (result decoding included) minus the time the server spent handling the request (measured inside
the server: loading the session image, the model, writing the result). Side by side in one run:
- session path (ClaraAWS): the first click uploads the volume into a session, later clicks send points;
- re-send path (older plugins without sessions): every click encodes and uploads the whole volume.
Targets for clicks after the first: under 2 KB sent and under 50 ms of client time.

Run: python Testing/benchmarks/bench_deepgrow_clicks.py [--size 512,512,150] [--clicks 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from ClaraAWSLib.backends.aiaa.client import AIAAClient
from ClaraAWSLib.core.imageio import SliceLimit, encode_volume
from ClaraAWSLib.synthetic.phantom import make_phantom
from ClaraAWSLib.server import ReferenceServer

DEEPGROW_MODEL = "region_grow_deepgrow"


def click_points(phantom, count):
    spleen = np.argwhere(phantom.truth.array == phantom.labels.index("spleen") + 1)
    rng = np.random.default_rng(0)
    picks = spleen[rng.choice(len(spleen), size=count, replace=False)]
    return [[int(i), int(j), int(k)] for k, j, i in picks]


def one_click(client, server, clicks, grid=None, **source):
    """(wall seconds, server handling seconds, bytes sent) of one click, result decoded as the client must."""
    before = len(server.stats.processing_seconds)
    started = time.perf_counter()
    result = client.deepgrow(DEEPGROW_MODEL, clicks, [], current_point=clicks[-1], **source)
    crop = result.params.get("crop")
    stop = crop[2][1] + 1 if crop else None  # inclusive box end, as the scene logic reads it
    result.labels(SliceLimit(grid, stop) if stop is not None and grid is not None else None)
    wall = time.perf_counter() - started
    handled = sum(seconds for _, seconds in server.stats.processing_seconds[before:])
    return wall, handled, result.bytes_sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512,512,150")
    parser.add_argument("--clicks", type=int, default=5)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(","))
    phantom = make_phantom(size=size, spacing=(0.7, 0.7, 2.0))
    points = click_points(phantom, args.clicks)
    print(f"CT {list(size)} int16 ({phantom.ct.array.nbytes / 1e6:.1f} MB), {args.clicks} clicks, model {DEEPGROW_MODEL}")

    with ReferenceServer() as server, AIAAClient(server.url) as client:
        # Session path: the volume goes up once.
        started = time.perf_counter()
        session = client.create_session(encode_volume(phantom.ct))
        first_upload = time.perf_counter() - started
        session_rows = []
        for n in range(1, args.clicks + 1):
            session_rows.append(one_click(client, server, points[:n], phantom.ct.grid, session=session))
        client.close_session(session)

        # Re-send path: encode and upload the whole volume with every click.
        resend_rows = []
        for n in range(1, args.clicks + 1):
            started = time.perf_counter()
            encoded = encode_volume(phantom.ct)  # what every click costs without a session
            encode_seconds = time.perf_counter() - started
            wall, handled, sent = one_click(client, server, points[:n], image=encoded)
            resend_rows.append((wall + encode_seconds, handled, sent))

    def show(name, rows, extra_first=0.0, extra_bytes=0):
        print(name)
        for n, (wall, model_seconds, sent) in enumerate(rows, start=1):
            first = n == 1
            client_ms = 1000 * (wall - model_seconds + (extra_first if first else 0))
            total_sent = sent + (extra_bytes if first else 0)
            print(f"  click {n}: sent {total_sent / 1024:10.1f} KB   client {client_ms:8.1f} ms   server {1000 * model_seconds:7.1f} ms")
        later = rows[1:]
        if later:
            print(f"  after the first: median sent {statistics.median(r[2] for r in later) / 1024:.2f} KB, "
                  f"median client {1000 * statistics.median(r[0] - r[1] for r in later):.1f} ms")
        return later

    later_session = show("Session (ClaraAWS, volume uploaded once):", session_rows, first_upload, session.image.size_bytes)
    later_resend = show("Re-send the volume with each click (older plugins without sessions):", resend_rows)
    if later_session and later_resend:
        ratio_bytes = statistics.median(r[2] for r in later_resend) / statistics.median(r[2] for r in later_session)
        ratio_time = statistics.median(r[0] - r[1] for r in later_resend) / statistics.median(r[0] - r[1] for r in later_session)
        print(f"Per later click, re-sending costs {ratio_bytes:,.0f}x the bytes and {ratio_time:.1f}x the client time.")
    print("Targets after the first click: < 2 KB sent, < 50 ms client time.")
    scene_clicks(phantom, points)


def scene_clicks(phantom, points) -> None:
    """The same clicks through the Slicer scene logic: points from RAS, result into a segment."""
    try:
        import slicer  # noqa: F401
    except ImportError:
        print("(slicer-core not installed: the scene-logic part is skipped)")
        return
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Testing/, for slicer_scene
    import slicer_scene
    from ClaraAWSLib import ClaraAWSLogic

    harness = slicer_scene.new_scene()
    volume_node = slicer_scene.add_volume(harness, phantom.ct)
    segmentation = harness.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
    segment_id = segmentation.GetSegmentation().AddEmptySegment("spleen")
    ras = [list(phantom.ct.grid.ijk_to_ras() @ [i, j, k, 1])[:3] for i, j, k in points]
    rows = []
    with ReferenceServer() as server:
        logic = ClaraAWSLogic(harness.scene)
        logic.connect(server.url)
        for n in range(1, len(points) + 1):
            before = len(server.stats.processing_seconds)
            started = time.perf_counter()
            request = logic.prepareDeepgrow(volume_node, segmentation, segment_id, DEEPGROW_MODEL, ras[:n])
            prepared = time.perf_counter()
            request.run()
            ran = time.perf_counter()
            logic.apply(request)
            applied = time.perf_counter()
            handled = sum(seconds for _, seconds in server.stats.processing_seconds[before:])
            rows.append((prepared - started, ran - prepared - handled, applied - ran, handled))
        logic.cleanup()
    print("Scene logic (prepare on the GUI thread, run on a worker, apply on the GUI thread):")
    for n, (prepare, worker, apply, handled) in enumerate(rows, start=1):
        print(f"  click {n}: GUI {1000 * (prepare + apply):7.1f} ms (prepare {1000 * prepare:.1f}, apply {1000 * apply:.1f})   "
              f"worker besides the server {1000 * worker:7.1f} ms   client total {1000 * (prepare + worker + apply):7.1f} ms")


if __name__ == "__main__":
    main()
