"""Cancel while the server is still thinking: the request stops waiting at once, not after the read timeout."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ClaraAWSLib.backends.aiaa.client import AIAAClient
from ClaraAWSLib.core.errors import CancelledError
from ClaraAWSLib.core.geometry import ImageGrid, Volume
from hostile_servers import HostileServer


@pytest.fixture
def silent_server():
    with HostileServer() as server:
        yield server
        server.silence.set()


def _volume():
    grid = ImageGrid((16, 12, 6), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    return Volume(np.arange(16 * 12 * 6, dtype=np.int16).reshape(6, 12, 16), grid)


def test_cancel_ends_a_request_the_server_never_answers(silent_server):
    cancel = threading.Event()
    outcome = {}

    def call():
        with AIAAClient(silent_server.url + "/silent", read_timeout=900) as client:
            try:
                client.segmentation("anything", _volume(), cancel=cancel)
            except BaseException as error:  # noqa: BLE001 - the test looks at what came out
                outcome["error"] = error
            outcome["at"] = time.perf_counter()

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    for _ in range(200):  # until the server has the whole request and is "thinking"
        if any(seen.method == "POST" for seen in silent_server.seen):
            break
        time.sleep(0.02)
    time.sleep(0.3)
    cancelled_at = time.perf_counter()
    cancel.set()
    worker.join(10)
    assert not worker.is_alive(), "the request still waits for the server"
    assert isinstance(outcome.get("error"), CancelledError), outcome
    assert "cancelled" in str(outcome["error"])
    assert outcome["at"] - cancelled_at < 2.0  # stopped waiting at once (the read timeout is 900 s)


def test_a_request_that_is_not_cancelled_still_gets_its_deadline(silent_server):
    started = time.perf_counter()
    with AIAAClient(silent_server.url + "/silent", read_timeout=900, deadline=1.0) as client:
        with pytest.raises(Exception) as caught:
            client.segmentation("anything", _volume(), cancel=threading.Event())
    assert not isinstance(caught.value, CancelledError)  # a deadline is not a cancel
    assert time.perf_counter() - started < 10
