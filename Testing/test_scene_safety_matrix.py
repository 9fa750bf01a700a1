"""The scene-safety matrix: every AI operation crossed with every segmentation layout users have.

Each cell runs a real request through the logic against a real server on 127.0.0.1 (the reference
server, or the other-make stub for a crop-box answer), then asserts the target segment voxel-exact on
its own layer's lattice and every other segment identical (name, colour, lattice and voxels), then
undoes the edit and asserts that everything is exactly as before. Expected results come from the
server called directly and from the layouts' own lattice arithmetic (segment_layouts.py).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.slicer

import slicer  # noqa: E402

import segment_layouts as sl  # noqa: E402
import slicer_scene as ss  # noqa: E402
from ClaraAWSLib import ClaraAWSLogic  # noqa: E402
from ClaraAWSLib.backends.aiaa.client import AIAAClient  # noqa: E402
from ClaraAWSLib.core.errors import InputError  # noqa: E402
from ClaraAWSLib.synthetic.phantom import make_phantom, oblique_direction  # noqa: E402

SEGMENTATION_MODEL = "phantom_abdomen_seg"
ANNOTATION_MODEL = "region_grow_annotation"
DEEPGROW_MODEL = "region_grow_deepgrow"
DEEPGROW_2D_MODEL = "region_grow_deepgrow_2d"
STUB_DEEPGROW_MODEL = "odd_grow"
OPERATIONS = ("annotate", "deepgrow_3d", "deepgrow_2d", "auto_segment", "other_make_crop_box")


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(size=(64, 60, 24), spacing=(4.6, 4.9, 10.5), origin=(-140.0, -160.5, -110.25),
                        direction=oblique_direction((8.0, -5.0, 17.0)), seed=4)


@pytest.fixture(scope="module")
def direct(server):
    with AIAAClient(server.url) as client:
        yield client


@pytest.fixture
def volume_node(harness, phantom):
    return ss.add_volume(harness, phantom.ct, transform_node=ss.add_transform(harness, ss.linear_transform()))


_extreme_points, _centre, _world = ss.extreme_points, ss.centre_voxel, ss.world_points


def _user_masks(phantom):
    """The user's own work: a partial liver stroke plus a stray stroke, a lesion overlapping the liver, a vessel."""
    liver = phantom.truth.array == phantom.label_value("liver")
    shape = liver.shape
    target = np.zeros(shape, bool)
    k, j, i = np.nonzero(liver)
    target[k.min():k.min() + 3, j.min():j.min() + 6, i.min():i.min() + 6] = True
    target[0:2, 0:3, 0:3] = True  # far from the liver
    lesion = np.zeros(shape, bool)
    kc, jc, ic = (int(np.median(axis)) for axis in (k, j, i))
    lesion[kc - 2:kc + 2, jc - 4:jc + 4, ic - 4:ic + 4] = True  # inside the liver: the AI result covers it
    vessel = np.zeros(shape, bool)
    vessel[shape[0] - 3:, shape[1] - 6:, 2:10] = True
    return liver, target, [lesion, vessel]


class Cell:
    """One operation on one layout: runs it and knows the result it should give."""

    def __init__(self, operation, phantom, volume_node, logic, layout, direct, stub):
        self.operation, self.phantom, self.volume_node, self.logic = operation, phantom, volume_node, logic
        self.layout, self.direct, self.stub = layout, direct, stub

    def run(self, liver):
        ct, node, seg = self.phantom.ct, self.volume_node, self.layout.node
        target = self.layout.target_id
        if self.operation == "annotate":
            points = _extreme_points(liver)
            answer = self.direct.dextr3d(ANNOTATION_MODEL, points, ct)
            self.logic.annotate(node, seg, target, ANNOTATION_MODEL, _world(node, points))
            return answer, None
        if self.operation in ("deepgrow_3d", "deepgrow_2d"):
            model = DEEPGROW_MODEL if self.operation == "deepgrow_3d" else DEEPGROW_2D_MODEL
            click = _centre(liver)
            answer = self.direct.deepgrow(model, [click], [], ct, current_point=click)
            self.logic.deepgrow(node, seg, target, model, _world(node, [click]))
            return answer, (click[2] if self.operation == "deepgrow_2d" else None)
        if self.operation == "other_make_crop_box":
            self.stub.mode = "crop_param"
            click = _centre(liver)
            with AIAAClient(self.stub.url) as other:
                answer = other.deepgrow(STUB_DEEPGROW_MODEL, [click], [], ct, current_point=click)
            self.logic.deepgrow(node, seg, target, STUB_DEEPGROW_MODEL, _world(node, [click]))
            return answer, None
        answer = self.direct.inference(SEGMENTATION_MODEL, ct)
        self.logic.autoSegment(node, SEGMENTATION_MODEL, seg)
        return answer, None


