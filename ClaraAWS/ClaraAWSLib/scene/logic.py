"""ClaraAWSLogic: volume nodes in, segmentation nodes out, through a segmentation server (AIAA or MONAI Label).

Each operation has three steps so a GUI can keep its thread free and drop stale answers:

- ``prepare...()`` on the GUI thread checks the input, converts points and copies the voxels (or
  finds the volume's session) and returns a ``SegmentationRequest``;
- ``request.run(progress, cancel)`` on any thread does the network work and decoding, no MRML;
- ``apply(request)`` on the GUI thread changes the scene, or returns None when a newer request for
  the same target has started since (its answer is stale).

``autoSegment``, ``annotate`` and ``deepgrow`` run the three steps in a row. Nothing in the scene
changes until ``apply``, and a failing ``apply`` leaves the scene as it was.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence

import vtk

from . import export as scene_export, loop as scene_loop, placement as scene_placement, points as scene_points
from ..backends import ANNOTATE, AUTO_SEGMENT, DEEPGROW, MIN_EXTREME_POINTS
from ..core.errors import ClaraError, GeometryError, InputError
from .edit import SegmentWriteRequest, is_closed_surface_source, surface_source_refusal, write_results
from .importer import LabelSegment, import_label_volume, segments_for_labels
from .terminology import assign_colors
from .requests import RequestSequencer, SegmentationRequest, run_detached
from .sessions import BackgroundCloser, SessionCache
from .setup import default_scene, ensure_scene_services
from .undo import UndoHistory

log = logging.getLogger(__name__)

#: How long cleanup() (module exit) waits for server sessions to be deleted; they expire on the server anyway.
SESSION_CLOSE_WAIT_SECONDS = 2.0


TAG_MODEL = "ClaraAWS.Model"
TAG_EXTREME_POINTS = "ClaraAWS.ExtremePointsRAS"
TAG_FOREGROUND_POINTS = "ClaraAWS.ForegroundPointsRAS"
TAG_BACKGROUND_POINTS = "ClaraAWS.BackgroundPointsRAS"


def _points_json(points: Sequence[Sequence[float]]) -> str:
    return json.dumps([[round(float(value), 4) for value in point] for point in points])


#: The scene callbacks of every logic, held here for as long as a scene may call them. VTK reports a Python
#: observer to the cyclic garbage collector as part of the object it observes; a scene the collector frees
#: would otherwise have its callbacks cleared first and then call them while it closes (a crash).
_scene_callbacks: Dict[int, tuple] = {}


def _remove_observers(scene_reference, tags, callbacks_key: int) -> None:
    scene = scene_reference()
    if scene is not None:
        for tag in tags:
            scene.RemoveObserver(tag)
        _scene_callbacks.pop(callbacks_key, None)
    # else: the scene is being freed with its observers still attached; they stay callable until it is gone.


def _colors_of(segmentationNode) -> List:
    segmentation = segmentationNode.GetSegmentation()
    return [tuple(segmentation.GetNthSegment(n).GetColor()) for n in range(segmentation.GetNumberOfSegments())]


def is_deepgrow_2d(model: Dict[str, Any]) -> bool:
    return str(model.get("deepgrow", "")).strip().upper() == "2D"


class ClaraAWSLogic:
    """Scene-side orchestration of ClaraAWS; imports slicer and vtk, never qt."""

    def __init__(self, scene=None, *, clientFactory: Optional[Callable[..., Any]] = None, maxUndo: int = 10) -> None:
        self.scene = scene if scene is not None else default_scene()
        self._services = ensure_scene_services(self.scene)
        self.client = None
        self.models: List[Dict[str, Any]] = []
        self.lastTimings: Dict[str, float] = {}
        self.lastRequest: Optional[SegmentationRequest] = None
        self.lastSegmentationNode = None
        self._clientFactory = clientFactory
        self._sessionCloser = BackgroundCloser()
        this = weakref.ref(self)  # no cycle between the logic and its session cache
        self._sessions = SessionCache(lambda: getattr(this(), "client", None), closer=self._sessionCloser)
        self._undo = UndoHistory(maxUndo)
        self._sequencer = RequestSequencer()
        #: Asked (on the GUI thread, at prepare) whether a closed-surface segmentation may become a labelmap.
        self.confirmSourceConversion: Callable[[Any], bool] = lambda segmentationNode: False
        #: Called with the segmentation right before an AI edit writes into it (the panel saves the Segment
        #: Editor's undo state there, so Ctrl+Z undoes the AI edit like any stroke).
        self.beforeSegmentWrite: Optional[Callable[[Any], None]] = None
        self.lastUndoSummary = ""
        #: Build the 3D (closed surface) representation after an import, as MONAI Label's plugin offers.
        self.createSurfaceAfterImport = False
        self._observations: List[int] = []
        self._observeScene()

    # --- server ---------------------------------------------------------------------------------
    def connect(self, serverUrl: str, *, backend: str = "auto", **clientOptions: Any) -> List[Dict[str, Any]]:
        """Connect to a segmentation server and list its models; clientOptions go to its backend's client.

        ``backend`` "aiaa" or "monailabel" names the protocol, "auto" (default) asks the server.
        """
        client, models = self.openServer(serverUrl, backend=backend, **clientOptions)
        return self.useServer(client, models)

    def openServer(self, serverUrl: str, *, backend: str = "auto", **clientOptions: Any):
        """Make a client for the server and list its models, changing nothing (any thread); returns both."""
        factory = self._clientFactory
        if factory is None:
            from ..backends import connect as factory
        if backend != "auto":
            clientOptions["backend"] = backend
        elif self._clientFactory is None:
            clientOptions["backend"] = "auto"
        def open_and_list():
            client = factory(serverUrl, **clientOptions)
            try:
                return client, client.models()
            except Exception:
                client.close()
                raise

        return run_detached(open_and_list)

    def disconnect(self) -> None:
        """Forget the current server (GUI thread): its sessions and its client are closed."""
        self._sessions.close_all()
        if self.client is not None:
            self.client.close()
        self.client, self.models = None, []

    def useServer(self, client, models: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Make an opened server the current one (GUI thread): sessions of the previous one are closed."""
        self._sessions.close_all()
        if self.client is not None and self.client is not client:
            self.client.close()
        self.client, self.models = client, list(models)
        return self.models

    def refreshModels(self) -> List[Dict[str, Any]]:
        self.models = run_detached(self._requireClient().models)
        return self.models

    def model(self, name: str) -> Dict[str, Any]:
        for model in self.models:
            if model.get("name") == name:
                return model
        raise InputError(f"The server has no model named '{name}'; list the models again and choose one of them.")

    # --- blocking contract ------------------------------------------------------------------------
    def autoSegment(self, volumeNode, modelName: str, segmentationNode=None):
        """Segment the whole volume with a segmentation model; returns the vtkMRMLSegmentationNode."""
        return self._runInRow(self.prepareAutoSegment(volumeNode, modelName, segmentationNode))

    def annotate(self, volumeNode, segmentationNode, segmentId: Optional[str], modelName: str, pointsRAS) -> str:
        """Replace a segment with the result of an extreme-points model; returns the segment ID."""
        return self._runInRow(self.prepareAnnotate(volumeNode, segmentationNode, segmentId, modelName, pointsRAS))

    def deepgrow(self, volumeNode, segmentationNode, segmentId: Optional[str], modelName: str, foregroundRAS,
                 backgroundRAS=(), currentPointRAS=None) -> str:
        """Update a segment from foreground/background clicks; returns the segment ID."""
        request = self.prepareDeepgrow(volumeNode, segmentationNode, segmentId, modelName, foregroundRAS,
                                       backgroundRAS, currentPointRAS)
        return self._runInRow(request)

    def undo(self, segmentationNode) -> bool:
        """Undo the last AI edit of this segmentation as far as later changes allow; False if there is none.

        Voxels, names and colours changed after the edit are kept (``lastUndoSummary`` says what was done);
        scene_undo.UndoRefusedError, an InputError, when the segment was reorganised so undo cannot follow.
        """
        summary = self._undo.undo(segmentationNode)
        self.lastUndoSummary = summary or ""
        return summary is not None

    def canUndo(self, segmentationNode) -> bool:
        return self._undo.can_undo(segmentationNode)

    def _runInRow(self, request: SegmentationRequest):
        started = time.perf_counter()
        run_detached(request.run)
        result = self.apply(request)
        self.lastTimings["total"] = time.perf_counter() - started + request.timings.get("export", 0.0)
        return result

    # --- step 1: prepare (GUI thread) ---------------------------------------------------------------
    def prepareAutoSegment(self, volumeNode, modelName: str, segmentationNode=None) -> SegmentationRequest:
        client = self._requireClient()
        model = client.check_model_task(self.model(modelName), AUTO_SEGMENT)
        self._checkTargets(volumeNode, segmentationNode, None)
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
        client = self._requireClient()
        model = client.check_model_task(self.model(modelName), ANNOTATE)
        self._checkTargets(volumeNode, segmentationNode, segmentId)
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
        client = self._requireClient()
        model = client.check_model_task(self.model(modelName), DEEPGROW)
        self._checkTargets(volumeNode, segmentationNode, segmentId)
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
        return SegmentationRequest(
            kind=kind, client=client, model=model, endpoint=client.endpoint_for(kind, model), grid=grid,
            volume_node_id=volumeNode.GetID(),
            segmentation_node_id=segmentationNode.GetID() if segmentationNode is not None else None,
            segment_id=segmentId or None, target=target, sequence=self._sequencer.begin(target),
            sequencer=self._sequencer,
            allow_source_conversion=segmentationNode is not None and is_closed_surface_source(segmentationNode),
        )

    @staticmethod
    def _editTarget(volumeNode, segmentationNode, segmentId):
        owner = segmentationNode.GetID() if segmentationNode is not None else ("new", volumeNode.GetID())
        return ("edit", owner, segmentId or "new")

    # --- step 3: apply (GUI thread) -------------------------------------------------------------------
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
            self._showInSegmentEditor(outcome.segmentation_node, volumeNode, selected)
        self.lastSegmentationNode = outcome.segmentation_node
        return outcome.segmentation_node

    def _applyEdit(self, request, volumeNode, segmentationNode) -> str:
        tags = {TAG_MODEL: request.model_name}
        tags.update({name: _points_json(points) for name, points in request.points_ras.items()})
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
                raise InputError(f"The segment '{segmentId}' was deleted while the server was working; nothing was changed.")
            frame = scene_placement.volume_to_segmentation_frame(volumeNode, segmentationNode) @ \
                scene_export.ijk_to_ras_matrix(volumeNode)
            name = "" if segmentId else self._newSegmentName(segmentationNode, request.model)
            color = (0.5, 0.5, 0.5) if segmentId else assign_colors([name], _colors_of(segmentationNode))[0]
            write = SegmentWriteRequest(request.segment_result(frame), segment_id=segmentId, name=name, color=color,
                                        tags=tags)
            outcome = write_results(segmentationNode, volumeNode, [write], description, **self._writeOptions(request))
            segmentId = outcome.segment_ids[0]
            self._undo.push(segmentationNode, outcome.undo_entry)
        self._showInSegmentEditor(segmentationNode, volumeNode, segmentId)
        self.lastSegmentationNode = segmentationNode
        return segmentId

    def _writeOptions(self, request) -> Dict[str, Any]:
        return {"allow_surface_conversion": request.allow_source_conversion,
                "before_write": request.before_write or self.beforeSegmentWrite}

    @staticmethod
    def _showInSegmentEditor(segmentationNode, volumeNode, segmentId: str) -> None:
        try:
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

    # --- active learning (MONAI Label servers) ----------------------------------------------------------
    @property
    def supportsActiveLearning(self) -> bool:
        """Whether the connected server has a datastore and trainers (the panel shows the loop only then)."""
        from ..backends import supports_active_learning

        return self.client is not None and supports_active_learning(self.client)

    def prepareNextSample(self, strategy: Optional[str] = None) -> scene_loop.NextSampleRequest:
        """GUI thread; then ``request.run(progress, cancel)`` on a worker, ``applyNextSample(request)`` back here."""
        return scene_loop.NextSampleRequest(self._requireLoopClient(), self.client.base_url, strategy)

    def applyNextSample(self, request: scene_loop.NextSampleRequest):
        """The new volume node (attribute DATASTORE_ID_ATTRIBUTE = its datastore id), None when all are labeled."""
        return request.apply(self.scene)

    def nextSample(self, strategy: Optional[str] = None):
        """Blocking: fetch the strategy's next image into a new volume node (None when every image is labeled)."""
        return self.applyNextSample(run_detached(self.prepareNextSample(strategy).run))

    def datastoreId(self, volumeNode) -> Optional[str]:
        """The datastore id of a volume fetched from the connected server, else None."""
        return scene_loop.datastore_id(volumeNode, self._requireLoopClient().base_url)

    def prepareSubmitLabel(self, volumeNode, segmentationNode, modelName: Optional[str] = None, tag: str = "final",
                           uploadConsent: bool = False) -> scene_loop.SubmitLabelRequest:
        """GUI thread: the segments named like the server's labels, each in its name's value, on the volume's grid.

        A volume not from this server's datastore needs ``uploadConsent=True`` (ask the user: the volume is
        stored on the server permanently, under a generated id). ``modelName`` picks whose label names count
        (default: the first trainer's). ``request.skipped`` lists segments no label is named like.
        """
        client = self._requireLoopClient()
        scene_export.check_scalar_volume(volumeNode)
        if segmentationNode is None or not segmentationNode.IsA("vtkMRMLSegmentationNode"):
            raise InputError("Choose the segmentation whose segments are the label to submit.")
        values = run_detached(lambda: client.label_values(modelName))
        return scene_loop.prepare_submit(client, client.base_url, volumeNode, segmentationNode, values, tag, uploadConsent)

    def applySubmitLabel(self, request: scene_loop.SubmitLabelRequest) -> str:
        return request.apply(self.scene)

    def submitLabel(self, volumeNode, segmentationNode, modelName: Optional[str] = None, tag: str = "final",
                    uploadConsent: bool = False) -> str:
        """Blocking: submit the segmentation as the volume's label; returns the datastore id."""
        request = self.prepareSubmitLabel(volumeNode, segmentationNode, modelName, tag, uploadConsent)
        return self.applySubmitLabel(run_detached(request.run))

    def datastoreCounts(self) -> Dict[str, Any]:
        """{"total", "completed", "label_tags"} of the server's datastore (network: call off the GUI thread)."""
        return run_detached(self._requireLoopClient().datastore_counts)

    def strategies(self) -> List[str]:
        """The server's active-learning strategies (network: call off the GUI thread)."""
        return run_detached(self._requireLoopClient().strategies)

    def trainers(self) -> Dict[str, Dict[str, Any]]:
        return run_detached(self._requireLoopClient().trainers)

    def startTraining(self, modelName: str, maxEpochs: Optional[int] = None, **params: Any) -> Dict[str, Any]:
        """Start training on the server (it runs there in the background); network: call off the GUI thread."""
        client = self._requireLoopClient()
        return run_detached(lambda: client.start_training(modelName, maxEpochs, **params))

    def trainingStatus(self):
        """The latest run: .status (SUBMITTED/RUNNING/DONE/ERROR/STOPPED, NONE), .epoch, .total_epochs,
        .best_metric, .details (last log lines), .summary(); network: poll it off the GUI thread."""
        return run_detached(self._requireLoopClient().training_status)

    def stopTraining(self) -> bool:
        return run_detached(self._requireLoopClient().stop_training)

    def _requireLoopClient(self):
        client = self._requireClient()
        if not self.supportsActiveLearning:
            raise InputError("The active-learning loop needs a MONAI Label server; the connected server is an AIAA server.")
        return client

    # --- saved points -------------------------------------------------------------------------------
    @staticmethod
    def pointsOfSegment(segmentationNode, segmentId: str) -> Dict[str, Any]:
        """The model and points ClaraAWS stored on a segment (survives saving and reloading the scene)."""
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        stored: Dict[str, Any] = {}
        if segment is None:
            return stored
        for name in (TAG_MODEL, TAG_EXTREME_POINTS, TAG_FOREGROUND_POINTS, TAG_BACKGROUND_POINTS):
            value = vtk.reference("")
            if segment.GetTag(name, value):
                stored[name] = str(value) if name == TAG_MODEL else json.loads(str(value))
        return stored

    # --- checks -------------------------------------------------------------------------------------
    def _requireClient(self):
        if self.client is None:
            raise InputError("Not connected to a server; connect to an AIAA or MONAI Label server first.")
        return self.client

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
            raise surface_source_refusal(segmentationNode)  # asked before the upload, not after the wait

    def _liveNode(self, node_id: str, what: str):
        node = self.scene.GetNodeByID(node_id)
        if node is None:
            raise InputError(f"The {what} was removed from the scene while the server was working; nothing was changed.")
        return node

    # --- scene events and cleanup ----------------------------------------------------------------------
    def _observeScene(self) -> None:
        this = weakref.ref(self)  # the scene must not keep the logic alive

        @vtk.calldata_type(vtk.VTK_OBJECT)
        def onNodeRemoved(caller, event, node):
            logic = this()
            if logic is not None and node is not None:
                logic._forgetNode(node)

        def onSceneClose(caller, event):
            logic = this()
            if logic is not None:
                logic._sessions.close_all()
                logic._undo.clear()
            if caller is None:  # the scene is being destroyed: it drops its observers right after this event
                _scene_callbacks.pop(key, None)

        scene = self.scene
        callbacks = (onNodeRemoved, onSceneClose)
        key = id(callbacks)
        _scene_callbacks[key] = callbacks
        self._observations = [
            scene.AddObserver(scene.NodeRemovedEvent, onNodeRemoved),
            scene.AddObserver(scene.StartCloseEvent, onSceneClose),
        ]
        # A logic dropped without cleanup() must not leave Python callbacks on a scene that outlives it.
        self._forgetObservers = weakref.finalize(self, _remove_observers, weakref.ref(scene), list(self._observations), key)
        self._forgetObservers.atexit = False

    def _forgetNode(self, node) -> None:
        node_id = node.GetID()
        if node_id in self._sessions:
            self._sessions.close(node_id)
        if node.IsA("vtkMRMLSegmentationNode"):
            self._undo.forget(node_id)

    def cleanup(self) -> None:
        """Close sessions and the client, drop undo history and stop observing the scene."""
        self._forgetObservers()
        self._observations = []
        self._sessions.close_all()
        self._sessionCloser.wait(timeout=SESSION_CLOSE_WAIT_SECONDS)
        self._undo.clear()
        if self.client is not None:
            self.client.close()
        self.client = None
