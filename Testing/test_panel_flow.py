"""The Slicer panel's request flow, without Qt: prepare on this thread, run on a JobRunner worker, apply in poll().

This is what ClaraAWSWidget does with a QTimer; here the test thread plays the GUI thread. It runs the
real ClaraAWSLogic (slicer-core) against the reference server on 127.0.0.1.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

import slicer_scene as ss  # noqa: E402
from ClaraAWSLib import ClaraAWSLogic  # noqa: E402
from ClaraAWSLib.panel.jobs import JobOutcome, JobRunner  # noqa: E402
from ClaraAWSLib.synthetic.phantom import make_phantom  # noqa: E402
from ClaraAWSLib.panel.processing_state import ProcessingState, ProcessingStateMachine  # noqa: E402
from ClaraAWSLib.core.progress import describe_any  # noqa: E402

WAIT_SECONDS = 60.0


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(size=(64, 64, 32), spacing=(4.0, 4.0, 8.0), seed=5)


@pytest.fixture
def volume_node(harness, phantom):
    return ss.add_volume(harness, phantom.ct)


@pytest.fixture
def logic(harness, server):
    logic = ClaraAWSLogic(harness.scene)
    yield logic
    logic.cleanup()


@pytest.fixture
def runner():
    jobs = JobRunner()
    yield jobs
    jobs.shutdown(timeout=10)


def poll_until(runner, condition):
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "the job did not finish"
        runner.poll()
        time.sleep(0.01)


def model_of_type(models, kind):
    return next(model["name"] for model in models if model["type"] == kind)


def node_count(harness, class_name="vtkMRMLSegmentationNode"):
    return harness.scene.GetNumberOfNodesByClass(class_name)


def test_connect_runs_off_the_calling_thread_and_lists_models(server, logic, runner):
    seen = {}

    def work(progress, cancel):
        seen["thread"] = threading.get_ident()
        return logic.connect(server.url, verify=True)

    job = runner.start("connect", work, on_result=lambda models: seen.setdefault("models", models))
    poll_until(runner, lambda: job.finished)
    assert seen["thread"] != threading.get_ident()
    assert {"segmentation", "annotation", "deepgrow"} <= {model["type"] for model in seen["models"]}


def test_auto_segment_flow_reports_upload_progress_and_imports_on_the_polling_thread(
        harness, server, logic, runner, volume_node, phantom):
    models = logic.connect(server.url)
    state = ProcessingStateMachine()
    texts, outcome = [], {}
    request = logic.prepareAutoSegment(volume_node, model_of_type(models, "segmentation"), None)
    state.start()

    def on_result(result):
        state.result_arrived()
        outcome["thread"] = threading.get_ident()
        outcome["segmentation"] = logic.apply(request)
        state.imported()

    reported = []  # every report, as the worker made it (poll() passes on only the newest of each batch)

    def work(progress, cancel):
        def spy(*values):
            reported.append(values)
            progress(*values)

        return request.run(spy, cancel)

    runner.start("auto", work, on_progress=lambda payload: texts.append(describe_any(payload, detail="inference").text),
                 on_result=on_result, on_error=lambda error: outcome.setdefault("error", error))
    poll_until(runner, lambda: not runner.busy)

    assert "error" not in outcome
    assert state.state is ProcessingState.DONE
    assert outcome["thread"] == threading.get_ident()
    segmentation = outcome["segmentation"].GetSegmentation()
    names = [segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())]
    assert names == phantom.labels
    # the bar reads "Uploading x of y MB" during the upload, then waits for the server
    described = [describe_any(values[0] if len(values) == 1 else values, detail="inference").text
                 for values in reported]
    assert any(text.startswith("Uploading ") and text.endswith(" MB") for text in described), described
    assert f"Waiting for the server ({request.endpoint})…" in texts and texts[-1].startswith("Downloading")


def test_cancel_before_the_upload_leaves_the_scene_unchanged(harness, server, logic, runner, volume_node):
    models = logic.connect(server.url)
    before = ss.scene_state(harness)
    state = ProcessingStateMachine()
    request = logic.prepareAutoSegment(volume_node, model_of_type(models, "segmentation"), None)
    gate = threading.Event()
    state.start()

    def work(progress, cancel):
        assert gate.wait(WAIT_SECONDS)
        return request.run(progress, cancel)

    results = []
    job = runner.start("auto", work, on_result=results.append, on_cancelled=state.cancelled)
    assert state.request_cancel() and runner.cancel("auto")
    gate.set()
    poll_until(runner, lambda: job.finished)

    assert job.outcome is JobOutcome.CANCELLED
    assert results == [] and state.state is ProcessingState.IDLE
    assert ss.scene_state(harness) == before
    assert node_count(harness) == 0


def test_a_newer_click_supersedes_an_older_one_and_only_its_answer_is_applied(
        harness, server, logic, runner, volume_node, phantom):
    models = logic.connect(server.url)
    deepgrow = model_of_type(models, "deepgrow")
    segmentation_node = ss.new_segmentation(harness, volume_node)
    segment_id = segmentation_node.GetSegmentation().AddEmptySegment("", "target")
    liver = phantom.truth.array == phantom.label_value("liver")
    spleen = phantom.truth.array == phantom.label_value("spleen")

    def centre(mask):
        k, j, i = np.nonzero(mask)
        middle = np.argmin((k - k.mean()) ** 2 + (j - j.mean()) ** 2 + (i - i.mean()) ** 2)
        return ss.voxel_to_world(volume_node, [int(i[middle]), int(j[middle]), int(k[middle])])

    applied = []
    first_gate = threading.Event()

    def click(point, gate=None):
        request = logic.prepareDeepgrow(volume_node, segmentation_node, segment_id, deepgrow, [point])

        def work(progress, cancel):
            if gate is not None:
                assert gate.wait(WAIT_SECONDS)
            return request.run(progress, cancel)

        return runner.start("deepgrow", work, on_result=lambda result: applied.append(logic.apply(request)))

    older = click(centre(liver), first_gate)  # held back until after the newer click has been applied
    newer = click(centre(spleen))
    poll_until(runner, lambda: newer.finished)
    first_gate.set()
    poll_until(runner, lambda: older.finished)

    assert older.outcome is JobOutcome.SUPERSEDED and newer.outcome is JobOutcome.SUCCEEDED
    assert applied == [segment_id]
    result = ss.segment_on_volume(segmentation_node, segment_id, volume_node)
    assert (result & spleen).sum() > 0.5 * result.sum() > 0  # the spleen click's answer, not the liver's
    assert (result & liver).sum() < 0.1 * result.sum()
