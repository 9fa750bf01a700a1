"""ClaraAWSLogic against the reference AIAA server on 127.0.0.1, on an oblique, transformed phantom CT.

Expected results come from the same model run on the same Volume through AIAAClient directly, so a
mismatch can only come from the scene side: export, point conversion, import, sessions or undo.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

import slicer  # noqa: E402

import slicer_scene as ss  # noqa: E402
from ClaraAWSLib import ClaraAWSLogic  # noqa: E402
from ClaraAWSLib.backends.aiaa.client import AIAAClient  # noqa: E402
from ClaraAWSLib.core.errors import InputError  # noqa: E402
from ClaraAWSLib.synthetic.phantom import make_phantom, oblique_direction  # noqa: E402

SEGMENTATION_MODEL = "phantom_abdomen_seg"
ANNOTATION_MODEL = "region_grow_annotation"
DEEPGROW_MODEL = "region_grow_deepgrow"
DEEPGROW_2D_MODEL = "region_grow_deepgrow_2d"


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(size=(96, 96, 40), spacing=(3.1, 3.3, 6.5), origin=(-140.0, -170.5, -110.25),
                        direction=oblique_direction((8.0, -5.0, 17.0)), seed=4)


@pytest.fixture(scope="module")
def direct(server):
    with AIAAClient(server.url) as client:
        yield client


@pytest.fixture
def volume_node(harness, phantom):
    return ss.add_volume(harness, phantom.ct, transform_node=ss.add_transform(harness, ss.linear_transform()))


@pytest.fixture
def logic(harness, server):
    server.sessions.expire_all()
    logic = ClaraAWSLogic(harness.scene)
    logic.connect(server.url)
    yield logic
    logic.cleanup()


_extreme_points, _centre_voxel, _world = ss.extreme_points, ss.centre_voxel, ss.world_points


def test_auto_segment_matches_the_model_run_directly(harness, phantom, direct, volume_node, logic):
    expected = direct.inference(SEGMENTATION_MODEL, phantom.ct).labels()
    assert expected.grid.matches(phantom.ct.grid)

    seg = logic.autoSegment(volume_node, SEGMENTATION_MODEL)

    segmentation = seg.GetSegmentation()
    assert [segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())] == phantom.labels
    ids = [segmentation.GetSegmentIdBySegmentName(name) for name in phantom.labels]
    exported = ss.labelmap_on_volume(seg, volume_node, ids)  # value n = n-th model label
    assert np.array_equal(exported, expected.array)
    for value in range(1, 5):
        assert (exported == value).sum() > 500
    assert seg.GetTransformNodeID() == volume_node.GetTransformNodeID()
    assert "SCT^10200004^Liver" in ss.read_segment_tag(segmentation.GetSegment(ids[0]), "TerminologyEntry")


def test_extreme_points_in_world_ras_hit_the_intended_voxels(harness, phantom, direct, volume_node, logic):
    spleen = phantom.truth.array == phantom.label_value("spleen")
    points_ijk = _extreme_points(spleen)
    expected = direct.dextr3d(ANNOTATION_MODEL, points_ijk, phantom.ct).labels().array > 0
    seg = ss.new_segmentation(harness, volume_node, transform_node=volume_node.GetParentTransformNode())
    target = seg.GetSegmentation().AddEmptySegment("", "spleen", [0.6, 0.4, 0.6])

    assert logic.annotate(volume_node, seg, target, ANNOTATION_MODEL, _world(volume_node, points_ijk)) == target

    result = ss.segment_on_volume(seg, target, volume_node)
    assert np.array_equal(result, expected)
    dice = 2 * (result & spleen).sum() / (result.sum() + spleen.sum())
    assert dice > 0.8
    stored = logic.pointsOfSegment(seg, target)
    assert stored["ClaraAWS.Model"] == ANNOTATION_MODEL
    assert np.allclose(stored["ClaraAWS.ExtremePointsRAS"], _world(volume_node, points_ijk), atol=1e-3)


def test_too_few_extreme_points_fail_before_any_request(harness, server, volume_node, logic):
    seg = ss.new_segmentation(harness, volume_node)
    before = server.stats.snapshot()
    with pytest.raises(InputError, match="Place at least 6 extreme points"):
        logic.annotate(volume_node, seg, None, ANNOTATION_MODEL, _world(volume_node, [[10, 10, 10]] * 5))
    assert server.stats.snapshot() == before


def test_a_volume_is_uploaded_once_and_clicks_carry_no_image(harness, phantom, server, volume_node, logic):
    liver = phantom.truth.array == phantom.label_value("liver")
    seg = ss.new_segmentation(harness, volume_node, transform_node=volume_node.GetParentTransformNode())
    uploads = server.stats.image_uploads
    sessions = server.stats.sessions_created

    segment = logic.deepgrow(volume_node, seg, None, DEEPGROW_MODEL, _world(volume_node, [_centre_voxel(liver)]))
    logic.deepgrow(volume_node, seg, segment, DEEPGROW_MODEL, _world(volume_node, [_centre_voxel(liver)]),
                   _world(volume_node, [[5, 5, 5]]))
    logic.annotate(volume_node, seg, segment, ANNOTATION_MODEL, _world(volume_node, _extreme_points(liver)))
    logic.autoSegment(volume_node, SEGMENTATION_MODEL, seg)  # reuses the open session too

    assert server.stats.image_uploads == uploads + 1
    assert server.stats.sessions_created == sessions + 1
    assert len(server.sessions) == 1


def test_a_changed_volume_is_uploaded_again(harness, phantom, server, volume_node, logic):
    liver = phantom.truth.array == phantom.label_value("liver")
    clicks = _world(volume_node, [_centre_voxel(liver)])
    logic.deepgrow(volume_node, None, None, DEEPGROW_MODEL, clicks)
    uploads = server.stats.image_uploads
    slicer.util.arrayFromVolume(volume_node)[0, 0, 0] += 1
    slicer.util.arrayFromVolumeModified(volume_node)
    logic.deepgrow(volume_node, None, None, DEEPGROW_MODEL, clicks)
    assert server.stats.image_uploads == uploads + 1
    assert len(server.sessions) == 1  # the stale session was closed


def _eventually(condition, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_sessions_close_with_the_node_the_scene_and_cleanup(harness, phantom, server, volume_node, logic):
    clicks = _world(volume_node, [_centre_voxel(phantom.truth.array == 1)])
    logic.deepgrow(volume_node, None, None, DEEPGROW_MODEL, clicks)
    assert len(server.sessions) == 1
    harness.scene.RemoveNode(volume_node)
    assert _eventually(lambda: len(server.sessions) == 0)  # deleted off the GUI thread

    second = ss.add_volume(harness, phantom.ct, name="CT again")
    logic.deepgrow(second, None, None, DEEPGROW_MODEL, _world(second, [_centre_voxel(phantom.truth.array == 1)]))
    assert len(server.sessions) == 1
    harness.scene.Clear(0)
    assert _eventually(lambda: len(server.sessions) == 0)

    third = ss.add_volume(harness, phantom.ct, name="CT third")
    logic.deepgrow(third, None, None, DEEPGROW_MODEL, _world(third, [_centre_voxel(phantom.truth.array == 1)]))
    assert len(server.sessions) == 1
    logic.cleanup()
    assert len(server.sessions) == 0


def test_an_expired_session_recovers_by_itself(harness, phantom, direct, server, volume_node, logic):
    liver = phantom.truth.array == phantom.label_value("liver")
    seg = ss.new_segmentation(harness, volume_node, transform_node=volume_node.GetParentTransformNode())
    target = seg.GetSegmentation().AddEmptySegment("", "liver", [0.8, 0.5, 0.4])
    points = _extreme_points(liver)
    logic.annotate(volume_node, seg, target, ANNOTATION_MODEL, _world(volume_node, points))
    uploads = server.stats.image_uploads
    assert server.sessions.expire_all() == 1

    logic.annotate(volume_node, seg, target, ANNOTATION_MODEL, _world(volume_node, points))

    assert server.stats.image_uploads == uploads + 1  # the client re-created the session once
    expected = direct.dextr3d(ANNOTATION_MODEL, points, phantom.ct).labels().array > 0
    assert np.array_equal(ss.segment_on_volume(seg, target, volume_node), expected)


def test_undo_restores_the_exact_previous_labelmap(harness, phantom, volume_node, logic):
    seg = ss.new_segmentation(harness, volume_node, transform_node=volume_node.GetParentTransformNode())
    liver = phantom.truth.array == phantom.label_value("liver")
    drawn = np.zeros_like(liver)
    drawn[10:20, 30:60, 20:50] = True  # a user's rough liver
    liver_id = ss.add_segment(seg, "liver", drawn, volume_node)
    other_id = ss.add_segment(seg, "notes", np.roll(drawn, 7, axis=2), volume_node)
    before = ss.segments_state(seg, volume_node)

    logic.deepgrow(volume_node, seg, liver_id, DEEPGROW_MODEL, _world(volume_node, [_centre_voxel(liver)]))
    after_click = ss.segments_state(seg, volume_node)
    assert after_click[liver_id] != before[liver_id]
    assert after_click[other_id] == before[other_id]  # untouched

    created = logic.annotate(volume_node, seg, None, ANNOTATION_MODEL,
                             _world(volume_node, _extreme_points(phantom.truth.array == 2)))
    assert created not in before and seg.GetSegmentation().GetSegment(created).GetName() == "region"

    assert logic.undo(seg)  # removes the segment the annotation created
    assert ss.segments_state(seg, volume_node) == after_click
    assert logic.undo(seg)  # restores the user's liver exactly
    assert ss.segments_state(seg, volume_node) == before
    assert not logic.undo(seg)


def test_deepgrow_2d_changes_only_the_clicked_slice(harness, phantom, volume_node, logic):
    seg = ss.new_segmentation(harness, volume_node, transform_node=volume_node.GetParentTransformNode())
    liver = phantom.truth.array == phantom.label_value("liver")
    drawn = np.zeros_like(liver)
    drawn[:, 40:50, 40:50] = True
    segment = ss.add_segment(seg, "liver", drawn, volume_node)
    click = _centre_voxel(liver)
    off_slice = list(click)
    off_slice[2] = click[2] + 3  # a point on another slice must not reach a 2D model

    logic.deepgrow(volume_node, seg, segment, DEEPGROW_2D_MODEL, _world(volume_node, [off_slice, click]))

    result = ss.segment_on_volume(seg, segment, volume_node)
    k = click[2]
    others = [n for n in range(result.shape[0]) if n != k]
    assert np.array_equal(result[others], drawn[others])
    assert result[k].sum() > 50
    assert (result[k] & liver[k]).sum() > 0.7 * result[k].sum()
    assert logic.lastRequest.call_arguments["foreground"] == [click]
