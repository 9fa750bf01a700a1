"""The one write rule: every AI change to a segment goes through ``write_segment``.

It behaves like a Segment Editor effect that sets the selected segment inside a region:

- only the target segment changes, in its own label value, whatever layer it shares; where it gains a
  voxel that another segment holds, that segment loses it only if the overwrite rule allows it,
  otherwise both keep it (the target moves to a layer of its own, as Slicer does);
- when the segmentation is the one open in the Segment Editor, the editor's editable area (mask mode),
  editable intensity range and "modify other segments" settings apply; elsewhere the defaults are
  "everywhere" and "overwrite none";
- the result is resampled (nearest neighbour) onto the lattice of the segment's own layer: no existing
  voxel is ever resampled, and only the box that can change is read and written.

Every change is recorded per layer (positions, values before and after) so undo can revert exactly
this edit and nothing that happened after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import slicer
from vtk.util import numpy_support

from . import labelmaps as lm
from ..core.errors import GeometryError
from .labelmaps import BINARY_LABELMAP, Box

_segmentation_node_class = slicer.vtkMRMLSegmentationNode
_editor_class = slicer.vtkMRMLSegmentEditorNode

EDIT_EVERYWHERE = _segmentation_node_class.EditAllowedEverywhere
EDIT_INSIDE_ALL = _segmentation_node_class.EditAllowedInsideAllSegments
EDIT_INSIDE_VISIBLE = _segmentation_node_class.EditAllowedInsideVisibleSegments
EDIT_OUTSIDE_ALL = _segmentation_node_class.EditAllowedOutsideAllSegments
EDIT_OUTSIDE_VISIBLE = _segmentation_node_class.EditAllowedOutsideVisibleSegments
EDIT_INSIDE_SINGLE = _segmentation_node_class.EditAllowedInsideSingleSegment
OVERWRITE_ALL = _editor_class.OverwriteAllSegments
OVERWRITE_VISIBLE = _editor_class.OverwriteVisibleSegments
OVERWRITE_NONE = _editor_class.OverwriteNone

SEGMENT_EDITOR_SINGLETON_TAG = "SegmentEditor"


@dataclass(frozen=True)
class EditRules:
    """The Segment Editor settings an edit obeys."""

    mask_mode: int = EDIT_EVERYWHERE
    mask_segment_id: str = ""
    intensity_range: Optional[Tuple[float, float]] = None
    overwrite_mode: int = OVERWRITE_NONE
    intensity_volume_id: Optional[str] = None  # the editor's source volume, for the intensity range

    @classmethod
    def for_segmentation(cls, segmentation_node) -> "EditRules":
        """The Segment Editor's settings when it has this segmentation open, else "only the target changes"."""
        scene = segmentation_node.GetScene()
        editor = scene.GetSingletonNode(SEGMENT_EDITOR_SINGLETON_TAG, "vtkMRMLSegmentEditorNode") if scene else None
        if editor is None or editor.GetSegmentationNode() is not segmentation_node:
            return cls()
        intensity = None
        if editor.GetSourceVolumeIntensityMask():
            intensity = tuple(float(v) for v in editor.GetSourceVolumeIntensityMaskRange())
        source = editor.GetSourceVolumeNode()
        return cls(editor.GetMaskMode(), editor.GetMaskSegmentID() or "", intensity, editor.GetOverwriteMode(),
                   source.GetID() if source is not None else None)


@dataclass
class SegmentResult:
    """What a segment should be inside ``region`` of a source lattice (the grid of the image sent).

    ``mask`` covers ``mask_box`` (inside ``region``); the rest of the region is outside the result.
    """

    region: Box
    mask: np.ndarray  # bool [k, j, i]
    mask_box: Box
    image_to_frame: np.ndarray  # source IJK -> segmentation frame


@dataclass
class IntensitySource:
    """Voxels of the volume the editable intensity range refers to, on its own lattice."""

    values: np.ndarray  # [k, j, i]
    image_to_frame: np.ndarray

    @classmethod
    def of_volume(cls, volume_node, image_to_frame: np.ndarray) -> "IntensitySource":
        image = volume_node.GetImageData()
        dims = image.GetDimensions()
        values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])
        return cls(values, image_to_frame)


@dataclass
class LayerChange:
    """The voxels one edit changed in one layer, enough to revert exactly them."""

    image: object  # the layer's vtkOrientedImageData
    image_to_frame: np.ndarray
    extent_before: Box
    positions: np.ndarray  # (N, 3) i, j, k
    before: np.ndarray
    after: np.ndarray


