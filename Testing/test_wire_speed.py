"""Compress while sending, the Content-Length fallback, the level choice and the body crop, over real loopback servers."""

from __future__ import annotations

import gzip
import json
import threading

import numpy as np
import pytest

from ClaraAWSLib.backends.aiaa.client import AIAAClient
from ClaraAWSLib.backends.transport import server_wire
from ClaraAWSLib.core.compression import (
    MIN_MEASURED_UPLOAD_BYTES,
    BackgroundEncode,
    CompressionSpeeds,
    WireHistory,
    choose_level,
    machine_speeds,
)
from ClaraAWSLib.core.crop import BodyCrop, body_box, crop_volume
from ClaraAWSLib.core.errors import CancelledError, RemoteError
from ClaraAWSLib.core.geometry import ImageGrid, Volume, place_in_grid, sub_grid, voxel_offset
from ClaraAWSLib.core.imageio import encode_volume, nifti_header
from ClaraAWSLib.core.multipart import parse_multipart
from ClaraAWSLib.server import ReferenceServer
from loopback_servers import LoopbackServer, OtherAIAAServer, _QuietHandler


def oblique_grid(size=(64, 48, 40)) -> ImageGrid:
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)], [0, np.sin(0.3), np.cos(0.3)]])
    return ImageGrid(size, (0.8, 1.1, 2.5), (-120.5, 33.25, 410.0), rotation @ tilt)


def noisy_volume(size=(256, 256, 96), seed=0) -> Volume:
    """A CT-like volume that takes a while to deflate at level 6 on one thread (so it is still compressing)."""
    rng = np.random.default_rng(seed)
    array = rng.normal(40, 300, size=size[::-1]).astype(np.int16)
    return Volume(array, oblique_grid(size))


def slow_encode(volume: Volume) -> BackgroundEncode:
    return BackgroundEncode(volume, level=6, threads=1)


# --- a server that records what arrived -----------------------------------------------------------


def _read_chunked(rfile) -> bytes:
    pieces = []
    while True:
        size = int(rfile.readline().split(b";")[0], 16)
        if size == 0:
            while rfile.readline().strip():
                pass
            return b"".join(pieces)
        pieces.append(rfile.read(size))
        rfile.readline()


class _RecordingHandler(_QuietHandler):
    """Takes sessions; ``refuse`` answers a chunked body with that status (or drops the connection) unread."""

    def do_PUT(self) -> None:
        owner = self.server.owner
        chunked = (self.headers.get("Transfer-Encoding") or "").lower() == "chunked"
        owner.arrivals.append("chunked" if chunked else "length")
        if chunked and owner.refuse is not None:
            self.close_connection = True
            if owner.refuse == "drop":
                return
            self.answer(owner.refuse, b"chunked bodies are not supported", "text/plain", {"Connection": "close"})
            return
        body = _read_chunked(self.rfile) if chunked else self.read_body()
        if owner.always_400:
            self.answer(400, b'{"error": {"message": ["image too thin"]}}', "application/json")
            return
        owner.bodies.append((self.headers.get("Content-Type"), body))
        self.answer(200, json.dumps({"session_id": f"s{len(owner.bodies)}"}).encode(), "application/json")


class RecordingServer(LoopbackServer):
    def __init__(self, refuse=None, always_400=False) -> None:
        super().__init__(_RecordingHandler)
        self.refuse, self.always_400 = refuse, always_400
        self.arrivals, self.bodies = [], []

    def file_part(self, index: int) -> bytes:
        content_type, body = self.bodies[index]
        return next(part for part in parse_multipart(content_type, body) if part.filename).data


# --- compress while sending -----------------------------------------------------------------------


