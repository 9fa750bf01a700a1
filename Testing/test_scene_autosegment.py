"""autoSegment against a deliberately odd AIAA server on 127.0.0.1: results on other grids, and failures.

The stub's model thresholds the image it receives, so every expected result is known exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

import slicer_scene as ss  # noqa: E402
from ClaraAWSLib import ClaraAWSLogic  # noqa: E402
from ClaraAWSLib.core.errors import (  # noqa: E402
    ClaraError,
    GeometryError,
    InputError,
    MalformedResponseError,
    RemoteError,
    ServerUnreachableError,
)
from ClaraAWSLib.core.geometry import ImageGrid, Volume, resample_labels_to_grid  # noqa: E402
from ClaraAWSLib.core.imageio import decode_image, encode_volume  # noqa: E402
from ClaraAWSLib.synthetic.phantom import make_phantom  # noqa: E402
from scene_aiaa_stub import CROP_BOX, coarser, threshold_labels  # noqa: E402

VOLUME_NAME = "Patient-Doe-CT-secret"


@pytest.fixture(scope="module")
def phantom():
    direction = ss.rotation((0.2, 0.4, 1.0), 19.0)
    return make_phantom(size=(72, 80, 30), spacing=(2.9, 2.6, 6.5), origin=(-95.0, -130.5, 48.25), direction=direction,
                        seed=2)


@pytest.fixture
def volume_node(harness, phantom):
    transform = ss.add_transform(harness, ss.linear_transform())
    return ss.add_volume(harness, phantom.ct, name=VOLUME_NAME, transform_node=transform)


@pytest.fixture
def logic(harness, stub):
    logic = ClaraAWSLogic(harness.scene)
    logic.connect(stub.url)
    yield logic
    logic.cleanup()


def _segment_by_name(seg, name):
    return seg.GetSegmentation().GetSegmentIdBySegmentName(name)


def test_exact_result_lands_voxel_for_voxel(harness, phantom, stub, volume_node, logic):
    seg = logic.autoSegment(volume_node, "odd_seg")

    expected = threshold_labels(phantom.ct)
    assert expected[expected == 1].size > 500 and expected[expected == 2].size > 100
    ids = [_segment_by_name(seg, "liver"), _segment_by_name(seg, "spleen")]
    assert np.array_equal(ss.labelmap_on_volume(seg, volume_node, ids), expected)
    assert seg.GetTransformNodeID() == volume_node.GetTransformNodeID()
    # Segment Editor's singleton node shows the result, first new segment selected.
    editor = harness.scene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")
    assert editor.GetSegmentationNode() is seg
    assert editor.GetSourceVolumeNode() is volume_node
    assert editor.GetSelectedSegmentID() == ids[0]
    # The upload holds voxels only: a generated file name and no node name anywhere in the body.
    assert stub.requests[-1]["filenames"][0].startswith("volume-")
    assert all(VOLUME_NAME.encode() not in body for body in stub.bodies)
    assert {"export", "import", "upload", "wait"} <= set(logic.lastTimings)


@pytest.mark.parametrize("mode", ["cropped", "coarser"])
def test_result_on_another_grid_lands_in_the_right_place(harness, phantom, stub, volume_node, logic, mode):
    stub.mode = mode
    seg = logic.autoSegment(volume_node, "odd_seg")

    full = threshold_labels(phantom.ct)
    ids = [_segment_by_name(seg, "liver"), _segment_by_name(seg, "spleen")]
    exported = ss.labelmap_on_volume(seg, volume_node, ids)
    if mode == "cropped":
        (i0, i1), (j0, j1), (k0, k1) = CROP_BOX
        expected = np.zeros_like(full)
        expected[k0:k1, j0:j1, i0:i1] = full[k0:k1, j0:j1, i0:i1]
        assert np.array_equal(exported, expected)
    else:
        # Replay both NIfTI round trips (upload and result): their float32 headers move the grid by ~1e-8,
        # enough to flip nearest-neighbour picks at exact half-voxel positions.
        sent = decode_image(encode_volume(phantom.ct).data, "sent.nii.gz")
        server_result = decode_image(encode_volume(coarser(Volume(threshold_labels(sent), sent.grid))).data, "r.nii.gz")
        expected = resample_labels_to_grid(server_result, phantom.ct.grid).array
        assert np.array_equal(exported, expected)
        # Independently of the resampler: the same anatomy as at full resolution, and not shifted by a voxel.
        overlap = ((exported == 1) & (full == 1)).sum()
        shifted = ((np.roll(exported, 1, axis=2) == 1) & (full == 1)).sum()
        assert overlap > 0.7 * (full == 1).sum() and overlap > shifted


@pytest.mark.parametrize(
    "mode, error",
    [
        ("status500", RemoteError),
        ("malformed", MalformedResponseError),
        ("no_file", MalformedResponseError),
        ("no_geometry", GeometryError),
    ],
)
def test_a_failing_server_leaves_the_scene_unchanged(harness, phantom, stub, volume_node, logic, mode, error):
    existing = ss.new_segmentation(harness, volume_node, transform_node=volume_node.GetParentTransformNode())
    mask = np.zeros(phantom.ct.array.shape, bool)
    mask[3:9, 10:30, 10:30] = True
    ss.add_segment(existing, "liver", mask, volume_node)
    nodes, segments = ss.scene_state(harness), ss.segments_state(existing, volume_node)
    stub.mode = mode

    with pytest.raises(error):
        logic.autoSegment(volume_node, "odd_seg")
    with pytest.raises(error):
        logic.autoSegment(volume_node, "odd_seg", existing)

    assert ss.scene_state(harness) == nodes
    assert ss.segments_state(existing, volume_node) == segments
    assert not logic.canUndo(existing)


def test_server_down_leaves_the_scene_unchanged(harness, stub, volume_node, logic):
    nodes = ss.scene_state(harness)
    stub.stop()
    with pytest.raises(ServerUnreachableError):
        logic.autoSegment(volume_node, "odd_seg")
    assert ss.scene_state(harness) == nodes


def test_labels_map_by_value_and_user_segments_stay(harness, phantom, stub, volume_node, logic):
    existing = ss.new_segmentation(harness, volume_node, transform_node=volume_node.GetParentTransformNode())
    mine = np.zeros(phantom.ct.array.shape, bool)
    mine[:, 30:50, 20:60] = True  # overlaps both results
    mine_id = ss.add_segment(existing, "my notes", mine, volume_node)
    before = ss.segments_state(existing, volume_node)

    seg = logic.autoSegment(volume_node, "odd_seg", existing)

    assert seg is existing
    assert ss.segments_state(existing, volume_node)[mine_id] == before[mine_id]
    names = [existing.GetSegmentation().GetSegment(i).GetName() for i in ss.segment_ids(existing)]
    assert names == ["my notes", "liver", "spleen"]
    full = threshold_labels(phantom.ct)
    assert np.array_equal(ss.segment_on_volume(existing, _segment_by_name(existing, "spleen"), volume_node), full == 2)
    # Running again replaces the model's segments instead of adding duplicates.
    logic.autoSegment(volume_node, "odd_seg", existing)
    assert len(ss.segment_ids(existing)) == 3
    # Undo of the second run restores the first run's result; undo of the first removes its segments.
    assert logic.undo(existing)
    assert np.array_equal(ss.segment_on_volume(existing, _segment_by_name(existing, "liver"), volume_node), full == 1)
    assert logic.undo(existing)
    assert ss.segments_state(existing, volume_node) == before
    assert not logic.undo(existing)


def test_wrong_inputs_are_refused_before_any_request(harness, stub, volume_node, logic):
    label_node = ss.add_volume(harness, Volume(np.zeros((4, 4, 4), np.uint8), ImageGrid((4, 4, 4), (1, 1, 1), (0, 0, 0))),
                               class_name="vtkMRMLLabelMapVolumeNode", name="labels")
    with pytest.raises(InputError, match="label map"):
        logic.autoSegment(label_node, "odd_seg")
    with pytest.raises(InputError, match="no model named"):
        logic.autoSegment(volume_node, "nonexistent")
    with pytest.raises(InputError, match="deepgrow"):
        logic.autoSegment(volume_node, "odd_grow")
    assert stub.requests == []


def test_nan_and_infinite_voxels_are_refused_when_the_button_is_pressed(harness, phantom, stub, logic):
    array = phantom.ct.array.astype(np.float32)
    array[::2] = np.nan  # every other slice, as a broken reconstruction leaves it
    array[1, 2, 3] = np.inf
    transform = ss.add_transform(harness, ss.linear_transform())
    node = ss.add_volume(harness, Volume(array, phantom.ct.grid), name="CT float", transform_node=transform)
    existing = ss.new_segmentation(harness, node, transform_node=transform)
    mine = ss.add_segment(existing, "mine", array > 0, node)
    nodes, segments = ss.scene_state(harness), ss.segments_state(existing, node)
    plane = array.shape[1] * array.shape[2]
    slices = array.shape[0]
    sentence = (f"The volume 'CT float' holds {plane * ((slices + 1) // 2) + 1} NaN or infinite voxels "
                f"({plane * ((slices + 1) // 2)} NaN, 1 infinite) in {(slices + 1) // 2 + 1} of its {slices} slices "
                f"(k = 0 to {slices - 1 - (slices - 1) % 2}), the first at voxel I,J,K = 0,0,0")
    center = ss.voxel_to_world(node, [36, 40, 15])

    # Refused on the GUI thread by prepare: nothing waits for an upload that cannot be used.
    with pytest.raises(InputError) as refused:
        logic.prepareAutoSegment(node, "odd_seg")
    assert sentence in str(refused.value)
    with pytest.raises(InputError, match="NaN or infinite"):
        logic.prepareAutoSegment(node, "odd_seg", existing)
    with pytest.raises(InputError, match="NaN or infinite"):
        logic.prepareDeepgrow(node, existing, mine, "odd_grow", [center])
    assert not logic.preEncode(node)
    assert stub.requests == [] and stub.uploads == 0
    assert ss.scene_state(harness) == nodes
    assert ss.segments_state(existing, node) == segments


def test_not_connected_is_a_clear_error(harness, volume_node):
    logic = ClaraAWSLogic(harness.scene)
    with pytest.raises(InputError, match="connect"):
        logic.autoSegment(volume_node, "odd_seg")


def test_connect_failure_keeps_the_previous_connection(harness, stub):
    logic = ClaraAWSLogic(harness.scene)
    logic.connect(stub.url)
    with pytest.raises(ClaraError):
        logic.connect("http://127.0.0.1:9")  # discard port: nothing listens
    assert logic.client is not None and logic.client.base_url == stub.url
    assert [m["name"] for m in logic.models] == ["odd_seg", "odd_grow"]
    logic.cleanup()


def test_a_volume_compressed_when_chosen_goes_up_as_compressed_and_serves_the_first_click(harness, phantom, stub,
                                                                                         volume_node, logic):
    from ClaraAWSLib.core.multipart import parse_multipart as parse_parts

    assert logic.preEncode(volume_node)
    pending = logic._sessions.valid(volume_node).pending_upload
    assert pending is not None and not logic.preEncode(volume_node)  # one compression per volume state
    ready = pending.result().data
    request = logic.prepareAutoSegment(volume_node, "odd_seg")
    assert request.volume is pending  # nothing exported or compressed again on Auto-segment
    request.run()
    seg = logic.apply(request)
    ids = [_segment_by_name(seg, "liver"), _segment_by_name(seg, "spleen")]
    assert np.array_equal(ss.labelmap_on_volume(seg, volume_node, ids), threshold_labels(phantom.ct))
    sent = [part.data for part in parse_parts(_content_type_of(stub.bodies[-1]), stub.bodies[-1]) if part.filename]
    assert sent == [ready]
    # The first click opens the session with the same bytes.
    point = phantom.ct.grid.ijk_to_ras() @ [30, 40, 15, 1]
    logic.deepgrow(volume_node, seg, ids[0], "odd_grow", [list(point[:3])])
    assert logic._sessions.valid(volume_node).image_session.image.data == ready


def _content_type_of(body: bytes) -> str:
    return "multipart/form-data; boundary=" + body.split(b"\r\n", 1)[0][2:].decode()
