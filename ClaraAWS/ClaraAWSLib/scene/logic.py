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

import time
import weakref
from typing import Any, Callable, Dict, List, Optional

from ..core.errors import InputError
from .logic_apply import ApplyStep
from .logic_lifecycle import SceneLifecycle
from .logic_loop import ActiveLearningCalls
from .logic_prepare import PrepareStep
from .requests import RequestSequencer, SegmentationRequest, run_detached
from .segment_tags import TAG_BACKGROUND_POINTS, TAG_EXTREME_POINTS, TAG_FOREGROUND_POINTS, TAG_MODEL, points_of_segment
from .sessions import BackgroundCloser, SessionCache
from .setup import default_scene, ensure_scene_services
from .undo import UndoHistory

__all__ = ["ClaraAWSLogic", "TAG_BACKGROUND_POINTS", "TAG_EXTREME_POINTS", "TAG_FOREGROUND_POINTS", "TAG_MODEL"]


class ClaraAWSLogic(PrepareStep, ApplyStep, ActiveLearningCalls, SceneLifecycle):
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

    # --- saved points -------------------------------------------------------------------------------
    @staticmethod
    def pointsOfSegment(segmentationNode, segmentId: str) -> Dict[str, Any]:
        """The model and points ClaraAWS stored on a segment (survives saving and reloading the scene)."""
        return points_of_segment(segmentationNode, segmentId)

    # --- checks -------------------------------------------------------------------------------------
    def _requireClient(self):
        if self.client is None:
            raise InputError("Not connected to a server; connect to an AIAA or MONAI Label server first.")
        return self.client
