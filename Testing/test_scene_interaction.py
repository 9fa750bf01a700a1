"""Clicks and extreme points against the odd AIAA stub: exact points on the wire, crop boxes, failures,
stale answers, and points that survive saving the segmentation."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

import slicer  # noqa: E402

import slicer_scene as ss  # noqa: E402
from ClaraAWSLib import ClaraAWSLogic  # noqa: E402
from ClaraAWSLib.core.errors import CancelledError, GeometryError, InputError, RemoteError  # noqa: E402
from ClaraAWSLib.core.geometry import ImageGrid, Volume  # noqa: E402
from scene_aiaa_stub import CROP_BOX, threshold_labels  # noqa: E402

MODEL = "odd_grow"


@pytest.fixture
def grid():
    return ImageGrid((64, 72, 30), (2.3, 2.1, 5.5), (-60.5, 21.0, 102.75), ss.rotation((1.0, -0.3, 0.6), 27.0))


@pytest.fixture
def volume(grid):
    k, j, i = np.indices(grid.size[::-1])
    blob = ((i - 30) / 14.0) ** 2 + ((j - 36) / 18.0) ** 2 + ((k - 15) / 8.0) ** 2 < 1
    core = ((i - 30) / 6.0) ** 2 + ((j - 36) / 7.0) ** 2 + ((k - 15) / 4.0) ** 2 < 1
    array = np.where(core, 200, np.where(blob, 100, 0)).astype(np.int16)
    return Volume(array, grid)


@pytest.fixture
def volume_node(harness, volume):
    return ss.add_volume(harness, volume, transform_node=ss.add_transform(harness, ss.linear_transform()))


@pytest.fixture
def segmentation(harness, volume_node):
    return ss.new_segmentation(harness, volume_node, transform_node=volume_node.GetParentTransformNode())


@pytest.fixture
def logic(harness, stub):
    logic = ClaraAWSLogic(harness.scene)
    logic.connect(stub.url)
    yield logic
    logic.cleanup()


def _world(volume_node, voxels):
    return [ss.voxel_to_world(volume_node, voxel) for voxel in voxels]


def test_points_reach_the_server_as_the_intended_voxels(harness, stub, volume_node, segmentation, logic):
    foreground, background = [[30, 36, 15], [25, 40, 14]], [[3, 4, 5]]
    logic.deepgrow(volume_node, segmentation, None, MODEL, _world(volume_node, foreground),
                   _world(volume_node, background), currentPointRAS=_world(volume_node, [background[0]])[0])
    params = stub.requests[-1]["params"]
    assert params["foreground"] == foreground
    assert params["background"] == background
    assert params["current_point"] == background[0]
    assert "session_id" in stub.requests[-1]["query"] and not stub.requests[-1]["had_file"]


def test_deepgrow_result_replaces_only_the_crop_box(harness, stub, volume, volume_node, segmentation, logic):
    mine = np.zeros(volume.array.shape, bool)
    mine[0:4, 0:10, 0:10] = True  # outside the box: must stay
    mine[10:12, 30:40, 30:40] = True  # inside the box: replaced by the result
    segment = ss.add_segment(segmentation, "blob", mine, volume_node)
    other = ss.add_segment(segmentation, "other", np.roll(mine, 5, axis=1), volume_node)
    before = ss.segments_state(segmentation, volume_node)
    stub.mode = "crop_param"  # the server answers all ones, meaningful only inside the box

    logic.deepgrow(volume_node, segmentation, segment, MODEL, _world(volume_node, [[30, 36, 15]]))

    (i0, i1), (j0, j1), (k0, k1) = CROP_BOX
    expected = mine.copy()
    expected[k0:k1, j0:j1, i0:i1] = True
    assert np.array_equal(ss.segment_on_volume(segmentation, segment, volume_node), expected)
    assert ss.segments_state(segmentation, volume_node)[other] == before[other]


@pytest.mark.parametrize("mode, error", [("status500", RemoteError), ("no_geometry", GeometryError)])
def test_a_failing_click_leaves_everything_as_it_was(harness, stub, volume, volume_node, segmentation, logic, mode,
                                                    error):
    mine = threshold_labels(volume) > 0
    segment = ss.add_segment(segmentation, "blob", mine, volume_node)
    nodes, segments = ss.scene_state(harness), ss.segments_state(segmentation, volume_node)
    stub.mode = mode
    with pytest.raises(error):
        logic.deepgrow(volume_node, segmentation, segment, MODEL, _world(volume_node, [[30, 36, 15]]))
    with pytest.raises(InputError, match="outside the volume"):
        logic.deepgrow(volume_node, segmentation, segment, MODEL, _world(volume_node, [[30, 36, 40]]))
    assert ss.scene_state(harness) == nodes
    assert ss.segments_state(segmentation, volume_node) == segments
    assert not logic.canUndo(segmentation)


def test_a_superseded_click_does_not_overwrite_a_newer_result(harness, stub, volume, volume_node, segmentation, logic):
    segment = ss.add_segment(segmentation, "blob", np.zeros(volume.array.shape, bool), volume_node)
    first = logic.prepareDeepgrow(volume_node, segmentation, segment, MODEL, _world(volume_node, [[30, 36, 15]]))
    stub.mode = "crop_param"
    second = logic.prepareDeepgrow(volume_node, segmentation, segment, MODEL, _world(volume_node, [[31, 36, 15]]))
    assert first.superseded and not second.superseded

    # The newer request finishes and is applied first; the older answer arrives late.
    second.run()
    assert logic.apply(second) == segment
    newest = ss.segment_on_volume(segmentation, segment, volume_node)
    stub.mode = "exact"
    first.run()  # a superseded request does not even leave: it has nothing useful to ask
    assert logic.apply(first) is None
    assert np.array_equal(ss.segment_on_volume(segmentation, segment, volume_node), newest)
    assert len([r for r in stub.requests if r["path"] == "/v1/deepgrow"]) == 1


def test_an_older_answer_is_dropped_even_before_the_newer_one_is_applied(harness, stub, volume_node, segmentation,
                                                                       logic):
    segment = ss.add_segment(segmentation, "blob", np.zeros((30, 72, 64), bool), volume_node)
    first = logic.prepareDeepgrow(volume_node, segmentation, segment, MODEL, _world(volume_node, [[30, 36, 15]]))
    worker = threading.Thread(target=first.run)  # network off the calling thread, as the panel does
    worker.start()
    worker.join()
    second = logic.prepareDeepgrow(volume_node, segmentation, segment, MODEL, _world(volume_node, [[20, 36, 15]]))
    assert logic.apply(first) is None  # a newer click started: this answer is stale
    assert not ss.segment_on_volume(segmentation, segment, volume_node).any()
    second.run()
    assert logic.apply(second) == segment
    assert ss.segment_on_volume(segmentation, segment, volume_node).any()


def test_progress_reaches_a_gui_as_single_payloads(harness, stub, volume_node, segmentation, logic):
    from ClaraAWSLib.core.progress import Stage, StageProgress, describe_any

    payloads = []
    request = logic.prepareDeepgrow(volume_node, segmentation, None, MODEL, _world(volume_node, [[30, 36, 15]]))
    request.run(payloads.append)  # the shape jobs.JobRunner hands to work functions: report(payload)
    assert payloads[0] == StageProgress(Stage.ENCODING)
    uploads = [p for p in payloads if p.stage is Stage.UPLOADING]
    assert uploads and all(p.done <= p.total for p in uploads)
    # First the session upload carrying the volume, then the small click request.
    assert uploads[0].total > 2 * uploads[-1].total and uploads[-1].done == uploads[-1].total
    assert all(describe_any(p).text for p in payloads)
    assert logic.apply(request)


def test_a_cancelled_request_changes_nothing(harness, stub, volume_node, segmentation, logic):
    request = logic.prepareDeepgrow(volume_node, segmentation, None, MODEL, _world(volume_node, [[30, 36, 15]]))
    cancel = threading.Event()
    cancel.set()
    nodes = ss.scene_state(harness)
    with pytest.raises(CancelledError):
        request.run(cancel=cancel)
    with pytest.raises(InputError, match="has not run"):
        logic.apply(request)
    assert ss.scene_state(harness) == nodes


def test_points_survive_saving_and_reloading_the_segmentation(harness, stub, volume_node, segmentation, logic,
                                                              tmp_path):
    foreground = _world(volume_node, [[30, 36, 15], [28, 30, 14]])
    background = _world(volume_node, [[2, 2, 2]])
    segment = logic.deepgrow(volume_node, segmentation, None, MODEL, foreground, background)
    path = str(tmp_path / "result.seg.nrrd")
    writer = slicer.vtkMRMLSegmentationStorageNode()
    writer.SetFileName(path)
    assert writer.WriteData(segmentation)

    reloaded = harness.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reloaded")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(path)
    assert reader.ReadData(reloaded)

    stored = logic.pointsOfSegment(reloaded, segment)
    assert stored["ClaraAWS.Model"] == MODEL
    assert np.allclose(stored["ClaraAWS.ForegroundPointsRAS"], foreground, atol=1e-3)
    assert np.allclose(stored["ClaraAWS.BackgroundPointsRAS"], background, atol=1e-3)


def test_points_of_a_non_linearly_transformed_volume_are_refused(harness, stub, volume, logic):
    import vtk

    warp = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for index, point in enumerate(([0, 0, 0], [80, 0, 0], [0, 80, 0], [0, 0, 80], [40, 40, 40])):
        source.InsertNextPoint(point)
        target.InsertNextPoint([value + (4 if index == 4 else 0) for value in point])
    warp.SetSourceLandmarks(source)
    warp.SetTargetLandmarks(target)
    warp.SetBasisToR()
    transform = harness.scene.AddNewNodeByClass("vtkMRMLTransformNode", "Warp")
    transform.SetAndObserveTransformToParent(warp)
    node = ss.add_volume(harness, volume, name="Warped", transform_node=transform)
    with pytest.raises(InputError, match="harden the transform"):
        logic.deepgrow(node, None, None, MODEL, [[0.0, 0.0, 0.0]])
    assert stub.requests == [] and stub.uploads == 0
    # Auto-segmentation needs no point conversion: its result simply goes under the same transform.
    seg = logic.autoSegment(node, "odd_seg")
    assert seg.GetTransformNodeID() == transform.GetID()


_STUB_IN_ITS_OWN_PROCESS = """
import sys
sys.path.insert(0, {testing!r})
from scene_aiaa_stub import OddAIAAServer
with OddAIAAServer() as stub:
    print(stub.url, flush=True)
    sys.stdin.read()
