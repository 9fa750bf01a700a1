"""Undo of AI edits that never discards work done after them.

An ``UndoEntry`` records what one AI operation did: the exact voxels it changed in each layer (from
the write rule), the segments it created, the tags it set and, when it had to convert a closed-surface
source, the segmentation as it was. Undo then reverts only what still holds the operation's values:

- a voxel the user painted since keeps the user's value; a rename or a new colour stays;
- a segment the operation created is removed only if the user has not changed it since;
- the closed-surface source comes back only if nothing in the segmentation changed since;
- when a segment was reorganised in a way undo cannot follow (the Segment Editor's own undo, a new
  geometry), nothing is changed and one sentence says why.

Within the Segment Editor the same edit is also a step of the editor's own undo (Ctrl+Z): the panel
saves the editor's state before each write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import vtk

from . import labelmaps as lm
from ..core.errors import InputError
from .labelmaps import BINARY_LABELMAP
from .write_rule import WriteOutcome, revert


class UndoRefusedError(InputError):
    """Undo would have to discard or guess at changes made after the AI edit; nothing was changed."""


def read_tag(segment, name: str) -> Optional[str]:
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


@dataclass(frozen=True)
class SegmentMark:
    """What identifies a segment's state cheaply: its layer object and that layer's modification time."""

    segment_id: str
    layer_id: int
    layer_mtime: int
    label_value: int
    name: str
    color: Tuple[float, float, float]

    @classmethod
    def capture(cls, segmentation_node, segment_id: str) -> Optional["SegmentMark"]:
        segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
        if segment is None:
            return None
        layer = segment.GetRepresentation(BINARY_LABELMAP)
        return cls(segment_id, id(layer) if layer is not None else 0, layer.GetMTime() if layer is not None else 0,
                   segment.GetLabelValue(), segment.GetName(), tuple(round(c, 6) for c in segment.GetColor()))

    def same_look(self, other: Optional["SegmentMark"]) -> bool:
        return other is not None and (self.name, self.color) == (other.name, other.color)


@dataclass
class TagChange:
    segment_id: str
    name: str
    before: Optional[str]
    after: str


@dataclass
class SegmentWrite:
    """One write-rule call: which segment, what it changed, and the layer it ended in."""

    segment_id: str
    outcome: WriteOutcome
    layer: object
    label_value: int


def _segment_ids(segmentation) -> List[str]:
    return [segmentation.GetNthSegmentID(index) for index in range(segmentation.GetNumberOfSegments())]


@dataclass
class UndoEntry:
    description: str
    writes: List[SegmentWrite] = field(default_factory=list)
    created_segment_ids: List[str] = field(default_factory=list)
    tag_changes: List[TagChange] = field(default_factory=list)
    surface_source: Optional[object] = None  # vtkSegmentation copy from before a closed-surface conversion
    marks_after: Dict[str, SegmentMark] = field(default_factory=dict)
    order_after: List[str] = field(default_factory=list)

    # --- recording -------------------------------------------------------------------------------------
    def add_write(self, segmentation_node, segment_id: str, outcome: WriteOutcome) -> None:
        segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
        self.writes.append(SegmentWrite(segment_id, outcome, segment.GetRepresentation(BINARY_LABELMAP),
                                        segment.GetLabelValue()))

    def set_tag(self, segmentation_node, segment_id: str, name: str, value: str) -> None:
        segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
        self.tag_changes.append(TagChange(segment_id, name, read_tag(segment, name), value))
        segment.SetTag(name, value)

    def seal(self, segmentation_node) -> "UndoEntry":
        """Remember how every segment looks right after the operation (call it last)."""
        segmentation = segmentation_node.GetSegmentation()
        self.order_after = _segment_ids(segmentation)
        self.marks_after = {segment_id: SegmentMark.capture(segmentation_node, segment_id) for segment_id in self.order_after}
        return self

    @property
    def is_empty(self) -> bool:
        return not (self.writes or self.created_segment_ids or self.tag_changes or self.surface_source is not None)

    # --- undoing ---------------------------------------------------------------------------------------
    def _untouched_since(self, segmentation_node) -> bool:
        segmentation = segmentation_node.GetSegmentation()
        return _segment_ids(segmentation) == self.order_after and all(
            SegmentMark.capture(segmentation_node, segment_id) == mark for segment_id, mark in self.marks_after.items()
        )

    def _check_followable(self, segmentation_node) -> None:
        segmentation = segmentation_node.GetSegmentation()
        for write in self.writes:
            segment = segmentation.GetSegment(write.segment_id)
            if segment is None:
                continue  # deleted since: its own voxels are gone with it, the other segments can still be restored
            if segment.GetRepresentation(BINARY_LABELMAP) is not write.layer or segment.GetLabelValue() != write.label_value:
                raise UndoRefusedError(
                    f"The segment '{segment.GetName()}' was reorganised after the AI edit (for example by the Segment "
                    "Editor's own undo); use the Segment Editor's Undo instead. Nothing was changed."
                )
            changes = list(write.outcome.changes) + ([write.outcome.separation] if write.outcome.separation else [])
            for change in changes:
                if not np.allclose(lm.image_to_frame(change.image), change.image_to_frame):
                    raise UndoRefusedError(
                        f"The segmentation '{segmentation_node.GetName()}' got a new geometry after the AI edit, so "
                        "its voxels cannot be matched any more; nothing was changed."
                    )

    def undo(self, segmentation_node) -> str:
        """Revert this operation as far as later changes allow; returns a sentence saying what was done."""
        segmentation = segmentation_node.GetSegmentation()
        if self.surface_source is not None and self._untouched_since(segmentation_node):
            segmentation.DeepCopy(self.surface_source)
            return f"Undid {self.description}; the segmentation's closed surfaces are back."
        self._check_followable(segmentation_node)
        looks = {segment_id: SegmentMark.capture(segmentation_node, segment_id) for segment_id in self.created_segment_ids}
        kept_voxels = 0
        was_modifying = segmentation_node.StartModify()
        try:
            for write in reversed(self.writes):
                kept_voxels += self._revert_write(segmentation, write)
            self._revert_tags(segmentation)
            kept_segments = self._remove_created(segmentation_node, looks)
        finally:
            segmentation_node.EndModify(was_modifying)
        notes = []
        if kept_voxels:
            notes.append(f"{kept_voxels} voxel{'s' if kept_voxels != 1 else ''} you changed since kept your changes")
        if kept_segments:
            notes.append(f"the segment{'s' if len(kept_segments) > 1 else ''} {', '.join(kept_segments)} you changed "
                         "since stayed")
        if self.surface_source is not None:
            notes.append("the source stays a binary labelmap because the segmentation changed since")
        return f"Undid {self.description}" + (f"; {'; '.join(notes)}." if notes else ".")

    @staticmethod
    def _revert_write(segmentation, write: SegmentWrite) -> int:
        segment = segmentation.GetSegment(write.segment_id)
        kept = 0
        for change in reversed(write.outcome.changes):
            if segment is None and change.image is write.layer:
                continue  # the target was deleted since; writing its label back would leave orphan voxels
            kept += revert(change)
        separated = write.outcome.separated_from
        if segment is not None and separated is not None and kept == 0 and \
                _holds_exactly(write.layer, write.label_value, write.outcome.separation):
            shared, label = separated
            owners = [sid for sid in _segment_ids(segmentation)
                      if segmentation.GetSegment(sid).GetRepresentation(BINARY_LABELMAP) is shared]
            if all(segmentation.GetSegment(sid).GetLabelValue() != label for sid in owners):
                # Back into the shared layer it was in, with its old label value, as before the edit.
                segment.AddRepresentation(BINARY_LABELMAP, shared)
                segment.SetLabelValue(label)
                if write.outcome.separation is not None:
                    revert(write.outcome.separation)
        return kept

    def _revert_tags(self, segmentation) -> None:
        for change in reversed(self.tag_changes):
            segment = segmentation.GetSegment(change.segment_id)
            if segment is None or read_tag(segment, change.name) != change.after:
                continue  # changed since by someone else: theirs wins
            if change.before is None:
                segment.RemoveTag(change.name)
            else:
                segment.SetTag(change.name, change.before)

    def _remove_created(self, segmentation_node, looks: Dict[str, Optional[SegmentMark]]) -> List[str]:
        segmentation = segmentation_node.GetSegmentation()
        kept = []
        for segment_id in self.created_segment_ids:
            segment = segmentation.GetSegment(segment_id)
            if segment is None:
                continue
            mark_after = self.marks_after.get(segment_id)
            look_now = looks.get(segment_id)
            if mark_after is not None and mark_after.same_look(look_now) and not _has_voxels(segment):
                segmentation.RemoveSegment(segment_id)
            else:
                kept.append(f"'{segment.GetName()}'")
        return kept


def _holds_exactly(layer, label: int, separation) -> bool:
    """True when the layer holds the segment's voxels exactly as they were moved out of the shared layer."""
    if separation is None:
        return not _layer_has(layer, label)
    extent = lm.layer_extent(layer)
    if lm.box_is_empty(extent):
        return False
    k, j, i = np.nonzero(lm.layer_view(layer) == label)
    now = np.stack([i + extent[0], j + extent[2], k + extent[4]], axis=1)
    moved = separation.positions
    if len(now) != len(moved):
        return False
    order = lambda points: points[np.lexsort(points.T[::-1])]  # noqa: E731
    return bool(np.array_equal(order(now), order(moved.astype(now.dtype))))


