"""AI results into an existing segmentation: one transaction of write-rule calls with its undo entry.

Extreme points, deepgrow clicks and auto-segmentation into a segmentation the user already has all
end here. The transaction converts a closed-surface source only when the caller allowed it, lets the
caller save the Segment Editor's undo state first, creates the segments that do not exist yet, writes
each segment through ``scene_write.write_segment`` and returns an ``UndoEntry`` for exactly that.
A failure half-way puts back what the transaction had already written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Type

import numpy as np
import slicer

from ..core.errors import InputError
from .labelmaps import BINARY_LABELMAP
from .terminology import Color, terminology_tag
from .undo import UndoEntry
from .write_rule import EditRules, IntensitySource, SegmentResult, write_segment

log = logging.getLogger(__name__)


@dataclass
class SegmentWriteRequest:
    """One segment to write: an existing one (``segment_id``) or a new one named ``name``."""

    result: SegmentResult
    segment_id: Optional[str] = None
    name: str = ""
    color: Color = (0.5, 0.5, 0.5)
    tags: Dict[str, str] = field(default_factory=dict)


@dataclass
class EditOutcome:
    segment_ids: List[str]  # one per request, in the same order
    created_segment_ids: List[str]
    undo_entry: UndoEntry


def is_closed_surface_source(segmentation_node) -> bool:
    return segmentation_node.GetSegmentation().GetSourceRepresentationName() != BINARY_LABELMAP


def surface_source_refusal(segmentation_node, error_type: Type[InputError] = InputError) -> InputError:
    return error_type(
        f"The segmentation '{segmentation_node.GetName()}' is stored as closed surfaces; an AI edit needs it as a "
        "binary labelmap, as the Segment Editor does. Allow the conversion and try again (nothing was changed)."
    )


def _convert_to_labelmap_source(segmentation_node):
    """Switch the source to binary labelmap like the Segment Editor does; returns a copy of the segmentation before."""
    before = slicer.vtkSegmentation()
    before.DeepCopy(segmentation_node.GetSegmentation())
    if not segmentation_node.CreateBinaryLabelmapRepresentation():
        raise InputError(
            f"The closed surfaces of '{segmentation_node.GetName()}' could not be converted to a labelmap; "
            "set its reference geometry in the Segmentations module and try again."
        )
    segmentation_node.SetSourceRepresentationToBinaryLabelmap()
    return before


def _unique_segment_id(segmentation, name: str, reserved: Sequence[str]) -> str:
    candidate, suffix = segmentation.GenerateUniqueSegmentID(name), 1
    while candidate in reserved:
        candidate, suffix = segmentation.GenerateUniqueSegmentID(f"{name}_{suffix}"), suffix + 1
    return candidate


def write_results(segmentation_node, volume_node, requests: Sequence[SegmentWriteRequest], description: str, *,
                  allow_surface_conversion: bool = False,
                  before_write: Optional[Callable[[object], None]] = None,
                  fallback_lattice: Optional[np.ndarray] = None) -> EditOutcome:
    """Write every request into ``segmentation_node`` by the write rule; returns the ids and the undo entry."""
    converted = None
    if is_closed_surface_source(segmentation_node):
        if not allow_surface_conversion:
            raise surface_source_refusal(segmentation_node)
    if before_write is not None:
        before_write(segmentation_node)  # the Segment Editor's undo state, before anything changes
    if is_closed_surface_source(segmentation_node):
        converted = _convert_to_labelmap_source(segmentation_node)
    entry = UndoEntry(description, surface_source=converted)
    rules = EditRules.for_segmentation(segmentation_node)
    intensity = _intensity_source(segmentation_node, volume_node, rules)
    segmentation = segmentation_node.GetSegmentation()
    ids: List[str] = []
    was_modifying = segmentation_node.StartModify()
    try:
        for request in requests:
            segment_id = request.segment_id
            if not segment_id:
                segment_id = _unique_segment_id(segmentation, request.name, ids)
                segmentation.AddEmptySegment(segment_id, request.name, list(request.color))
                entry.created_segment_ids.append(segment_id)
                tag = terminology_tag(request.name)
                if tag:
                    segmentation.GetSegment(segment_id).SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), tag)
            outcome = write_segment(segmentation_node, segment_id, request.result, rules, intensity, fallback_lattice)
            entry.add_write(segmentation_node, segment_id, outcome)
            for name, value in request.tags.items():
                entry.set_tag(segmentation_node, segment_id, name, value)
            ids.append(segment_id)
    except Exception:
        entry.seal(segmentation_node)
        try:
            entry.undo(segmentation_node)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            log.exception("Could not put back a failed AI edit completely.")
        raise
    finally:
        segmentation_node.EndModify(was_modifying)
    return EditOutcome(ids, list(entry.created_segment_ids), entry.seal(segmentation_node))


def _intensity_source(segmentation_node, volume_node, rules: EditRules) -> Optional[IntensitySource]:
    if rules.intensity_range is None:
        return None
    from .export import ijk_to_ras_matrix
    from .placement import volume_to_segmentation_frame

    source = volume_node
    if rules.intensity_volume_id:
        source = segmentation_node.GetScene().GetNodeByID(rules.intensity_volume_id) or volume_node
    if source.GetImageData() is None:
        return None
    frame = volume_to_segmentation_frame(source, segmentation_node) @ ijk_to_ras_matrix(source)
    return IntensitySource.of_volume(source, frame)