def test_background_encode_gives_the_bytes_of_the_one_shot_encoder_and_a_valid_nifti():
    volume = noisy_volume((96, 80, 30))
    encode = BackgroundEncode(volume, level=3, threads=2)
    data = encode.result().data
    assert data == encode_volume(volume, level=3).data
    raw = gzip.decompress(data)
    assert raw[:348] == nifti_header(volume.grid, np.dtype("<i2"))[:348]
    assert raw[352:] == volume.array.astype("<i2").tobytes()
    assert encode.done and encode.encode_seconds is not None


def test_a_chunked_upload_reaches_the_server_byte_identical_to_the_content_length_one():
    volume = noisy_volume()
    with RecordingServer() as server:
        with AIAAClient(server.url) as client:
            streamed = slow_encode(volume)
            assert not streamed.done
            session = client.create_session(streamed)
        with AIAAClient(server.url, stream_uploads=False) as client:
            client.create_session(slow_encode(volume))
        assert server.arrivals == ["chunked", "length"]
        assert server.file_part(0) == server.file_part(1) == encode_volume(volume, level=6).data
        assert session.image.data == server.file_part(0)  # kept whole for a re-upload after HTTP 440


@pytest.mark.parametrize("refusal", [411, 501, 400, "drop"])
def test_a_server_refusing_chunked_bodies_gets_a_content_length_upload_once_and_for_good(refusal):
    volume = noisy_volume((256, 256, 64))
    with RecordingServer(refuse=refusal) as server:
        with AIAAClient(server.url) as client:
            client.create_session(slow_encode(volume))
        # A new client for the same server (the panel reconnecting) remembers the refusal too.
        with AIAAClient(server.url) as client:
            client.create_session(slow_encode(volume))
        assert server.arrivals == ["chunked", "length", "length"]
        assert server.file_part(0) == server.file_part(1) == encode_volume(volume, level=6).data
        assert server_wire(server.url).chunked_refused and server_wire(server.url).fallbacks == 1


def test_a_400_about_the_image_itself_is_not_taken_for_a_chunked_refusal():
    volume = noisy_volume((256, 256, 64))
    with RecordingServer(always_400=True) as server, AIAAClient(server.url) as client:
        for _ in range(2):
            with pytest.raises(RemoteError, match="image too thin"):
                client.create_session(slow_encode(volume))
        # Each 400 is tried once more with a length; the same answer shows the server reads chunked bodies.
        assert server.arrivals == ["chunked", "length", "chunked", "length"]
        assert not server_wire(server.url).chunked_refused


def test_cancel_during_a_streamed_upload_stops_it_and_creates_nothing():
    volume = noisy_volume((256, 256, 160))
    cancel = threading.Event()
    seen = []

    def progress(sent, total):
        seen.append((sent, total))
        assert sent < total or sent == seen[-1][1]  # the bar never claims to be done before the last byte
        if sent > 2 << 20:
            cancel.set()

    with ReferenceServer() as server, AIAAClient(server.url) as client:
        encode = slow_encode(volume)
        with pytest.raises(CancelledError, match="cancelled"):
            client.create_session(encode, progress=progress, cancel=cancel)
        full = len(encode.result().data)
        assert server.stats.bytes_received < full / 2
        assert server.stats.image_uploads == 0 and len(server.sessions) == 0
    assert seen and seen[-1][0] < full / 2


def test_a_streamed_auto_segmentation_gives_the_labels_of_a_content_length_one():
    volume = noisy_volume((128, 128, 40))
    volume.array[10:30, 40:90, 30:100] = 800
    with OtherAIAAServer(result_suffix=".nii.gz") as server, AIAAClient(server.url) as client:
        streamed = client.auto_segment({"name": "other_threshold", "type": "segmentation"}, slow_encode(volume))
        again = client.auto_segment({"name": "other_threshold", "type": "segmentation"}, volume)
        expected = (volume.array > 100).astype(np.uint8) + (volume.array > 200)
        assert np.array_equal(streamed.labels().array, expected) and np.array_equal(again.labels().array, expected)


# --- choosing the level ---------------------------------------------------------------------------


