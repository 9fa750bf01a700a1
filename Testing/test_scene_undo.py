"""Undo snapshots: exact labelmaps back, shared layers respected, bounded stacks."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

import slicer_scene as ss  # noqa: E402
from ClaraAWSLib.geometry import Volume  # noqa: E402
from ClaraAWSLib.scene_export import ijk_to_ras_matrix  # noqa: E402
from ClaraAWSLib.scene_labelmaps import set_segment_mask  # noqa: E402
from ClaraAWSLib.scene_undo import SegmentSnapshot, UndoEntry, UndoHistory, read_tag  # noqa: E402


@pytest.fixture
def volume_node(harness):
    grid = ss.oblique_grid()
    return ss.add_volume(harness, Volume(np.zeros(grid.size[::-1], np.int16), grid))


@pytest.fixture
def segmentation(harness, volume_node):
    return ss.new_segmentation(harness, volume_node)


def _mask(shape, box):
    mask = np.zeros(shape, bool)
    mask[box] = True
    return mask


def test_snapshot_restores_a_segment_that_shares_a_layer(harness, volume_node, segmentation):
    shape = (20, 40, 48)
    first = ss.add_segment(segmentation, "a", _mask(shape, np.s_[2:8, 5:15, 5:15]), volume_node)
    second = ss.add_segment(segmentation, "b", _mask(shape, np.s_[10:15, 20:30, 20:40]), volume_node)
    segmentation.GetSegmentation().CollapseBinaryLabelmaps(False)  # both in one layer, as Slicer often keeps them
    assert segmentation.GetSegmentation().GetNumberOfLayers() == 1
    before = ss.segments_state(segmentation, volume_node)
    entry = UndoEntry.capture(segmentation, [first], "test")

    # An edit that overlaps the other segment of the shared layer.
    set_segment_mask(segmentation, first, _mask(shape, np.s_[8:14, 18:32, 10:45]), ijk_to_ras_matrix(volume_node))
    assert ss.segments_state(segmentation, volume_node)[second] == before[second]
    entry.restore(segmentation)
    assert ss.segments_state(segmentation, volume_node) == before


def test_restoring_a_segment_the_user_deleted_brings_it_back(harness, volume_node, segmentation):
    shape = (20, 40, 48)
    mask = _mask(shape, np.s_[3:9, 4:12, 6:30])
    segment_id = ss.add_segment(segmentation, "kept", mask, volume_node, color=(0.1, 0.9, 0.3))
    segmentation.GetSegmentation().GetSegment(segment_id).SetTag("ClaraAWS.Model", "m1")
    snapshot = SegmentSnapshot.capture(segmentation, segment_id)
    segmentation.GetSegmentation().RemoveSegment(segment_id)
    snapshot.restore(segmentation)
    segment = segmentation.GetSegmentation().GetSegment(segment_id)
    assert segment.GetName() == "kept" and np.allclose(segment.GetColor(), (0.1, 0.9, 0.3))
    assert read_tag(segment, "ClaraAWS.Model") == "m1"
    assert np.array_equal(ss.segment_on_volume(segmentation, segment_id, volume_node), mask)


def test_empty_segment_round_trips(harness, volume_node, segmentation):
    segment_id = segmentation.GetSegmentation().AddEmptySegment("", "empty", [0.5, 0.5, 0.5])
    snapshot = SegmentSnapshot.capture(segmentation, segment_id)
    assert snapshot.existed and snapshot.mask is None
    set_segment_mask(segmentation, segment_id, _mask((20, 40, 48), np.s_[1:3, 1:3, 1:3]), ijk_to_ras_matrix(volume_node))
    snapshot.restore(segmentation)
    assert not ss.segment_on_volume(segmentation, segment_id, volume_node).any()


def test_history_is_bounded_and_per_segmentation(harness, volume_node, segmentation):
    other = ss.new_segmentation(harness, volume_node, name="other")
    history = UndoHistory(max_depth=3)
    for number in range(5):
        history.push(segmentation, UndoEntry(f"edit {number}", []))
    history.push(other, UndoEntry("other edit", []))
    assert [history.undo(segmentation) for _ in range(4)] == ["edit 4", "edit 3", "edit 2", None]
    assert history.can_undo(other)
    history.forget(other.GetID())
    assert not history.can_undo(other)


def test_logic_forgets_undo_of_a_removed_segmentation(harness, volume_node, segmentation):
    from ClaraAWSLib import ClaraAWSLogic

    logic = ClaraAWSLogic(harness.scene)
    logic._undo.push(segmentation, UndoEntry("edit", []))
    assert logic.canUndo(segmentation)
    node_id = segmentation.GetID()
    harness.scene.RemoveNode(segmentation)
    assert node_id not in logic._undo._stacks
    logic.cleanup()