@dataclass
class WriteOutcome:
    changes: List[LayerChange] = field(default_factory=list)
    changed_segment_ids: List[str] = field(default_factory=list)
    separated_from: Optional[Tuple[object, int]] = None  # (old shared layer, old label value) when the target moved
    separation: Optional[LayerChange] = None  # the target's voxels Slicer cleared from the old shared layer


def reference_lattice(segmentation_node, fallback: np.ndarray) -> np.ndarray:
    """The segmentation's reference geometry (what Segment Editor paints on), else ``fallback``."""
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    geometry = segmentation_node.GetSegmentation().GetConversionParameter(name)
    if geometry:
        image = slicer.vtkOrientedImageData()
        if slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, image, False):
            return lm.image_to_frame(image)
    return fallback


def _empty_layer_lattice(segmentation_node, volume_lattice: np.ndarray) -> np.ndarray:
    reference = reference_lattice(segmentation_node, volume_lattice)
    if lm.integer_shift(lm.lattice_map(reference, volume_lattice)) is not None:
        return volume_lattice  # the same lattice, without the rounding of the serialised reference geometry
    return reference


def _layers(segmentation) -> Dict[int, Tuple[object, List[str]]]:
    """id(layer image) -> (image, segment ids in it), in segment order."""
    layers: Dict[int, Tuple[object, List[str]]] = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        image = segmentation.GetSegment(segment_id).GetRepresentation(BINARY_LABELMAP)
        if image is not None:
            layers.setdefault(id(image), (image, []))[1].append(segment_id)
    return layers


def _visible_ids(segmentation_node, ids: Sequence[str]) -> List[str]:
    display = segmentation_node.GetDisplayNode()
    if display is None:
        return []
    return [segment_id for segment_id in ids if display.GetSegmentVisibility(segment_id)]


class _Scene:
    """Membership of every segment on the target's box, computed once per edit."""

    def __init__(self, segmentation_node, target_id: str, box: Box, lattice: np.ndarray) -> None:
        self.node = segmentation_node
        self.segmentation = segmentation_node.GetSegmentation()
        self.target_id = target_id
        self.box, self.lattice = box, lattice
        self.layers = _layers(self.segmentation)
        self._cache: Dict[int, np.ndarray] = {}

    def layer_values(self, image) -> np.ndarray:
        """The layer's values at the centres of the target box's voxels."""
        key = id(image)
        if key not in self._cache:
            extent = lm.layer_extent(image)
            if lm.box_is_empty(extent):
                self._cache[key] = np.zeros(lm.box_shape(self.box), np.uint8)
            elif lm.integer_shift(lm.lattice_map(lm.image_to_frame(image), self.lattice)) == (0, 0, 0):
                self._cache[key] = lm.read_box(image, self.box)
            else:
                needed = lm.box_intersection(lm.box_on_lattice(self.box, self.lattice, lm.image_to_frame(image)), extent)
                values = lm.read_box(image, needed)
                self._cache[key] = lm.resample_box(values, needed, lm.image_to_frame(image), self.box, self.lattice, 0)
        return self._cache[key]

    def membership(self, segment_id: str) -> np.ndarray:
        segment = self.segmentation.GetSegment(segment_id)
        image = segment.GetRepresentation(BINARY_LABELMAP)
        if image is None:
            return np.zeros(lm.box_shape(self.box), bool)
        return self.layer_values(image) == segment.GetLabelValue()

    def union(self, ids: Sequence[str]) -> np.ndarray:
        result = np.zeros(lm.box_shape(self.box), bool)
        for segment_id in ids:
            result |= self.membership(segment_id)
        return result


def _editable(scene: _Scene, rules: EditRules, intensity: Optional[IntensitySource]) -> Optional[np.ndarray]:
    """Where the edit may change the target (None: everywhere), as Slicer's GenerateEditMask defines it."""
    all_ids = [scene.segmentation.GetNthSegmentID(n) for n in range(scene.segmentation.GetNumberOfSegments())]
    others = [segment_id for segment_id in all_ids if segment_id != scene.target_id]
    mode = rules.mask_mode
    editable: Optional[np.ndarray] = None
    if mode == EDIT_INSIDE_ALL:
        editable = scene.union(all_ids)
    elif mode == EDIT_INSIDE_VISIBLE:
        editable = scene.union(_visible_ids(scene.node, all_ids))
    elif mode == EDIT_OUTSIDE_ALL:
        editable = ~scene.union(others)
    elif mode == EDIT_OUTSIDE_VISIBLE:
        editable = ~scene.union(_visible_ids(scene.node, others))
    elif mode == EDIT_INSIDE_SINGLE:
        mask_id = rules.mask_segment_id
        editable = scene.union([mask_id] if scene.segmentation.GetSegment(mask_id) else [])
    if rules.intensity_range is not None and intensity is not None:
        low, high = rules.intensity_range
        size = intensity.values.shape
        values = lm.resample_box(intensity.values.astype(np.float64, copy=False), (0, size[2] - 1, 0, size[1] - 1, 0, size[0] - 1),
                                 intensity.image_to_frame, scene.box, scene.lattice, np.nan)
        in_range = (values >= low) & (values <= high)
        editable = in_range if editable is None else editable & in_range
    return editable