def test_the_level_follows_the_link_against_this_machines_speed():
    # (voxel bytes per second, compressed / voxel bytes) per level
    speeds = CompressionSpeeds({1: (400e6, 0.50), 3: (200e6, 0.47), 6: (60e6, 0.45), 9: (6e6, 0.44)})
    assert choose_level(None, speeds) == 1  # nothing measured yet
    assert choose_level(2.5e6, speeds) == 6  # 20 Mbit/s: level 6 still makes 27 MB/s, level 9 only 2.6
    assert choose_level(1e6, speeds) == 9
    assert choose_level(50e6, speeds) == 3
    assert choose_level(150e6, speeds) == 1  # the CPU is the bottleneck
    assert choose_level(1e9, speeds) == 1
    nearly_equal = CompressionSpeeds({1: (400e6, 0.500), 3: (200e6, 0.499)})
    assert choose_level(2.5e6, nearly_equal) == 1  # 0.2 % fewer bytes is not worth twice the CPU


def test_wire_history_ignores_uploads_too_small_to_measure_a_link():
    history = WireHistory()
    history.record(100_000, 0.001)
    assert history.throughput() is None
    history.record(MIN_MEASURED_UPLOAD_BYTES, 2.0)
    history.record(MIN_MEASURED_UPLOAD_BYTES, 1.0)
    history.record(MIN_MEASURED_UPLOAD_BYTES, 100.0)
    assert history.throughput() == pytest.approx(MIN_MEASURED_UPLOAD_BYTES / 2.0)
    # An upload that mostly waited for its compressor measured the CPU, not the link.
    history.record(MIN_MEASURED_UPLOAD_BYTES, 0.01, compressor_wait=1.0)
    history.record(MIN_MEASURED_UPLOAD_BYTES, 0.01, compressor_wait=1.0)
    assert history.throughput() == pytest.approx(MIN_MEASURED_UPLOAD_BYTES / 2.0)


def test_uploads_teach_the_client_the_link_and_a_slow_link_gets_denser_bytes():
    volume = noisy_volume((256, 256, 64))
    with ReferenceServer() as server, AIAAClient(server.url) as client:
        assert client.start_encode(volume).level == 1  # nothing known about this server
        streamed = client.create_session(slow_encode(volume))
        # On loopback the compressor, not the link, is the bottleneck: that upload measured nothing.
        assert streamed.image.size_bytes > MIN_MEASURED_UPLOAD_BYTES and client.wire.history.throughput() is None
        client.create_session(encode_volume(volume))
        assert client.wire.history.throughput() > 0  # learnt from the upload just made
        client.wire.history = WireHistory()
        client.wire.history.record(64 << 20, 64.0)  # as if earlier uploads went at 1 MB/s
        assert machine_speeds(volume, wait=True) is not None  # measured once per process, off the upload's path
        dense = client.start_encode(volume)
        assert dense.level > 1
        assert len(dense.result().data) <= len(encode_volume(volume, level=1).data)


# --- the body crop --------------------------------------------------------------------------------


def body_volume() -> Volume:
    """Air around an off-centre body with bright voxels scattered through it (an off-by-one shows)."""
    grid = oblique_grid((70, 60, 34))
    rng = np.random.default_rng(3)
    array = rng.integers(-1024, -960, size=grid.size[::-1]).astype(np.int16)  # air, noisy as in a scanner
    body = (slice(6, 27), slice(11, 44), slice(17, 58))
    array[body] = rng.integers(-100, 100, size=array[body].shape)
    bright = rng.random(array[body].shape) < 0.05
    array[body][bright] = rng.integers(150, 400, size=int(bright.sum()))
    return Volume(array, grid)