def _layer_has(layer, label: int) -> bool:
    return layer is not None and not lm.box_is_empty(lm.layer_extent(layer)) and bool((lm.layer_view(layer) == label).any())


def _has_voxels(segment) -> bool:
    return _layer_has(segment.GetRepresentation(BINARY_LABELMAP), segment.GetLabelValue())


def created_segments_entry(description: str, segmentation_node, segment_ids: Sequence[str]) -> UndoEntry:
    """The undo entry of an operation that only created segments (a new segmentation, new segments)."""
    return UndoEntry(description, created_segment_ids=list(segment_ids)).seal(segmentation_node)


class UndoHistory:
    """Undo stacks of AI edits, one per segmentation node ID, each at most ``max_depth`` entries deep."""

    def __init__(self, max_depth: int = 10) -> None:
        self.max_depth = max_depth
        self._stacks: Dict[str, List[UndoEntry]] = {}

    def push(self, segmentation_node, entry: UndoEntry) -> None:
        if entry.is_empty:
            return
        stack = self._stacks.setdefault(segmentation_node.GetID(), [])
        stack.append(entry)
        del stack[: max(0, len(stack) - self.max_depth)]

    def can_undo(self, segmentation_node) -> bool:
        return segmentation_node is not None and bool(self._stacks.get(segmentation_node.GetID()))

    def undo(self, segmentation_node) -> Optional[str]:
        """Revert the last AI edit; returns what was done, None if nothing to undo (UndoRefusedError: kept)."""
        if not self.can_undo(segmentation_node):
            return None
        entry = self._stacks[segmentation_node.GetID()].pop()  # a refused entry can never be undone later either
        return entry.undo(segmentation_node)

    def forget(self, segmentation_node_id: str) -> None:
        self._stacks.pop(segmentation_node_id, None)

    def clear(self) -> None:
        self._stacks.clear()