def _overwritable(scene: _Scene, rules: EditRules) -> List[str]:
    others = [scene.segmentation.GetNthSegmentID(n) for n in range(scene.segmentation.GetNumberOfSegments())]
    others = [segment_id for segment_id in others if segment_id != scene.target_id]
    if rules.overwrite_mode == OVERWRITE_ALL:
        return others
    if rules.overwrite_mode == OVERWRITE_VISIBLE:
        return _visible_ids(scene.node, others)
    return []


def _result_on_box(result: SegmentResult, box: Box, lattice: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(known, value) on the target box: known where a voxel centre lies in the result's region."""
    if lm.integer_shift(lm.lattice_map(result.image_to_frame, lattice)) is not None:
        known = np.zeros(lm.box_shape(box), bool)
        region = lm.box_intersection(lm.box_on_lattice(result.region, result.image_to_frame, lattice), box)
        if not lm.box_is_empty(region):
            known[lm.box_slices(region, box)] = True
    else:
        inside = np.ones(lm.box_shape(result.region), np.uint8)
        known = lm.resample_box(inside, result.region, result.image_to_frame, box, lattice, 0).astype(bool)
    value = lm.resample_box(result.mask.astype(np.uint8, copy=False), result.mask_box, result.image_to_frame, box,
                            lattice, 0).astype(bool)
    return known, value


def target_box(segmentation_node, segment_id: str, result: SegmentResult, lattice: np.ndarray) -> Box:
    """The part of the layer lattice the edit can change: the result's voxels plus the segment's voxels in the region."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation(BINARY_LABELMAP)
    box = lm.box_on_lattice(result.mask_box, result.image_to_frame, lattice)
    extent = lm.layer_extent(image)
    if not lm.box_is_empty(extent):
        if _shares_layer(segmentation_node, segment_id):
            # The layer's extent covers its other segments too: find the target's own voxels instead.
            extent = lm.mask_bounds(lm.layer_view(image) == segment.GetLabelValue(), extent[0::2])
        region = lm.box_on_lattice(result.region, result.image_to_frame, lattice)
        box = lm.box_union(box, lm.box_intersection(region, extent))
    return box


def _shares_layer(segmentation_node, segment_id: str) -> bool:
    shared: List[str] = []
    segmentation_node.GetSegmentation().GetSegmentIDsSharingBinaryLabelmapRepresentation(segment_id, shared, False)
    return bool(shared)


def _record(image, box: Box, before: np.ndarray, after: np.ndarray, extent_before: Box) -> Optional[LayerChange]:
    changed = before != after
    if not changed.any():
        return None
    k, j, i = np.nonzero(changed)
    positions = np.stack([i + box[0], j + box[2], k + box[4]], axis=1).astype(np.int32)
    return LayerChange(image, lm.image_to_frame(image), extent_before, positions, before[changed], after[changed])


def write_segment(segmentation_node, segment_id: str, result: SegmentResult, rules: EditRules = EditRules(),
                  intensity: Optional[IntensitySource] = None, fallback_lattice: Optional[np.ndarray] = None) -> WriteOutcome:
    """Make ``segment_id`` equal ``result`` inside the result's region, by the rules above; returns what changed.

    The segmentation must have a binary labelmap source (callers convert closed surfaces first).
    """
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetSourceRepresentationName() != BINARY_LABELMAP:
        raise GeometryError("The segmentation's source is not a binary labelmap; convert it before an AI edit.")
    segment = segmentation.GetSegment(segment_id)
    if segment is None:
        raise GeometryError(f"The segment '{segment_id}' does not exist; nothing was changed.")
    outcome = WriteOutcome()
    image = segment.GetRepresentation(BINARY_LABELMAP)
    if lm.box_is_empty(lm.layer_extent(image)):
        # An empty layer has no voxels whose place could move: paint on the segmentation's reference lattice.
        lm.set_lattice(image, _empty_layer_lattice(segmentation_node, fallback_lattice if fallback_lattice is not None
                                                   else result.image_to_frame))
    lattice = lm.image_to_frame(image)
    box = target_box(segmentation_node, segment_id, result, lattice)
    if lm.box_is_empty(box):
        return outcome
    scene = _Scene(segmentation_node, segment_id, box, lattice)
    known, value = _result_on_box(result, box, lattice)
    old = scene.membership(segment_id)
    final = np.where(known, value, old)
    editable = _editable(scene, rules, intensity)
    if editable is not None:
        final = np.where(editable, final, old)
    gained = final & ~old
    overwritable = set(_overwritable(scene, rules))
    layer_ids = scene.layers[id(image)][1]
    blocking = [other for other in layer_ids if other != segment_id and other not in overwritable
                and (scene.membership(other) & gained).any()]
    if blocking:
        # A voxel cannot hold two values: keep the other segment whole and move the target, as Slicer does.
        old_label = segment.GetLabelValue()
        extent_shared = lm.layer_extent(image)
        before_shared = lm.read_box(image, extent_shared)
        segmentation.SeparateSegmentLabelmap(segment_id)
        outcome.separation = _record(image, extent_shared, before_shared, lm.read_box(image, extent_shared),
                                     extent_shared)
        outcome.separated_from = (image, old_label)
        image = segment.GetRepresentation(BINARY_LABELMAP)
        scene = _Scene(segmentation_node, segment_id, box, lattice)
    label = segment.GetLabelValue()
    extent_before = lm.layer_extent(image)
    before = lm.read_box(image, box)
    after = before.copy()
    after[old & ~final] = 0
    after = _with_value(after, final & ~old, label)
    change = _record(image, box, before, after, extent_before)
    if change is not None:
        lm.write_box(image, box, after)
        outcome.changes.append(change)
        outcome.changed_segment_ids.append(segment_id)
    for other_image, ids in scene.layers.values():
        if other_image is image:
            continue
        erase = [other for other in ids if other in overwritable]
        if erase and gained.any():
            outcome.changes.extend(_erase(other_image, segmentation, erase, gained, box, lattice, outcome))
    return outcome


def _with_value(values: np.ndarray, where: np.ndarray, label: int) -> np.ndarray:
    if where.any() and label > np.iinfo(values.dtype).max:
        values = values.astype(np.min_scalar_type(label))
    values[where] = label
    return values


def _erase(image, segmentation, segment_ids: Sequence[str], gained: np.ndarray, box: Box, lattice: np.ndarray,
           outcome: WriteOutcome) -> List[LayerChange]:
    """Remove the target's new voxels from overwritable segments of another layer (on that layer's own lattice)."""
    own = lm.image_to_frame(image)
    extent = lm.layer_extent(image)
    other_box = lm.box_intersection(lm.box_on_lattice(box, lattice, own), extent)
    if lm.box_is_empty(other_box):
        return []
    covered = lm.resample_box(gained.astype(np.uint8), box, lattice, other_box, own, 0).astype(bool)
    before = lm.read_box(image, other_box)
    after = before.copy()
    for segment_id in segment_ids:
        hit = covered & (before == segmentation.GetSegment(segment_id).GetLabelValue())
        if hit.any():
            after[hit] = 0
            outcome.changed_segment_ids.append(segment_id)
    change = _record(image, other_box, before, after, extent)
    if change is None:
        return []
    lm.write_box(image, other_box, after)
    return [change]


def revert(change: LayerChange) -> int:
    """Put back the voxels of one recorded change that still hold the edit's value; returns how many had changed since.

    A voxel the user changed after the edit keeps the user's value: undo never discards later work.
    """
    image = change.image
    extent = lm.layer_extent(image)
    if not change.positions.size:
        return 0
    low = change.positions.min(axis=0)
    high = change.positions.max(axis=0)
    box: Box = (int(low[0]), int(high[0]), int(low[1]), int(high[1]), int(low[2]), int(high[2]))
    values = lm.read_box(image, box)
    index = (change.positions[:, 2] - box[4], change.positions[:, 1] - box[2], change.positions[:, 0] - box[0])
    current = values[index]
    still = current == change.after
    values[tuple(axis[still] for axis in index)] = change.before[still]
    if not lm.box_is_empty(extent) or change.before[still].any():
        lm.write_box(image, box, values)
    if lm.box_is_empty(change.extent_before):
        if not lm.layer_view(image).any():
            lm.make_empty(image)
    elif _zero_outside(image, change.extent_before):
        lm.crop_to(image, change.extent_before)
    return int((~still).sum())


def _zero_outside(image, box: Box) -> bool:
    extent = lm.layer_extent(image)
    if lm.box_is_empty(extent):
        return False
    values = lm.layer_view(image)
    inner = np.zeros(values.shape, bool)
    inside = lm.box_intersection(box, extent)
    if not lm.box_is_empty(inside):
        inner[lm.box_slices(inside, extent)] = True
    return lm.box_intersection(box, extent) == box and not values[~inner].any()