def test_the_body_box_holds_every_voxel_above_the_threshold_plus_the_margin_in_mm():
    volume = body_volume()
    start, size = body_box(volume, BodyCrop(threshold=-500, margin_mm=5))
    margin = [int(np.ceil(5 / s)) for s in volume.grid.spacing]  # 7, 5, 2 voxels along i, j, k
    assert start == (17 - margin[0], 11 - margin[1], 6 - margin[2])
    assert size == (41 + 2 * margin[0], 33 + 2 * margin[1], 21 + 2 * margin[2])
    assert body_box(Volume(np.full((5, 6, 7), -1000, np.int16), oblique_grid((7, 6, 5))), BodyCrop()) is None


def test_a_cropped_grid_puts_every_voxel_where_it_was_on_an_oblique_grid():
    volume = body_volume()
    box = ((9, 4, 3), (30, 20, 11))
    cropped = crop_volume(volume, box)
    for ijk in ([0, 0, 0], [29, 19, 10], [7, 13, 5]):
        inside = np.array([*ijk, 1.0])
        whole = np.array([ijk[0] + 9, ijk[1] + 4, ijk[2] + 3, 1.0])
        assert np.allclose(cropped.grid.ijk_to_lps() @ inside, volume.grid.ijk_to_lps() @ whole, atol=1e-9)
        assert cropped.array[ijk[2], ijk[1], ijk[0]] == volume.array[ijk[2] + 3, ijk[1] + 4, ijk[0] + 9]
    assert voxel_offset(cropped.grid, volume.grid) == (9, 4, 3)
    shifted = sub_grid(volume.grid, (0.5, 0, 0), (3, 3, 3))
    assert voxel_offset(shifted, volume.grid) is None  # half a voxel off: not a box of the grid's voxels


def test_place_in_grid_clips_a_box_reaching_past_the_volume():
    grid = oblique_grid((6, 5, 4))
    labels = Volume(np.arange(27, dtype=np.uint8).reshape(3, 3, 3), sub_grid(grid, (4, 3, 2), (3, 3, 3)))
    placed = place_in_grid(labels, grid, (4, 3, 2)).array
    expected = np.zeros((4, 5, 6), np.uint8)
    expected[2:4, 3:5, 4:6] = labels.array[:2, :2, :2]
    assert np.array_equal(placed, expected)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_auto_segmentation_with_the_body_crop_sends_fewer_bytes_and_places_the_result_voxel_exactly(suffix):
    volume = body_volume()
    expected = (volume.array > 100).astype(np.uint8) + (volume.array > 200)  # the server's threshold model, on all voxels
    model = {"name": "other_threshold", "type": "segmentation"}
    with OtherAIAAServer(result_suffix=suffix) as server, AIAAClient(server.url, stream_uploads=False) as client:
        whole = client.auto_segment(model, volume)
        client.body_crop["other_threshold"] = BodyCrop(threshold=-500, margin_mm=4)
        cropped = client.auto_segment(model, volume)
    labels = cropped.labels()
    assert labels.grid.matches(volume.grid)
    assert np.array_equal(labels.array, expected)
    assert np.prod(cropped.input_grid.size) < 0.4 * np.prod(volume.grid.size)
    assert cropped.bytes_sent < 0.6 * whole.bytes_sent


def test_the_body_crop_is_off_unless_set_for_the_model():
    volume = body_volume()
    with OtherAIAAServer(result_suffix=".nii.gz") as server, AIAAClient(server.url, stream_uploads=False) as client:
        client.body_crop["another_model"] = BodyCrop()
        result = client.auto_segment({"name": "other_threshold", "type": "segmentation"}, volume)
    assert result.full_grid is None and result.input_grid.matches(volume.grid)


def test_nothing_listening_is_said_at_once_without_a_content_length_retry():
    import socket

    from ClaraAWSLib.core.errors import ServerUnreachableError

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    encode = slow_encode(noisy_volume())
    with AIAAClient(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(ServerUnreachableError, match="Nothing is listening"):
            client.create_session(encode)
        assert not encode.done  # a retry with a Content-Length would have waited for the whole compression
        assert not client.wire.chunked_refused
    encode.cancel()
