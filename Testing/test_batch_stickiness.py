"""`clara-aws batch` through a load balancer with cookie stickiness (issue 19).

`clara-aws service --tasks N` turns on the target group's lb_cookie stickiness so that an interactive
session's clicks stay on the task that holds its volume. A batch request is self-contained (one upload and
inference each, no server-side session), so a batch backend must keep no balancer cookie: otherwise each
worker stays on the task that answered it first, and a task added during the run gets nothing. Two
reference servers on 127.0.0.1 play the tasks, Testing/load_balancer.py the ALB (sticky).
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import running_reference_server
from load_balancer import COOKIE, LoadBalancer

from ClaraAWSLib.backends import connect
from ClaraAWSLib.cli import batch_command
from ClaraAWSLib.core.geometry import ImageGrid, Volume
from ClaraAWSLib.datasets.batch import BatchSettings, run_batch
from ClaraAWSLib.datasets.inputs import expand_inputs
from ClaraAWSLib.server import ReferenceServer

MODEL = "phantom_abdomen_seg"
TASK = dict(inference_delay=0.2, inference_slots=1)  # one GPU each: a second request waits for the first
SEGMENTATION = "/v1/segmentation"


def write_cases(folder, count: int):
    grid = ImageGrid((28, 28, 12), (3.0, 3.0, 5.0), (-40.0, -40.0, 0.0), np.eye(3))
    folder.mkdir()
    for n in range(count):
        array = np.full((12, 28, 28), -1000, np.int16)
        array[2:10, 4:24, 4:24] = 40
        array[3 + n % 4:6 + n % 4, 8:14, 8:14] = 180
        sitk.WriteImage(Volume(array, grid).to_sitk(), str(folder / f"case_{n}.nii.gz"))
    return folder


def segmentations(task) -> int:
    return task.stats.requests.get(SEGMENTATION, 0)


def wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the batch never got there"
        time.sleep(0.01)


def test_a_task_added_during_a_batch_gets_cases_although_the_balancer_is_sticky(tmp_path):
    """Before: every worker kept the cookie of the only task, so the task added mid-run got no case."""
    dataset = write_cases(tmp_path / "in", 14)
    with running_reference_server(**TASK) as first:
        new_task = ReferenceServer(**TASK)
        # Index 1 is a target not yet registered; put_back registers the new task there mid-run.
        with LoadBalancer([first.url, first.url], sticky=True) as balancer:
            balancer.take_out(1)
            segment, (labels, values), close = batch_command._segmenter(argparse.Namespace(model=MODEL),
                                                                         lambda _: connect(balancer.url))

            def add_a_task():
                wait_for(lambda: segmentations(first) >= 3)
                balancer.put_back(1, new_task.start().url)

            adder = threading.Thread(target=add_a_task)
            adder.start()
            try:
                settings = BatchSettings(outdir=tmp_path / "out", label_names=labels, label_values=values, model_name=MODEL, workers=2)
                report = run_batch(expand_inputs(str(dataset)), segment, settings)
            finally:
                close()
                adder.join()
                new_task.stop()
    assert [row.status for row in report.rows] == ["ok"] * 14
    assert segmentations(new_task) >= 3, (segmentations(first), segmentations(new_task))


def test_clara_aws_batch_spreads_its_cases_over_both_tasks_of_a_sticky_balancer(tmp_path, capsys):
    """The command as a user types it, one request in flight: before, the balancer's cookie from the first
    answer sent every case to that task."""
    from ClaraAWSLib.cli import main

    dataset = write_cases(tmp_path / "in", 6)
    with running_reference_server(**TASK) as first, running_reference_server(**TASK) as second:
        with LoadBalancer([first.url, second.url], sticky=True) as balancer:
            code = main(["batch", "--server", balancer.url, str(dataset), "-o", str(tmp_path / "out"),
                         "--model", MODEL, "--jobs", "1"])
        assert code == 0, capsys.readouterr().err
        assert segmentations(first) == segmentations(second) == 3


def test_the_batch_keeps_no_cookie_but_interactive_backends_still_do(tmp_path):
    """The batch's cookie-less backends are its own: a backend opened afterwards, in the same thread, keeps
    the balancer's cookie as the interactive commands and the Slicer module need."""
    with running_reference_server() as first, running_reference_server() as second:
        with LoadBalancer([first.url, second.url], sticky=True) as balancer:
            opened = []

            def open_backend(_):
                opened.append(connect(balancer.url))
                return opened[-1]

            segment, _, close = batch_command._segmenter(argparse.Namespace(model=MODEL), open_backend)
            close()
            interactive = connect(balancer.url)
            try:
                interactive.models()
                interactive.models()
            finally:
                interactive.close()
    assert opened and all(not backend.transport.http.cookies for backend in opened)
    assert COOKIE in interactive.transport.http.cookies
    assert len(balancer.requests) == 2  # the batch's lookups spread; the interactive backend then stuck


@pytest.mark.parametrize("keep_cookies", [True, False])
def test_the_backend_factory_opens_a_backend_with_or_without_cookies(keep_cookies):
    with running_reference_server() as first, running_reference_server() as second:
        with LoadBalancer([first.url, second.url], sticky=True) as balancer:
            backend = connect(balancer.url, backend="aiaa", keep_cookies=keep_cookies)
            try:
                for _ in range(4):
                    backend.models()
            finally:
                backend.close()
    if keep_cookies:
        assert COOKIE in backend.transport.http.cookies and len(balancer.requests) == 1
    else:
        assert not backend.transport.http.cookies and balancer.requests[0] == balancer.requests[1] == 2
