"""Two tasks behind a load balancer (issue 19): with the target group's cookie stickiness, which
`clara-aws service --tasks N` turns on above one task, a session's clicks stay on the task that holds
the volume, because the client keeps the balancer's cookie; without it, a click reaching the other task
is answered "unknown session" (HTTP 440) and the volume goes up again."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import running_reference_server
from load_balancer import LoadBalancer

from ClaraAWSLib.backends import connect
from ClaraAWSLib.core.errors import SessionExpiredError
from ClaraAWSLib.core.geometry import ImageGrid, Volume

CLICKS = 3


@pytest.fixture(scope="module")
def tasks():
    with running_reference_server() as first, running_reference_server() as second:
        yield first, second


def small_ct() -> Volume:
    array = np.full((16, 24, 24), -900, np.int16)
    array[4:12, 6:18, 6:18] = 200
    return Volume(array, ImageGrid((24, 24, 16), (1.5, 1.5, 3.0), (-10.0, 20.0, 5.0), np.eye(3)))


def uploads(tasks) -> int:
    return sum(task.stats.image_uploads for task in tasks)


def clicks_through(balancer_url: str) -> None:
    client = connect(balancer_url, backend="aiaa")
    try:
        session = client.create_session(small_ct())
        for _ in range(CLICKS):
            client.deepgrow("region_grow_deepgrow", [[12, 12, 8]], [], session=session)
    finally:
        client.close()


def test_with_stickiness_every_click_reaches_the_task_that_holds_the_volume(tasks):
    before = uploads(tasks)
    with LoadBalancer([task.url for task in tasks], sticky=True) as balancer:
        clicks_through(balancer.url)
    assert len(balancer.requests) == 1  # one task saw every request: the session upload and the clicks
    assert sum(balancer.requests.values()) == 1 + CLICKS
    assert uploads(tasks) - before == 1  # the volume went up once


def test_without_stickiness_a_click_reaches_the_other_task_and_the_session_cannot_hold(tasks):
    """Round-robin over two tasks: the session goes up to one, the click to the other (440), the volume goes
    up again (to the first), the retried click to the other again: the client gives up in one sentence."""
    before = uploads(tasks)
    with LoadBalancer([task.url for task in tasks], sticky=False) as balancer:
        with pytest.raises(SessionExpiredError, match="rejected twice"):
            clicks_through(balancer.url)
    assert len(balancer.requests) == 2 and balancer.requests[0] == balancer.requests[1] == 2
    assert uploads(tasks) - before == 2  # the volume was sent again
