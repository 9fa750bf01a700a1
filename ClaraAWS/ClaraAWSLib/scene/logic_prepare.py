"""Step 1 of a request, on the GUI thread: check the input, convert points, copy the voxels or find the session.

Mixed into ``ClaraAWSLogic``; it uses the logic's client, sessions and request sequencer.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

from . import export as scene_export, placement as scene_placement, points as scene_points
from ..backends import ANNOTATE, AUTO_SEGMENT, DEEPGROW, MIN_EXTREME_POINTS
from ..core.errors import ClaraError, DeclinedError, InputError
from .edit import is_closed_surface_source, surface_source_refusal
from .requests import SegmentationRequest
from .segment_tags import TAG_BACKGROUND_POINTS, TAG_EXTREME_POINTS, TAG_FOREGROUND_POINTS


def is_deepgrow_2d(model: Dict[str, Any]) -> bool:
    return str(model.get("deepgrow", "")).strip().upper() == "2D"


class PrepareStep:
    def prepareAutoSegment(self, volumeNode, modelName: str, segmentationNode=None) -> SegmentationRequest:
        client, model = self._checkedModel(modelName, AUTO_SEGMENT, volumeNode, segmentationNode, None)
        started = time.perf_counter()
        grid = scene_export.volume_grid(volumeNode)
        entry = self._sessions.valid(volumeNode)
        volume = None
        if entry is None or not entry.is_open:
            pending = entry.pending_upload if entry is not None else None  # compressed ahead by preEncode
            entry, volume = None, pending or scene_export.export_volume(volumeNode)
        target = (AUTO_SEGMENT, volumeNode.GetID(), segmentationNode.GetID() if segmentationNode else "new")
        request = self._newRequest(AUTO_SEGMENT, client, model, grid, volumeNode, segmentationNode, None,
                                   target)
        request.volume, request.volume_session = volume, entry
        request.timings["export"] = time.perf_counter() - started
        return request

    def preEncode(self, volumeNode) -> bool:
        """Start compressing ``volumeNode`` for upload in the background (GUI thread; the panel calls it when a
        volume is selected), so Auto-segment or the first click finds the bytes ready. False when nothing started."""
        if self.client is None or volumeNode is None:
            return False
        try:
            scene_export.check_scalar_volume(volumeNode)
            return self._sessions.prepare(volumeNode, scene_export.export_volume)
        except ClaraError:  # the request itself will say what is wrong with the volume
            return False

    def prepareAnnotate(self, volumeNode, segmentationNode, segmentId: Optional[str], modelName: str,
                        pointsRAS) -> SegmentationRequest:
        points = [list(point) for point in (pointsRAS or [])]
        if len(points) < MIN_EXTREME_POINTS:
            raise InputError(
                f"Place at least {MIN_EXTREME_POINTS} extreme points (the outermost points of the structure along "
                f"every axis); {len(points)} {'is' if len(points) == 1 else 'are'} placed."
            )
        client, model = self._checkedModel(modelName, ANNOTATE, volumeNode, segmentationNode, segmentId)
        started = time.perf_counter()
        grid = scene_export.volume_grid(volumeNode)
        indices = scene_points.points_to_indices(volumeNode, grid, points, role="Extreme point")
        entry = self._sessions.entry_for(volumeNode, scene_export.export_volume)
        request = self._newRequest(ANNOTATE, client, model, entry.grid, volumeNode, segmentationNode,
                                   segmentId, self._editTarget(volumeNode, segmentationNode, segmentId))
        request.volume_session = entry
        request.call_arguments = {"points": indices}
        request.points_ras = {TAG_EXTREME_POINTS: points}
        request.timings["export"] = time.perf_counter() - started
        return request

    def prepareDeepgrow(self, volumeNode, segmentationNode, segmentId: Optional[str], modelName: str, foregroundRAS,
                        backgroundRAS=(), currentPointRAS=None) -> SegmentationRequest:
        foreground = [list(point) for point in (foregroundRAS or [])]
        background = [list(point) for point in (backgroundRAS or [])]
        if not foreground:
            raise InputError("Place at least one foreground point inside the structure, then try again.")
        client, model = self._checkedModel(modelName, DEEPGROW, volumeNode, segmentationNode, segmentId)
        started = time.perf_counter()
        grid = scene_export.volume_grid(volumeNode)
        foreground_ijk = scene_points.points_to_indices(volumeNode, grid, foreground, role="Foreground point")
        background_ijk = scene_points.points_to_indices(volumeNode, grid, background, role="Background point")
        if currentPointRAS is not None:
            current = scene_points.points_to_indices(volumeNode, grid, [list(currentPointRAS)], role="Current point")[0]
        else:
            current = foreground_ijk[-1]
        slice_k = None
        if is_deepgrow_2d(model):
            slice_k = current[2]
            # A 2D model sees one slice: send only the clicks on it, as the NVIDIA Slicer plugin does.
            foreground_ijk = [p for p in foreground_ijk if p[2] == slice_k]
            background_ijk = [p for p in background_ijk if p[2] == slice_k]
            if not foreground_ijk:
                raise InputError(
                    f"The 2D deepgrow model works on one slice: place a foreground point on slice {slice_k} first."
                )
        entry = self._sessions.entry_for(volumeNode, scene_export.export_volume)
        arguments = {"foreground": foreground_ijk, "background": background_ijk, "current_point": current}
        if segmentId:
            # A multi-label model (MONAI Label deepedit) edits the label the segment is named after.
            arguments["label"] = segmentationNode.GetSegmentation().GetSegment(segmentId).GetName()
        request = self._newRequest(DEEPGROW, client, model, entry.grid, volumeNode, segmentationNode,
                                   segmentId, self._editTarget(volumeNode, segmentationNode, segmentId))
        request.volume_session = entry
        request.call_arguments = arguments
        request.slice_k = slice_k
        request.points_ras = {TAG_FOREGROUND_POINTS: foreground, TAG_BACKGROUND_POINTS: background}
        request.timings["export"] = time.perf_counter() - started
        return request

    def _newRequest(self, kind, client, model, grid, volumeNode, segmentationNode, segmentId, target):
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId) if segmentationNode and segmentId else None
        return SegmentationRequest(
            kind=kind, client=client, model=model, endpoint=client.endpoint_for(kind, model), grid=grid,
            volume_node_id=volumeNode.GetID(),
            segmentation_node_id=segmentationNode.GetID() if segmentationNode is not None else None,
            segment_id=segmentId or None, segment_name=segment.GetName() if segment else "", target=target, sequence=self._sequencer.begin(target),
            sequencer=self._sequencer,
            allow_source_conversion=segmentationNode is not None and is_closed_surface_source(segmentationNode),
        )

    def _checkedModel(self, modelName: str, task: str, volumeNode, segmentationNode, segmentId: Optional[str]):
        """The client and the model, checked for ``task``, once the targets are checked too (before any export)."""
        client = self._requireClient()
        model = client.check_model_task(self.model(modelName), task)
        self._checkTargets(volumeNode, segmentationNode, segmentId)
        return client, model

    @staticmethod
    def _editTarget(volumeNode, segmentationNode, segmentId):
        owner = segmentationNode.GetID() if segmentationNode is not None else ("new", volumeNode.GetID())
        return ("edit", owner, segmentId or "new")

    def _checkTargets(self, volumeNode, segmentationNode, segmentId: Optional[str]) -> None:
        scene_export.check_scalar_volume(volumeNode)
        if volumeNode.GetScene() is not self.scene:
            raise InputError(f"The volume '{volumeNode.GetName()}' is not in this logic's scene.")
        if segmentationNode is None:
            if segmentId:
                raise InputError("A segment ID was given without a segmentation; choose the segmentation too.")
            return
        if not segmentationNode.IsA("vtkMRMLSegmentationNode") or segmentationNode.GetScene() is not self.scene:
            raise InputError("The chosen output is not a segmentation of this scene; choose a segmentation node.")
        scene_placement.volume_to_segmentation_frame(volumeNode, segmentationNode)  # raises for non-linear mixes
        if segmentId and segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
            raise InputError(
                f"The segmentation '{segmentationNode.GetName()}' has no segment '{segmentId}'; select an existing segment."
            )
        if is_closed_surface_source(segmentationNode) and not self.confirmSourceConversion(segmentationNode):
            # asked before the upload, not after the wait
            raise surface_source_refusal(segmentationNode, DeclinedError)
