"""MONAI Label's active-learning loop as the logic offers it: next sample, submit label, training.

Mixed into ``ClaraAWSLogic``; network halves run on a thread of their own (``run_detached``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from . import export as scene_export, loop as scene_loop
from ..core.errors import InputError
from .requests import run_detached


class ActiveLearningCalls:
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
