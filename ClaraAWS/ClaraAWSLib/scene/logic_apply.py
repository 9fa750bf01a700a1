"""Step 3 of a request, on the GUI thread: its result into the scene, through the write rule, with an undo entry.

Mixed into ``ClaraAWSLogic``; it uses the logic's scene, undo history and ``beforeSegmentWrite``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List

from . import export as scene_export, placement as scene_placement
from ..backends import AUTO_SEGMENT
from ..core.errors import GeometryError, InputError
from .edit import SegmentWriteRequest, write_results
from .importer import LabelSegment, import_label_volume, segments_for_labels
from .requests import SegmentationRequest
from .segment_tags import TAG_MODEL, points_json
from .terminology import assign_colors

log = logging.getLogger(__name__)


def _colors_of(segmentationNode) -> List:
    segmentation = segmentationNode.GetSegmentation()
    return [tuple(segmentation.GetNthSegment(n).GetColor()) for n in range(segmentation.GetNumberOfSegments())]


class ApplyStep:
    def apply(self, request: SegmentationRequest):
        """Put a finished request's result into the scene; None when a newer request made it stale."""
        if request.applied:
            return request.applied_result  # a second apply of one answer changes nothing
        if request.superseded:
            return None
        if not request.finished:
            raise InputError("The request has not run yet; call request.run() before applying it.")
        self.lastRequest = request
        started = time.perf_counter()
        volumeNode = self._liveNode(request.volume_node_id, "volume")
        if not scene_export.volume_grid(volumeNode).matches(request.grid):
            raise GeometryError(
                f"The volume '{volumeNode.GetName()}' changed geometry while the server was working; run the request again."
            )
        segmentationNode = (
            self._liveNode(request.segmentation_node_id, "segmentation") if request.segmentation_node_id else None
        )
        if request.kind == AUTO_SEGMENT:
            result = self._applyAutoSegment(request, volumeNode, segmentationNode)
        else:
            result = self._applyEdit(request, volumeNode, segmentationNode)
        request.applied, request.applied_result = True, result
        if self.createSurfaceAfterImport and self.lastSegmentationNode is not None:
            self.lastSegmentationNode.CreateClosedSurfaceRepresentation()
        request.timings["import"] = time.perf_counter() - started
        self.lastTimings = dict(request.timings)
        return result

    def _applyAutoSegment(self, request, volumeNode, segmentationNode):
        segments = segments_for_labels(request.model.get("labels") or [], request.label_values,
                                       request.model.get("label_values"))
        options = self._writeOptions(request) if segmentationNode is not None else {}
        outcome = import_label_volume(
            volumeNode, request.labels, segments, segmentationNode,
            tags={TAG_MODEL: request.model_name},
            node_name=f"{volumeNode.GetName()} {request.model_name}",
            description=f"auto-segmentation with {request.model_name}", **options,
        )
        self._undo.push(outcome.segmentation_node, outcome.undo_entry)
        selected = (outcome.created_segment_ids or outcome.segment_ids or [""])[0]
        if selected:
            self._showInSegmentEditor(request, outcome.segmentation_node, volumeNode, selected)
        self.lastSegmentationNode = outcome.segmentation_node
        return outcome.segmentation_node

    def _applyEdit(self, request, volumeNode, segmentationNode) -> str:
        tags = {TAG_MODEL: request.model_name}
        tags.update({name: points_json(points) for name, points in request.points_ras.items()})
        description = f"{request.kind} with {request.model_name}"
        segmentId = request.segment_id
        if segmentationNode is None:
            outcome = import_label_volume(
                volumeNode, request.edit_volume(), [LabelSegment(1, self._newSegmentName(None, request.model))],
                None, tags=tags, node_name=f"{volumeNode.GetName()} {request.model_name}", description=description,
            )
            segmentationNode, segmentId = outcome.segmentation_node, outcome.segment_ids[0]
            self._undo.push(segmentationNode, outcome.undo_entry)
        else:
            if segmentId is not None and segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
                raise InputError(f"The segment '{request.segment_name or segmentId}' was deleted while the server was "
                                 "working; nothing was changed.")
            frame = scene_placement.volume_to_segmentation_frame(volumeNode, segmentationNode) @ \
                scene_export.ijk_to_ras_matrix(volumeNode)
            name = "" if segmentId else self._newSegmentName(segmentationNode, request.model)
            color = (0.5, 0.5, 0.5) if segmentId else assign_colors([name], _colors_of(segmentationNode))[0]
            write = SegmentWriteRequest(request.segment_result(frame), segment_id=segmentId, name=name, color=color,
                                        tags=tags)
            outcome = write_results(segmentationNode, volumeNode, [write], description, **self._writeOptions(request))
            segmentId = outcome.segment_ids[0]
            self._undo.push(segmentationNode, outcome.undo_entry)
        self._showInSegmentEditor(request, segmentationNode, volumeNode, segmentId)
        self.lastSegmentationNode = segmentationNode
        return segmentId

    def _writeOptions(self, request) -> Dict[str, Any]:
        return {"allow_surface_conversion": request.allow_source_conversion,
                "before_write": request.before_write or self.beforeSegmentWrite}

    def _showInSegmentEditor(self, request, segmentationNode, volumeNode, segmentId: str) -> None:
        try:
            if request.editor_node_id:
                scene_placement.select_in_editor(self.scene.GetNodeByID(request.editor_node_id), segmentationNode,
                                                 segmentId)
            else:
                scene_placement.select_in_segment_editor(segmentationNode, volumeNode, segmentId)
        except Exception:  # noqa: BLE001 - the result is in the scene; failing to select it must not undo that
            log.warning("Could not select the result in the Segment Editor.", exc_info=True)

    @staticmethod
    def _newSegmentName(segmentationNode, model) -> str:
        labels = model.get("labels") or []
        base = str(labels[0]) if labels else str(model["name"])
        if segmentationNode is None:
            return base
        segmentation = segmentationNode.GetSegmentation()
        name, number = base, 2
        while segmentation.GetSegmentIdBySegmentName(name):  # never overwrite a segment the user made
            name, number = f"{base} {number}", number + 1
        return name

    def _liveNode(self, node_id: str, what: str):
        node = self.scene.GetNodeByID(node_id)
        if node is None:
            raise InputError(f"The {what} was removed from the scene while the server was working; nothing was changed.")
        return node