@pytest.mark.parametrize("layout_name", sl.LAYOUTS)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_an_ai_edit_changes_only_its_target_and_undo_restores_everything(
        harness, phantom, server, stub, direct, volume_node, operation, layout_name):
    liver, target_mask, neighbour_masks = _user_masks(phantom)
    other = ss.add_transform(harness, ss.linear_transform((-20, 5, 9), (0, 0, 1), -31), "Other")
    layout = sl.build(harness, volume_node, layout_name, target_mask, neighbour_masks, other_transform=other)
    seg = layout.node
    before_all = sl.fingerprints(sl.as_labelmaps(seg), [layout.target_id] + layout.neighbour_ids)
    surfaces_before = {sid: seg.GetSegmentation().GetSegment(sid).GetRepresentation(sl.SURFACE).GetNumberOfPoints()
                       for sid in [layout.target_id] + layout.neighbour_ids} if layout_name == "closed_surface" else {}
    logic = ClaraAWSLogic(harness.scene)
    logic.confirmSourceConversion = lambda node: True
    logic.connect(stub.url if operation == "other_make_crop_box" else server.url)
    try:
        answer, slice_k = Cell(operation, phantom, volume_node, logic, layout, direct, stub).run(liver)
        segmentation = seg.GetSegmentation()
        assert segmentation.GetSourceRepresentationName() == sl.BINARY
        labels = answer.labels().array
        if operation == "auto_segment":
            result = labels == SERVER_LABELS.index("liver") + 1
            region = sl.region_mask(labels.shape, None)
        else:
            result = labels > 0
            region = sl.region_mask(labels.shape, (answer.params or {}).get("crop"), slice_k)
        lattice = sl.layer_matrix(segmentation.GetSegment(layout.target_id).GetRepresentation(sl.BINARY))
        expected = sl.expected_target(before_all[layout.target_id], result, region,
                                      ss.volume_frame(volume_node, seg), lattice)
        after = sl.fingerprints(segmentation, [layout.target_id] + layout.neighbour_ids)
        assert np.allclose(lattice, before_all[layout.target_id].lattice, atol=1e-9) or \
            not len(before_all[layout.target_id].positions)
        assert np.array_equal(after[layout.target_id].positions, expected), _debug_diff(after[layout.target_id].positions, expected)
        assert (result & region).sum() > 20  # the server found a real structure to write
        for neighbour in layout.neighbour_ids:
            assert after[neighbour] == before_all[neighbour], f"neighbour {neighbour} changed"

        assert logic.undo(seg)

        if layout_name == "closed_surface":
            assert segmentation.GetSourceRepresentationName() == sl.SURFACE
            for sid, points in surfaces_before.items():
                assert segmentation.GetSegment(sid).GetRepresentation(sl.SURFACE).GetNumberOfPoints() == points
        restored = sl.fingerprints(sl.as_labelmaps(seg), [layout.target_id] + layout.neighbour_ids)
        assert restored == before_all
        assert ss.segment_ids(seg) == [layout.target_id] + layout.neighbour_ids or \
            sorted(ss.segment_ids(seg)) == sorted([layout.target_id] + layout.neighbour_ids)
    finally:
        logic.cleanup()


SERVER_LABELS = ["liver", "spleen", "left kidney", "right kidney"]


def test_the_phantom_model_labels_are_the_ones_the_matrix_assumes(direct):
    models = {model["name"]: model for model in direct.models()}
    assert models[SEGMENTATION_MODEL]["labels"][:4] == SERVER_LABELS


def test_a_closed_surface_segmentation_is_refused_unless_the_conversion_is_allowed(harness, phantom, server, volume_node):
    liver, target_mask, neighbour_masks = _user_masks(phantom)
    layout = sl.build(harness, volume_node, "closed_surface", target_mask, neighbour_masks)
    seg = layout.node
    points_before = seg.GetSegmentation().GetSegment(layout.target_id).GetRepresentation(sl.SURFACE).GetNumberOfPoints()
    logic = ClaraAWSLogic(harness.scene)
    logic.connect(server.url)
    try:
        uploads = server.stats.image_uploads
        with pytest.raises(InputError, match="closed surfaces"):
            logic.annotate(volume_node, seg, layout.target_id, ANNOTATION_MODEL, _world(volume_node, _extreme_points(liver)))
        assert server.stats.image_uploads == uploads  # refused before anything was sent
        assert seg.GetSegmentation().GetSourceRepresentationName() == sl.SURFACE
        assert seg.GetSegmentation().GetSegment(layout.target_id).GetRepresentation(sl.SURFACE).GetNumberOfPoints() == points_before
    finally:
        logic.cleanup()


def test_an_edit_of_a_converted_surface_survives_save_and_reload(harness, phantom, server, volume_node, tmp_path):
    liver, target_mask, neighbour_masks = _user_masks(phantom)
    layout = sl.build(harness, volume_node, "closed_surface", target_mask, neighbour_masks)
    logic = ClaraAWSLogic(harness.scene)
    logic.confirmSourceConversion = lambda node: True
    logic.connect(server.url)
    try:
        logic.annotate(volume_node, layout.node, layout.target_id, ANNOTATION_MODEL,
                       _world(volume_node, _extreme_points(liver)))
        edited = sl.fingerprint(layout.node.GetSegmentation(), layout.target_id)
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(tmp_path / "edited.seg.nrrd"))
        assert storage.WriteData(layout.node)
        reloaded = slicer.vtkMRMLSegmentationNode()
        harness.scene.AddNode(reloaded)
        storage.ReadData(reloaded)
        segmentation = reloaded.GetSegmentation()
        assert segmentation.GetSourceRepresentationName() == sl.BINARY
        again = sl.fingerprint(segmentation, layout.target_id)
        assert np.array_equal(again.positions, edited.positions)
        assert len(edited.positions) > 20
    finally:
        logic.cleanup()



def _debug_diff(a, b):
    only_a = {tuple(p) for p in a.tolist()} - {tuple(p) for p in b.tolist()}
    only_b = {tuple(p) for p in b.tolist()} - {tuple(p) for p in a.tolist()}
    return sorted(only_a)[:10], sorted(only_b)[:10]
