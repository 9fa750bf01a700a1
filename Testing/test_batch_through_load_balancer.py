"""A batch through a load balancer while the service's tasks are replaced (issue 19): two reference
servers on 127.0.0.1 play the ECS service's GPU tasks (one model run at a time, each taking a while),
the test load balancer plays the ALB. A task stops mid-batch (its requests answered 502 by the
balancer, as an ALB does), leaves the target group and a new task takes its place; the balancer drops
connections; no target is in service for a while (503); a task outlasts the idle timeout (504). No case is lost, every output equals what a
task answers for that case directly, and a 4xx is never sent twice.
"""

from __future__ import annotations

import argparse
import csv
import threading
import time

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import running_reference_server
from load_balancer import LoadBalancer

from ClaraAWSLib.backends import connect
from ClaraAWSLib.cli import batch_command
from ClaraAWSLib.core.geometry import ImageGrid, Volume
from ClaraAWSLib.datasets.batch import BatchSettings, run_batch
from ClaraAWSLib.datasets.inputs import expand_inputs
from ClaraAWSLib.server import ReferenceServer

MODEL = "phantom_abdomen_seg"
CASES = 8
TASK = dict(inference_delay=0.25, inference_slots=1)  # one GPU: a second request waits for the first
FAST_RETRIES = dict(attempts=6, pause_s=0.1, max_pause_s=0.4)


