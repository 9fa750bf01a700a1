"""Undo that cannot lose work, and the Segment Editor's rules (overwrite, masking, its own undo) for AI edits.

The other-make stub answers a deepgrow click with "everything inside its crop box", so the expected
segment is plain box arithmetic: the crop box becomes the segment, the rest stays as the user left it.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

import slicer  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

import segment_layouts as sl  # noqa: E402
import slicer_scene as ss  # noqa: E402
from ClaraAWSLib import ClaraAWSLogic  # noqa: E402
from ClaraAWSLib.core.geometry import ImageGrid, Volume  # noqa: E402
from ClaraAWSLib.scene.undo import UndoEntry, UndoHistory, UndoRefusedError  # noqa: E402
from scene_aiaa_stub import CROP_BOX  # noqa: E402

MODEL = "odd_grow"
EDITOR = slicer.vtkMRMLSegmentEditorNode


@pytest.fixture
def grid():
    return ImageGrid((64, 72, 30), (2.3, 2.1, 5.5), (-60.5, 21.0, 102.75), ss.rotation((1.0, -0.3, 0.6), 27.0))


@pytest.fixture
def volume_node(harness, grid):
    k, j, i = np.indices(grid.size[::-1])
    array = (100 + 50 * np.sin(i / 5.0) + 30 * np.cos(j / 7.0) + k).astype(np.int16)
    return ss.add_volume(harness, Volume(array, grid), transform_node=ss.add_transform(harness, ss.linear_transform()))


@pytest.fixture
def logic(harness, stub):
    stub.mode = "crop_param"
    logic = ClaraAWSLogic(harness.scene)
    logic.connect(stub.url)
    yield logic
    logic.cleanup()


def _box_mask(shape, box=CROP_BOX):
    mask = np.zeros(shape, bool)
    (i0, i1), (j0, j1), (k0, k1) = box
    mask[k0:k1, j0:j1, i0:i1] = True
    return mask


def _click(logic, volume_node, seg, segment_id):
    (i0, i1), (j0, j1), (k0, k1) = CROP_BOX
    centre = [(i0 + i1) // 2, (j0 + j1) // 2, (k0 + k1) // 2]
    return logic.deepgrow(volume_node, seg, segment_id, MODEL, [ss.voxel_to_world(volume_node, centre)])


def _voxels(seg, segment_id, volume_node):
    return ss.segment_on_volume(seg, segment_id, volume_node)


@pytest.fixture
def scene(harness, volume_node, grid):
    """A shared layer: target 'liver' (value 2, in the middle), 'lesion' overlapping the crop box, 'vessel' away."""
    shape = grid.size[::-1]
    target = np.zeros(shape, bool)
    target[1:3, 1:4, 1:4] = True  # outside the crop box
    lesion = np.zeros(shape, bool)
    lesion[10:14, 30:40, 30:40] = True  # inside the crop box
    vessel = np.zeros(shape, bool)
    vessel[27:29, 2:6, 60:63] = True
    layout = sl.build(harness, volume_node, "shared_middle", target, [lesion, vessel])
    return layout, target, lesion, vessel


def test_undo_keeps_strokes_painted_after_the_ai_edit(harness, volume_node, logic, scene):
    layout, target, lesion, vessel = scene
    seg, target_id = layout.node, layout.target_id
    _click(logic, volume_node, seg, target_id)
    stroke = np.zeros(target.shape, bool)
    stroke[20:22, 60:64, 2:6] = True  # the user paints more of the target elsewhere
    ss.paint_segment(seg, target_id, stroke, ss.volume_frame(volume_node, seg), slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MAX)
    seg.GetSegmentation().GetSegment(target_id).SetName("liver (checked)")
    seg.GetSegmentation().GetSegment(target_id).SetColor(0.1, 0.2, 0.3)

    painted = _voxels(seg, target_id, volume_node)
    assert np.array_equal(painted, target | stroke | _box_mask(target.shape))
    assert logic.undo(seg)

    now = _voxels(seg, target_id, volume_node)
    assert np.array_equal(now, target | stroke), (np.argwhere(now & ~(target | stroke))[:5], np.argwhere(~now & (target | stroke))[:5])
    segment = seg.GetSegmentation().GetSegment(target_id)
    assert segment.GetName() == "liver (checked)" and np.allclose(segment.GetColor(), (0.1, 0.2, 0.3))
    assert np.array_equal(_voxels(seg, layout.neighbour_ids[0], volume_node), lesion)
    assert np.array_equal(_voxels(seg, layout.neighbour_ids[1], volume_node), vessel)


def test_voxels_the_user_changed_after_the_edit_keep_the_users_values(harness, volume_node, logic, scene):
    layout, target, _, _ = scene
    seg, target_id = layout.node, layout.target_id
    _click(logic, volume_node, seg, target_id)
    erased = np.zeros(target.shape, bool)
    erased[15:17, 40:50, 40:50] = True  # the user erases part of the AI result
    kept = _voxels(seg, target_id, volume_node) & ~erased
    ss.paint_segment(seg, target_id, ~erased, ss.volume_frame(volume_node, seg), slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MIN)
    assert np.array_equal(_voxels(seg, target_id, volume_node), kept)

    assert logic.undo(seg)

    # Undo reverted the AI voxels; the erased ones stay erased (they already are, so nothing is re-added).
    assert np.array_equal(_voxels(seg, target_id, volume_node), target)
    assert "Undid deepgrow" in logic.lastUndoSummary


def test_a_segment_empty_before_comes_back_empty_and_alone_in_its_layer_stays_exportable(harness, volume_node, logic, grid):
    seg = ss.new_segmentation(harness, volume_node, transform_node=volume_node.GetParentTransformNode())
    segmentation = seg.GetSegmentation()
    other = ss.add_segment(seg, "other", _box_mask(grid.size[::-1], [[0, 5], [0, 5], [0, 3]]), volume_node)
    empty = segmentation.AddEmptySegment("", "empty", [0.4, 0.4, 0.4])
    before_other = sl.fingerprint(segmentation, other)
    _click(logic, volume_node, seg, empty)
    assert _voxels(seg, empty, volume_node).sum() == _box_mask(grid.size[::-1]).sum()

    assert logic.undo(seg)

    assert not _voxels(seg, empty, volume_node).any()
    assert sl.fingerprint(segmentation, other) == before_other
    layer = segmentation.GetSegment(empty).GetRepresentation(sl.BINARY)
    assert layer is segmentation.GetSegment(other).GetRepresentation(sl.BINARY) or layer.IsEmpty()
    assert np.array_equal(ss.labelmap_on_volume(seg, volume_node, [other]) > 0,
                          _box_mask(grid.size[::-1], [[0, 5], [0, 5], [0, 3]]))


def test_repeated_edits_undo_in_order_and_past_the_depth(harness, volume_node, stub, scene):
    layout, target, lesion, vessel = scene
    seg, target_id = layout.node, layout.target_id
    stub.mode = "crop_param"
    logic = ClaraAWSLogic(harness.scene, maxUndo=2)
    logic.connect(stub.url)
    try:
        states = [_voxels(seg, target_id, volume_node)]
        for box in ([[10, 30], [20, 40], [5, 10]], [[30, 50], [40, 60], [10, 20]], [[0, 20], [0, 20], [20, 28]]):
            stub_box = CROP_BOX[:]
            CROP_BOX[:] = box
            try:
                _click(logic, volume_node, seg, target_id)
            finally:
                CROP_BOX[:] = stub_box
            states.append(_voxels(seg, target_id, volume_node))
        assert not np.array_equal(states[-1], states[-2])
        assert logic.undo(seg) and np.array_equal(_voxels(seg, target_id, volume_node), states[2])
        assert logic.undo(seg) and np.array_equal(_voxels(seg, target_id, volume_node), states[1])
        assert not logic.undo(seg)  # the oldest edit fell off the bounded history
        assert np.array_equal(_voxels(seg, layout.neighbour_ids[0], volume_node), lesion)
    finally:
        logic.cleanup()


def test_undo_refuses_after_the_segment_editors_own_undo_and_changes_nothing(harness, volume_node, logic, scene):
    layout, target, _, _ = scene
    seg, target_id = layout.node, layout.target_id
    history = slicer.vtkSegmentationHistory()
    history.SetSegmentation(seg.GetSegmentation())
    logic.beforeSegmentWrite = lambda node: history.SaveState()
    _click(logic, volume_node, seg, target_id)
    assert history.RestorePreviousState()  # Ctrl+Z in the Segment Editor: layers are replaced by copies
    assert np.array_equal(_voxels(seg, target_id, volume_node), target)
    before = ss.segments_state(seg, volume_node)

    with pytest.raises(UndoRefusedError, match="Segment Editor"):
        logic.undo(seg)
    assert ss.segments_state(seg, volume_node) == before


def test_an_ai_edit_is_a_step_of_the_segment_editors_undo_between_manual_strokes(harness, volume_node, logic, scene):
    layout, target, _, _ = scene
    seg, target_id = layout.node, layout.target_id
    history = slicer.vtkSegmentationHistory()
    history.SetSegmentation(seg.GetSegmentation())
    logic.beforeSegmentWrite = lambda node: history.SaveState()
    frame = ss.volume_frame(volume_node, seg)
    stroke = np.zeros(target.shape, bool)
    stroke[25:27, 60:64, 2:6] = True
    history.SaveState()  # what an effect does before a stroke
    ss.paint_segment(seg, target_id, target | stroke, frame)
    after_stroke = _voxels(seg, target_id, volume_node)
    _click(logic, volume_node, seg, target_id)
    after_ai = _voxels(seg, target_id, volume_node)
    assert not np.array_equal(after_ai, after_stroke)

    assert history.RestorePreviousState()  # Ctrl+Z: the AI edit goes, the stroke stays
    assert np.array_equal(_voxels(seg, target_id, volume_node), after_stroke)
    assert history.RestorePreviousState()  # Ctrl+Z again: the stroke goes
    assert np.array_equal(_voxels(seg, target_id, volume_node), target)
    assert history.RestoreNextState() and history.RestoreNextState()  # Ctrl+Y twice: the AI edit is back
    assert np.array_equal(_voxels(seg, target_id, volume_node), after_ai)


def _open_in_editor(harness, seg, volume_node, **settings):
    editor = harness.scene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")
    if editor is None:
        editor = slicer.vtkMRMLSegmentEditorNode()
        editor.SetSingletonTag("SegmentEditor")
        editor = harness.scene.AddNode(editor)
    editor.SetAndObserveSegmentationNode(seg)
    editor.SetAndObserveSourceVolumeNode(volume_node)
    for name, value in settings.items():
        getattr(editor, f"Set{name}")(value)
    return editor


@pytest.mark.parametrize("overwrite", ["all", "visible", "none"])
def test_the_segment_editors_overwrite_setting_decides_what_happens_to_neighbours(harness, volume_node, logic, scene,
                                                                                   overwrite):
    layout, target, lesion, vessel = scene
    seg, target_id = layout.node, layout.target_id
    mode = {"all": EDITOR.OverwriteAllSegments, "visible": EDITOR.OverwriteVisibleSegments, "none": EDITOR.OverwriteNone}
    _open_in_editor(harness, seg, volume_node, OverwriteMode=mode[overwrite])
    seg.GetDisplayNode().SetSegmentVisibility(layout.neighbour_ids[0], overwrite != "visible")  # lesion hidden for 'visible'
    box = _box_mask(target.shape)

    _click(logic, volume_node, seg, target_id)

    assert np.array_equal(_voxels(seg, target_id, volume_node), target | box)
    lesion_now = _voxels(seg, layout.neighbour_ids[0], volume_node)
    assert np.array_equal(lesion_now, lesion & ~box if overwrite == "all" else lesion)
    assert np.array_equal(_voxels(seg, layout.neighbour_ids[1], volume_node), vessel)
    assert logic.undo(seg)
    assert np.array_equal(_voxels(seg, layout.neighbour_ids[0], volume_node), lesion)
    assert np.array_equal(_voxels(seg, target_id, volume_node), target)


def test_the_editable_area_and_intensity_range_limit_the_edit(harness, volume_node, logic, scene):
    layout, target, lesion, _ = scene
    seg, target_id = layout.node, layout.target_id
    lesion_id = layout.neighbour_ids[0]
    _open_in_editor(harness, seg, volume_node, MaskMode=slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment,
                    MaskSegmentID=lesion_id, OverwriteMode=EDITOR.OverwriteNone)
    _click(logic, volume_node, seg, target_id)
    assert np.array_equal(_voxels(seg, target_id, volume_node), target | (lesion & _box_mask(target.shape)))
    assert logic.undo(seg)

    editor = _open_in_editor(harness, seg, volume_node, MaskMode=slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere,
                             SourceVolumeIntensityMask=True)
    editor.SetSourceVolumeIntensityMaskRange(120.0, 1000.0)
    _click(logic, volume_node, seg, target_id)
    image = volume_node.GetImageData()
    intensities = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(target.shape)
    in_range = (intensities >= 120) & (intensities <= 1000)
    assert 0 < (in_range & _box_mask(target.shape)).sum() < _box_mask(target.shape).sum()
    assert np.array_equal(_voxels(seg, target_id, volume_node), target | (_box_mask(target.shape) & in_range))


def test_a_new_segment_made_by_an_edit_is_removed_by_undo_unless_the_user_changed_it(harness, volume_node, logic, scene):
    layout, _, _, _ = scene
    seg = layout.node
    before = ss.segments_state(seg, volume_node)
    created = _click(logic, volume_node, seg, None)
    assert created not in before
    assert logic.undo(seg)
    assert ss.segments_state(seg, volume_node) == before

    created = _click(logic, volume_node, seg, None)
    seg.GetSegmentation().GetSegment(created).SetName("my region")
    assert logic.undo(seg)
    assert seg.GetSegmentation().GetSegment(created) is not None  # renamed since: kept
    assert "you changed since stayed" in logic.lastUndoSummary
    assert not _voxels(seg, created, volume_node).any()


def test_a_stroke_painted_while_the_request_was_in_flight_survives_outside_the_result(harness, volume_node, logic, scene):
    layout, target, lesion, _ = scene
    seg, target_id = layout.node, layout.target_id
    (i0, i1), (j0, j1), (k0, k1) = CROP_BOX
    centre = [(i0 + i1) // 2, (j0 + j1) // 2, (k0 + k1) // 2]
    request = logic.prepareDeepgrow(volume_node, seg, target_id, MODEL, [ss.voxel_to_world(volume_node, centre)])
    request.run()
    stroke = np.zeros(target.shape, bool)
    stroke[27:29, 60:66, 50:60] = True
    ss.paint_segment(seg, target_id, target | stroke, ss.volume_frame(volume_node, seg))
    assert logic.apply(request) == target_id
    assert logic.apply(request) == target_id  # a second apply of one answer changes nothing more
    assert np.array_equal(_voxels(seg, target_id, volume_node), target | stroke | _box_mask(target.shape))
    assert logic.undo(seg)
    assert np.array_equal(_voxels(seg, target_id, volume_node), target | stroke)
    assert not logic.undo(seg)  # one apply, one undo step


def test_history_is_bounded_and_per_segmentation(harness, volume_node):
    seg = ss.new_segmentation(harness, volume_node)
    other = ss.new_segmentation(harness, volume_node, name="other")
    history = UndoHistory(max_depth=3)
    for number in range(5):
        history.push(seg, UndoEntry(f"edit {number}", created_segment_ids=["x"]))
    history.push(other, UndoEntry("other edit", created_segment_ids=["x"]))
    assert [history.undo(seg) for _ in range(4)] == ["Undid edit 4.", "Undid edit 3.", "Undid edit 2.", None]
    assert history.can_undo(other)
    history.forget(other.GetID())
    assert not history.can_undo(other)


def test_logic_forgets_undo_of_a_removed_segmentation(harness, volume_node):
    seg = ss.new_segmentation(harness, volume_node)
    logic = ClaraAWSLogic(harness.scene)
    logic._undo.push(seg, UndoEntry("edit", created_segment_ids=["x"]))
    assert logic.canUndo(seg)
    node_id = seg.GetID()
    harness.scene.RemoveNode(seg)
    assert node_id not in logic._undo._stacks
    logic.cleanup()
