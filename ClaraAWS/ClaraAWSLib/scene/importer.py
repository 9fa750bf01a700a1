"""Label Volume -> segments of a segmentation node, by label value, without touching unrelated segments.

Everything that can fail (resampling, building images and segments) happens before the scene is
changed; a new segmentation node enters the scene only when it is complete. Into an existing
segmentation every label goes through the write rule (``scene_edit``), which puts back what it wrote
if it fails half-way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, List, Mapping, Optional, Sequence

import numpy as np
import slicer

from . import labelmaps
from . import placement
from ..core.errors import GeometryError, MalformedResponseError
from ..core.geometry import Volume, result_on_grid
from ..core.result_images import as_label_volume
from .export import ijk_to_ras_matrix, volume_grid
from .terminology import assign_colors, terminology_tag
from .edit import SegmentWriteRequest, write_results
from .labelmaps import box_is_empty, box_slices, mask_bounds
from .undo import UndoEntry, created_segments_entry
from .write_rule import SegmentResult


@dataclass(frozen=True)
class LabelSegment:
    """One segment to create from the voxels equal to ``value``."""

    value: int
    name: str


def segments_for_labels(model_labels: Sequence[str], values_present: Iterable[int],
                        label_values: Optional[Mapping[str, int]] = None) -> List[LabelSegment]:
    """Every label the model names plus any other value found ("label v").

    A label's value is ``label_values[name]`` when the backend gives them (MONAI Label: by name, values
    need not be 1..N, e.g. DeepEdit's liver=6), else its position + 1 (value v -> ``labels[v-1]``).
    """
    if label_values and len(label_values) >= len(model_labels):  # a name map cannot hold a repeated name
        named = {int(value): str(name) for name, value in label_values.items() if int(value) > 0}
    else:
        named = {index + 1: str(name) for index, name in enumerate(model_labels)}
    values = set(named) | {int(v) for v in values_present if int(v) > 0}
    result: List[LabelSegment] = []
    used_names = set()
    for value in sorted(values):
        name = named.get(value, f"label {value}")
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


def _has_reference_geometry(segmentation_node) -> bool:
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    return bool(segmentation_node.GetSegmentation().GetConversionParameter(name))


def _into_existing(segmentation_node, volume_node, labels: Volume, segments: Sequence[LabelSegment],
                   image_to_frame: np.ndarray, colors: Sequence, tags: Mapping[str, str], description: str,
                   **write_options) -> ImportOutcome:
    """Each label replaces the voxels of the segment of its name (or a new one) by the write rule."""
    segmentation = segmentation_node.GetSegmentation()
    array = _label_array(labels)
    size = labels.grid.size
    region = (0, size[0] - 1, 0, size[1] - 1, 0, size[2] - 1)
    requests = []
    for label_segment, color in zip(segments, colors):
        mask = array == label_segment.value
        box = mask_bounds(mask)
        cropped = mask[box_slices(box, region)] if not box_is_empty(box) else np.zeros((0, 0, 0), bool)
        requests.append(SegmentWriteRequest(
            SegmentResult(region, cropped, box, image_to_frame),
            segment_id=segmentation.GetSegmentIdBySegmentName(label_segment.name) or None,
            name=label_segment.name, color=color, tags=dict(tags),
        ))
    outcome = write_results(segmentation_node, volume_node, requests, description, fallback_lattice=image_to_frame,
                            **write_options)
    if not _has_reference_geometry(segmentation_node) and (
        segmentation_node.GetTransformNodeID() == volume_node.GetTransformNodeID()
    ):
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    return ImportOutcome(segmentation_node, False, outcome.segment_ids, outcome.created_segment_ids, outcome.undo_entry)


def import_label_volume(volume_node, labels: Volume, segments: Sequence[LabelSegment], segmentation_node=None, *,
                        tags: Optional[Mapping[str, str]] = None, node_name: Optional[str] = None,
                        description: str = "AI segmentation", **write_options) -> ImportOutcome:
    """Create or replace one segment per ``LabelSegment`` from ``labels`` and return what changed.

    ``labels`` may be on any grid: it is resampled (nearest neighbour) to the volume's grid first. Into an
    existing segmentation every segment goes through the write rule (``write_options`` go to
    ``scene_edit.write_results``).
    """
    labels = _on_volume_grid(volume_node, labels)
    image_to_frame = placement.volume_to_segmentation_frame(volume_node, segmentation_node) @ ijk_to_ras_matrix(volume_node)
    taken = _existing_colors(segmentation_node.GetSegmentation()) if segmentation_node is not None else []
    colors = assign_colors([s.name for s in segments], taken)
    if segmentation_node is not None:
        return _into_existing(segmentation_node, volume_node, labels, segments, image_to_frame, colors, tags or {},
                              description, **write_options)
    built = _build_segments(labels, segments, image_to_frame, colors, tags or {})
    name = node_name or f"{volume_node.GetName()} segmentation"
    node, ids = _new_segmentation_node(volume_node, built, segments, name)
    return ImportOutcome(node, True, ids, list(ids), created_segments_entry(description, node, ids))