def ct(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    array = np.full((12, 28, 28), -1000, np.int16)
    array[2:10, 4:24, 4:24] = rng.integers(-80, 80, size=(8, 20, 20))  # soft tissue
    z, y, x = rng.integers(3, 8), rng.integers(6, 16), rng.integers(6, 16)
    array[z:z + 3, y:y + 6, x:x + 6] = 180  # a bright organ at a case's own place
    return array


@pytest.fixture
def dataset(tmp_path):
    grid = ImageGrid((28, 28, 12), (3.0, 3.0, 5.0), (-40.0, -40.0, 0.0), np.eye(3))
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(CASES):
        sitk.WriteImage(Volume(ct(n), grid).to_sitk(), str(folder / f"case_{n}.nii.gz"))
    return folder


def segmenter(url):
    """The command's own segment function (one connection per worker thread) on ``url``."""
    return batch_command._segmenter(argparse.Namespace(model=MODEL), lambda _: connect(url))


def direct_answers(dataset, server_url):
    """Each case sent once, directly to a task: the answers the batch must reproduce."""
    segment, _, close = segmenter(server_url)
    try:
        return {case.case_id: segment(case.load()).array for case in expand_inputs(str(dataset))}
    finally:
        close()


def run_batch_on(segment_and_labels, dataset, outdir, workers=2):
    segment, (labels, values), close = segment_and_labels
    try:
        settings = BatchSettings(outdir=outdir, label_names=labels, label_values=values, model_name=MODEL, workers=workers, **FAST_RETRIES)
        return run_batch(expand_inputs(str(dataset)), segment, settings)
    finally:
        close()


def run_through(balancer, dataset, outdir, workers=2):
    return run_batch_on(segmenter(balancer.url), dataset, outdir, workers)


def outputs(outdir):
    return {path.name[:-len(".nii.gz")]: sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
            for path in outdir.glob("*.nii.gz")}


def report_rows(outdir):
    with open(outdir / "report.csv", newline="") as stream:
        return {row["case"]: row for row in csv.DictReader(stream)}


def wait_for(condition, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the load balancer never got there"
        time.sleep(0.01)


def assert_every_case_as_answered_directly(outdir, expected):
    rows = report_rows(outdir)
    assert {case: row["status"] for case, row in rows.items()} == {case: "ok" for case in expected}
    written = outputs(outdir)
    assert set(written) == set(expected)
    for case, labels in expected.items():
        assert np.array_equal(written[case], labels), case


def test_a_task_that_stops_mid_batch_is_replaced_and_no_case_is_lost(dataset, tmp_path):
    with running_reference_server(**TASK) as first, running_reference_server(**TASK) as second:
        expected = direct_answers(dataset, first.url)
        with LoadBalancer([first.url, second.url]) as balancer:
            new_task = ReferenceServer(**TASK)

            def replace_the_second_task():
                wait_for(lambda: balancer.requests[1] >= 2)  # the second task is at work
                second.stop()  # the request it holds is cut: the balancer answers 502
                wait_for(lambda: balancer.own_answers[502] >= 1)  # until its health check fails
                balancer.take_out(1)
                balancer.put_back(1, new_task.start().url)

            replacer = threading.Thread(target=replace_the_second_task)
            replacer.start()
            try:
                run_through(balancer, dataset, tmp_path / "out")
            finally:
                replacer.join()
                new_task.stop()
    assert balancer.own_answers[502] >= 1
    assert new_task.stats.image_uploads >= 1  # the new task took cases too
    assert_every_case_as_answered_directly(tmp_path / "out", expected)


def test_dropped_connections_are_sent_again(dataset, tmp_path):
    with running_reference_server(**TASK) as first, running_reference_server(**TASK) as second:
        expected = direct_answers(dataset, first.url)
        uploads_before = first.stats.image_uploads + second.stats.image_uploads
        with LoadBalancer([first.url, second.url]) as balancer:
            ready = segmenter(balancer.url)
            balancer.drop_next(3)
            run_batch_on(ready, dataset, tmp_path / "out")
        uploads = first.stats.image_uploads + second.stats.image_uploads - uploads_before
    assert balancer.own_answers["dropped"] == 3
    assert uploads == CASES  # dropped before a task saw them: each case reached a task once
    assert_every_case_as_answered_directly(tmp_path / "out", expected)


def test_no_task_in_service_answers_503_until_one_registers(dataset, tmp_path):
    with running_reference_server(**TASK) as first, running_reference_server(**TASK) as second:
        expected = direct_answers(dataset, first.url)
        with LoadBalancer([first.url, second.url]) as balancer:
            ready = segmenter(balancer.url)  # the model list is read while the tasks are in service
            balancer.take_out(0)
            balancer.take_out(1)
            batch = threading.Thread(target=run_batch_on, args=(ready, dataset, tmp_path / "out"))
            batch.start()
            wait_for(lambda: balancer.own_answers[503] >= 2)
            balancer.put_back(1)
            batch.join(60)
            assert not batch.is_alive()
    assert balancer.own_answers[503] >= 2
    assert_every_case_as_answered_directly(tmp_path / "out", expected)


def test_a_task_slower_than_the_idle_timeout_answers_504_and_the_case_is_sent_again(dataset, tmp_path):
    with running_reference_server(**TASK) as fast, running_reference_server(inference_delay=3.0) as slow:
        expected = direct_answers(dataset, fast.url)
        with LoadBalancer([fast.url, slow.url], idle_timeout=1.5) as balancer:
            ready = segmenter(balancer.url)

            def health_check():  # the slow task fails its health check after its first 504
                wait_for(lambda: balancer.own_answers[504] >= 1)
                balancer.take_out(1)

            checker = threading.Thread(target=health_check)
            checker.start()
            run_batch_on(ready, dataset, tmp_path / "out")
            checker.join()
    assert balancer.own_answers[504] >= 1
    assert_every_case_as_answered_directly(tmp_path / "out", expected)


def test_a_4xx_through_the_balancer_is_sent_once_and_the_other_cases_finish(dataset, tmp_path):
    big = ImageGrid((40, 40, 12), (3.0, 3.0, 5.0), (0.0, 0.0, 0.0), np.eye(3))
    sitk.WriteImage(Volume(np.full((12, 40, 40), -1000, np.int16), big).to_sitk(), str(dataset / "too_big.nii.gz"))
    limit = dict(TASK, max_image_voxels=28 * 28 * 12)  # the big case is refused with HTTP 413
    with running_reference_server(**limit) as first, running_reference_server(**limit) as second:
        expected = direct_answers(dataset / "case_0.nii.gz", first.url)
        first.stats.reset()
        with LoadBalancer([first.url, second.url]) as balancer:
            run_through(balancer, dataset, tmp_path / "out")
    rows = report_rows(tmp_path / "out")
    assert rows["too_big"]["status"] == "failed" and "413" in rows["too_big"]["message"]
    assert all(rows[f"case_{n}"]["status"] == "ok" for n in range(CASES))
    assert np.array_equal(outputs(tmp_path / "out")["case_0"], expected["case_0"])
    # Each case reached a task once: the refused case was not sent again.
    segmentations = sum(task.stats.requests.get("/v1/segmentation", 0) for task in (first, second))
    assert segmentations == CASES + 1 and not balancer.own_answers


def test_clara_aws_batch_starts_while_a_task_is_replaced(dataset, tmp_path, capsys):
    """The command as a user types it, through the balancer while its only task is replaced: the first
    request (the server's description) is dropped, the second answered 503; the command waits with its own
    pauses (2.5 to 5 s, then 5 to 10 s) instead of giving up, and every case is segmented."""
    from ClaraAWSLib.cli import main

    with running_reference_server(**TASK) as task:
        expected = direct_answers(dataset, task.url)
        with LoadBalancer([task.url]) as balancer:
            balancer.drop_next(1)
            failing_once = {"models": True}
            original_choose = balancer.choose

            def choose(cookie):  # the request after the dropped one finds no task in service
                index = original_choose(cookie)
                if failing_once["models"] and balancer.own_answers["dropped"] == 1:
                    failing_once["models"] = False
                    return None
                return index

            balancer.choose = choose
            code = main(["batch", "--server", balancer.url, str(dataset), "-o", str(tmp_path / "out"),
                         "--model", MODEL, "--jobs", "2"])
    assert code == 0, capsys.readouterr().err
    assert balancer.own_answers == {"dropped": 1, 503: 1}
    assert_every_case_as_answered_directly(tmp_path / "out", expected)
    assert "Traceback" not in capsys.readouterr().err
