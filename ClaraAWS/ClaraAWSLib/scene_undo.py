"""Undo of AI edits: a stack per segmentation node of the segments as they were before each edit.

A snapshot keeps one segment's voxels cropped to their bounding box in the segment's own layer
geometry, plus its name, colour and the tags ClaraAWS writes, so undo gives back the exact labelmap.
An edit that created a segment is undone by removing that segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import slicer
import vtk

from . import scene_labelmaps as labelmaps

#: Tags an AI edit may change, restored by undo (Slicer has no API that lists all tags of a segment).
TAG_PREFIX = "ClaraAWS."
TRACKED_TAGS: Tuple[str, ...] = (
    slicer.vtkSegment.GetTerminologyEntryTagName(),
    "ClaraAWS.Model",
    "ClaraAWS.ExtremePointsRAS",
    "ClaraAWS.ForegroundPointsRAS",
    "ClaraAWS.BackgroundPointsRAS",
    "ClaraAWS.ResultParams",
)


def read_tag(segment, name: str) -> Optional[str]:
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


@dataclass
class SegmentSnapshot:
    segment_id: str
    existed: bool
    name: str = ""
    color: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    tags: Dict[str, str] = field(default_factory=dict)
    index: int = -1
    mask: Optional[np.ndarray] = None  # uint8 [k, j, i], cropped to the segment's bounding box
    mask_origin_index: Tuple[int, int, int] = (0, 0, 0)
    image_to_frame: np.ndarray = field(default_factory=lambda: np.eye(4))

    @classmethod
    def capture(cls, segmentation_node, segment_id: str) -> "SegmentSnapshot":
        segmentation = segmentation_node.GetSegmentation()
        segment = segmentation.GetSegment(segment_id)
        if segment is None:
            return cls(segment_id, existed=False)
        tags = {name: value for name in TRACKED_TAGS if (value := read_tag(segment, name)) is not None}
        snapshot = cls(
            segment_id,
            existed=True,
            name=segment.GetName(),
            color=tuple(segment.GetColor()),
            tags=tags,
            index=segmentation.GetSegmentIndex(segment_id),
        )
        layer = labelmaps.segment_layer_mask(segmentation_node, segment_id)
        if layer is not None:
            mask, extent, image_to_frame = layer
            cropped = labelmaps.crop_to_content(mask, extent)
            if cropped is not None:
                snapshot.mask, snapshot.mask_origin_index = cropped
                snapshot.image_to_frame = image_to_frame
        return snapshot

    def restore(self, segmentation_node) -> None:
        segmentation = segmentation_node.GetSegmentation()
        if not self.existed:
            if segmentation.GetSegment(self.segment_id) is not None:
                segmentation.RemoveSegment(self.segment_id)
            return
        if segmentation.GetSegment(self.segment_id) is None:
            segmentation.AddEmptySegment(self.segment_id, self.name, list(self.color))
            if 0 <= self.index < segmentation.GetNumberOfSegments():
                segmentation.SetSegmentIndex(self.segment_id, self.index)
        labelmaps.set_segment_mask(segmentation_node, self.segment_id, self.mask, self.image_to_frame,
                                   self.mask_origin_index)
        segment = segmentation.GetSegment(self.segment_id)
        segment.SetName(self.name)
        segment.SetColor(*self.color)
        for name in TRACKED_TAGS:
            if name in self.tags:
                segment.SetTag(name, self.tags[name])
            elif segment.HasTag(name):
                segment.RemoveTag(name)


@dataclass
class UndoEntry:
    description: str
    snapshots: List[SegmentSnapshot]

    @classmethod
    def capture(cls, segmentation_node, segment_ids: Sequence[str], description: str) -> "UndoEntry":
        return cls(description, [SegmentSnapshot.capture(segmentation_node, segment_id) for segment_id in segment_ids])

    def restore(self, segmentation_node) -> None:
        # Reverse order so segments removed and re-added land back at their old positions.
        for snapshot in reversed(self.snapshots):
            snapshot.restore(segmentation_node)


class UndoHistory:
    """Undo stacks of AI edits, one per segmentation node ID, each at most ``max_depth`` entries deep."""

    def __init__(self, max_depth: int = 10) -> None:
        self.max_depth = max_depth
        self._stacks: Dict[str, List[UndoEntry]] = {}

    def push(self, segmentation_node, entry: UndoEntry) -> None:
        stack = self._stacks.setdefault(segmentation_node.GetID(), [])
        stack.append(entry)
        del stack[: max(0, len(stack) - self.max_depth)]

    def can_undo(self, segmentation_node) -> bool:
        return segmentation_node is not None and bool(self._stacks.get(segmentation_node.GetID()))

    def undo(self, segmentation_node) -> Optional[str]:
        """Restore the segments changed by the last AI edit; returns its description, or None if nothing to undo."""
        if not self.can_undo(segmentation_node):
            return None
        entry = self._stacks[segmentation_node.GetID()].pop()
        entry.restore(segmentation_node)
        return entry.description

    def forget(self, segmentation_node_id: str) -> None:
        self._stacks.pop(segmentation_node_id, None)

    def clear(self) -> None:
        self._stacks.clear()
