"""Label Volume -> segments of a segmentation node, by label value, without touching unrelated segments.

Everything that can fail (resampling, building images and segments) happens before the scene is
changed; a new segmentation node enters the scene only when it is complete, and a failure while
changing an existing segmentation puts its segments back as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, List, Mapping, Optional, Sequence

import numpy as np
import slicer

from . import scene_labelmaps as labelmaps
from . import scene_placement as placement
from .errors import GeometryError, MalformedResponseError
from .geometry import Volume, result_on_grid
from .imageio import as_label_volume
from .scene_export import ijk_to_ras_matrix, volume_grid
from .scene_terminology import assign_colors, terminology_tag
from .scene_undo import SegmentSnapshot, UndoEntry


@dataclass(frozen=True)
class LabelSegment:
    """One segment to create from the voxels equal to ``value``."""

    value: int
    name: str


def segments_for_labels(model_labels: Sequence[str], values_present: Iterable[int]) -> List[LabelSegment]:
    """Every label the model names (value v -> ``labels[v-1]``) plus any other value found ("label v")."""
    values = {index + 1 for index in range(len(model_labels))} | {int(v) for v in values_present if int(v) > 0}
    result: List[LabelSegment] = []
    used_names = set()
    for value in sorted(values):
        name = str(model_labels[value - 1]) if value <= len(model_labels) else f"label {value}"
        if name in used_names:  # two values with one name would fight over one segment
            name = f"{name} ({value})"
        used_names.add(name)
        result.append(LabelSegment(value, name))
    return result


def _label_array(labels: Volume) -> np.ndarray:
    """The label voxels in a compact unsigned type, by the same rules the client applies to results."""
    try:
        return as_label_volume(labels).array
    except MalformedResponseError as error:
        raise GeometryError(str(error)) from error


@dataclass
class ImportOutcome:
    segmentation_node: object
    created_node: bool
    segment_ids: List[str]  # one per LabelSegment, in the same order
    created_segment_ids: List[str] = field(default_factory=list)
    undo_entry: Optional[UndoEntry] = None


def _on_volume_grid(volume_node, labels: Volume) -> Volume:
    return result_on_grid(labels, volume_grid(volume_node))  # refuses results it cannot place


def _build_segments(labels: Volume, segments: Sequence[LabelSegment], image_to_frame: np.ndarray,
                    colors: Sequence, tags: Mapping[str, str]) -> List:
    # One image shared by all new segments: Slicer keeps them in one layer, each with its own label value.
    shared = labelmaps.oriented_image(_label_array(labels), image_to_frame)
    built = []
    for label_segment, color in zip(segments, colors):
        segment = slicer.vtkSegment()
        segment.SetName(label_segment.name)
        segment.SetColor(*color)
        segment.SetLabelValue(label_segment.value)
        segment.AddRepresentation(labelmaps.BINARY_LABELMAP, shared)
        tag = terminology_tag(label_segment.name)
        if tag:
            segment.SetTag(segment.GetTerminologyEntryTagName(), tag)
        for name, value in tags.items():
            segment.SetTag(name, value)
        built.append(segment)
    return built


def _existing_colors(segmentation) -> List:
    return [tuple(segmentation.GetNthSegment(index).GetColor()) for index in range(segmentation.GetNumberOfSegments())]


def _new_segmentation_node(volume_node, built: Sequence, segments: Sequence[LabelSegment], node_name: str):
    node = slicer.vtkMRMLSegmentationNode()
    node.SetName(node_name)
    segmentation = node.GetSegmentation()
    segmentation.SetSourceRepresentationName(labelmaps.BINARY_LABELMAP)
    ids = []
    for segment, label_segment in zip(built, segments):
        segment_id = segmentation.GenerateUniqueSegmentID(label_segment.name)
        if not segmentation.AddSegment(segment, segment_id):
            raise GeometryError(f"Slicer refused to add the segment '{label_segment.name}'.")
        ids.append(segment_id)
    scene = volume_node.GetScene()
    scene.AddNode(node)
    try:
        node.CreateDefaultDisplayNodes()
        node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        node.SetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole(), volume_node.GetID())
        placement.place_next_to(node, volume_node)
    except Exception:
        scene.RemoveNode(node)
        raise
    return node, ids


def _ensure_labelmap_source(segmentation_node) -> None:
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetSourceRepresentationName() != labelmaps.BINARY_LABELMAP:
        # The same conversion Segment Editor does before its first edit of a surface-based segmentation.
        segmentation_node.CreateBinaryLabelmapRepresentation()
        segmentation_node.SetSourceRepresentationToBinaryLabelmap()


def _has_reference_geometry(segmentation_node) -> bool:
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    return bool(segmentation_node.GetSegmentation().GetConversionParameter(name))


def _into_existing(segmentation_node, volume_node, built: Sequence, segments: Sequence[LabelSegment], description: str):
    segmentation = segmentation_node.GetSegmentation()
    targets = [segmentation.GetSegmentIdBySegmentName(s.name) or "" for s in segments]
    new_ids: List[str] = []
    planned_ids = []
    for target, label_segment in zip(targets, segments):
        if target:
            planned_ids.append(target)
        else:
            # Reserve distinct ids up front so two new segments with the same name cannot collide.
            candidate = segmentation.GenerateUniqueSegmentID(label_segment.name)
            suffix = 1
            while candidate in planned_ids:
                candidate = segmentation.GenerateUniqueSegmentID(f"{label_segment.name}_{suffix}")
                suffix += 1
            planned_ids.append(candidate)
            new_ids.append(candidate)
    undo_entry = UndoEntry.capture(segmentation_node, planned_ids, description)
    was_modifying = segmentation_node.StartModify()
    try:
        _ensure_labelmap_source(segmentation_node)
        for segment, segment_id, target in zip(built, planned_ids, targets):
            insert_before = ""
            if target:
                old = segmentation.GetSegment(target)
                # The user's colour and terminology win over the model's for a segment they already had.
                segment.SetColor(*old.GetColor())
                index = segmentation.GetSegmentIndex(target)
                segmentation.RemoveSegment(target)
                if index < segmentation.GetNumberOfSegments():
                    insert_before = segmentation.GetNthSegmentID(index)
            if not segmentation.AddSegment(segment, segment_id, insert_before):
                raise GeometryError(f"Slicer refused to add the segment '{segment.GetName()}'.")
        if not _has_reference_geometry(segmentation_node) and (
            segmentation_node.GetTransformNodeID() == volume_node.GetTransformNodeID()
        ):
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    except Exception:
        undo_entry.restore(segmentation_node)
        raise
    finally:
        segmentation_node.EndModify(was_modifying)
    return planned_ids, new_ids, undo_entry


def import_label_volume(volume_node, labels: Volume, segments: Sequence[LabelSegment], segmentation_node=None, *,
                        tags: Optional[Mapping[str, str]] = None, node_name: Optional[str] = None,
                        description: str = "AI segmentation") -> ImportOutcome:
    """Create or replace one segment per ``LabelSegment`` from ``labels`` and return what changed.

    ``labels`` may be on any grid: it is resampled (nearest neighbour) to the volume's grid first.
    """
    labels = _on_volume_grid(volume_node, labels)
    image_to_frame = placement.volume_to_segmentation_frame(volume_node, segmentation_node) @ ijk_to_ras_matrix(volume_node)
    taken = _existing_colors(segmentation_node.GetSegmentation()) if segmentation_node is not None else []
    colors = assign_colors([s.name for s in segments], taken)
    built = _build_segments(labels, segments, image_to_frame, colors, tags or {})
    if segmentation_node is None:
        name = node_name or f"{volume_node.GetName()} segmentation"
        node, ids = _new_segmentation_node(volume_node, built, segments, name)
        undo_entry = UndoEntry(description, [SegmentSnapshot(segment_id, existed=False) for segment_id in ids])
        return ImportOutcome(node, True, ids, list(ids), undo_entry)
    ids, new_ids, undo_entry = _into_existing(segmentation_node, volume_node, built, segments, description)
    return ImportOutcome(segmentation_node, False, ids, new_ids, undo_entry)