"""


def test_a_later_click_holds_only_the_labelled_box_of_a_full_grid_answer(harness):
    # A MONAI Label-like answer: the whole grid, no crop box, labels in a small region. The server runs in a
    # process of its own, so the memory traced here is the client's alone.
    import subprocess
    import sys
    import tracemalloc
    from pathlib import Path

    grid = ImageGrid((256, 240, 64), (0.8, 0.9, 2.5), (-80.5, 41.0, -210.25), ss.rotation((0.4, 1.0, -0.2), 21.0))
    array = np.zeros(grid.size[::-1], np.int16)
    array[24:31, 70:95, 101:130] = 100  # one label (above the stub's low threshold)
    array[27, 80, 110] = 200  # and one voxel of another
    node = ss.add_volume(harness, Volume(array, grid), transform_node=ss.add_transform(harness, ss.linear_transform()))
    segmentation = ss.new_segmentation(harness, node, transform_node=node.GetParentTransformNode())
    segment = segmentation.GetSegmentation().AddEmptySegment("", "region", [0.2, 0.8, 0.4])
    testing = str(Path(__file__).resolve().parent)
    server = subprocess.Popen([sys.executable, "-c", _STUB_IN_ITS_OWN_PROCESS.format(testing=testing)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        logic = ClaraAWSLogic(harness.scene)
        logic.connect(server.stdout.readline().strip())
        clicks = _world(node, [[110, 80, 27], [120, 90, 25]])
        logic.deepgrow(node, segmentation, segment, MODEL, clicks[:1])  # the first click uploads the volume
        request = logic.prepareDeepgrow(node, segmentation, segment, MODEL, clicks)
        tracemalloc.start()
        request.run()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        logic.apply(request)
        logic.cleanup()
    finally:
        server.stdin.close()
        server.wait(10)
    # Inflating steps and zlib hold ~0.7 MB whatever the grid; the whole answer would be array.size bytes and more.
    assert peak < array.size / 4, f"{peak} bytes held for a {array.size}-voxel answer"
    assert request.label_values == (1, 2)
    assert np.array_equal(ss.segment_on_volume(segmentation, segment, node), array > 60)
