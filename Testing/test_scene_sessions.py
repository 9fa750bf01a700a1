"""The per-volume session cache: one upload per volume state, shared by concurrent requests."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

import slicer  # noqa: E402

import slicer_scene as ss  # noqa: E402
from ClaraAWSLib.core.errors import CancelledError, ServerUnreachableError  # noqa: E402
from ClaraAWSLib.core.geometry import Volume  # noqa: E402
from ClaraAWSLib.scene.export import export_volume  # noqa: E402
from ClaraAWSLib.scene.sessions import SessionCache, VolumeSession, volume_fingerprint  # noqa: E402


class CountingClient:
    """Stands in for AIAAClient's session calls; counts uploads and closes."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay, self.fail = delay, fail
        self.created, self.closed = [], []

    def create_session(self, image, expiry=0, progress=None, cancel=None):
        time.sleep(self.delay)
        if self.fail:
            raise ServerUnreachableError("down")
        session = type("Session", (), {"session_id": f"s{len(self.created) + 1}", "image": image})()
        self.created.append(session)
        return session

    def close_session(self, session):
        self.closed.append(session.session_id)
        return True


@pytest.fixture
def volume_node(harness):
    grid = ss.oblique_grid()
    return ss.add_volume(harness, Volume(np.arange(np.prod(grid.size), dtype=np.int32).reshape(grid.size[::-1]) % 500,
                                         grid))


def test_fingerprint_follows_voxels_and_grid_but_not_names_or_transforms(harness, volume_node):
    first = volume_fingerprint(volume_node)
    volume_node.SetName("renamed")
    volume_node.SetAndObserveTransformNodeID(ss.add_transform(harness, ss.linear_transform()).GetID())
    assert volume_fingerprint(volume_node) == first
    slicer.util.arrayFromVolume(volume_node)[1, 2, 3] += 1
    slicer.util.arrayFromVolumeModified(volume_node)
    second = volume_fingerprint(volume_node)
    assert second != first
    volume_node.SetSpacing(1.0, 2.0, 3.0)
    assert volume_fingerprint(volume_node) != second


def test_concurrent_requests_share_one_upload(harness, volume_node):
    client = CountingClient(delay=0.2)
    entry = VolumeSession(volume_node.GetID(), volume_fingerprint(volume_node), export_volume(volume_node))
    results = []
    threads = [threading.Thread(target=lambda: results.append(entry.open(client))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(client.created) == 1
    assert all(result is client.created[0] for result in results)


def test_a_failed_upload_is_retried_by_the_next_request(harness, volume_node):
    client = CountingClient(fail=True)
    entry = VolumeSession(volume_node.GetID(), volume_fingerprint(volume_node), export_volume(volume_node))
    with pytest.raises(ServerUnreachableError):
        entry.open(client)
    client.fail = False
    assert entry.open(client).session_id == "s1"


def test_closing_during_an_upload_closes_the_new_session(harness, volume_node):
    client = CountingClient(delay=0.3)
    entry = VolumeSession(volume_node.GetID(), volume_fingerprint(volume_node), export_volume(volume_node))
    errors = []

    def upload():
        try:
            entry.open(client)
        except CancelledError as error:
            errors.append(error)

    worker = threading.Thread(target=upload)
    worker.start()
    time.sleep(0.1)
    entry.close(client)
    worker.join()
    assert len(errors) == 1 and client.closed == ["s1"]


def test_cache_replaces_a_stale_entry_and_closes_its_session(harness, volume_node):
    client = CountingClient()
    cache = SessionCache(lambda: client)
    entry = cache.entry_for(volume_node, export_volume)
    entry.open(client)
    assert cache.open_session(volume_node) is client.created[0]
    assert cache.entry_for(volume_node, export_volume) is entry
    slicer.util.arrayFromVolume(volume_node)[0, 0, 0] += 1
    slicer.util.arrayFromVolumeModified(volume_node)
    assert cache.open_session(volume_node) is None
    assert client.closed == ["s1"]
    fresh = cache.entry_for(volume_node, export_volume)
    assert fresh is not entry and not fresh.is_open
    cache.close_all()
    assert len(cache) == 0


def test_background_closes_never_hold_the_calling_thread():
    from ClaraAWSLib.scene.sessions import BackgroundCloser

    class SlowCloser(CountingClient):
        def close_session(self, session):
            time.sleep(0.5)  # a server that answers slowly, or a load balancer dropping packets
            return super().close_session(session)

    client, closer = SlowCloser(), BackgroundCloser()
    started = time.perf_counter()
    for number in range(3):
        closer(client, type("Session", (), {"session_id": f"s{number}"})())
    assert time.perf_counter() - started < 0.2
    assert client.closed == []
    assert closer.wait(timeout=5.0) and sorted(client.closed) == ["s0", "s1", "s2"]
