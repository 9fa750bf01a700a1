"""The module's self-test, run by Slicer's CTest (``--testing``) against a reference server it starts itself."""

import time

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from ..backends import ANNOTATE, AUTO_SEGMENT
from . import model_choices


class ClaraAWSTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer against the reference server on 127.0.0.1 and a synthetic CT phantom.

    The module file imports this class under its own name: ``slicer.testing.runUnitTest`` loads every
    TestCase class of the module's namespace (``loadTestsFromName``), so it must be the only one there.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    @staticmethod
    def _startServerAndPhantom():
        from ..server import ReferenceServer
        from ..synthetic.phantom import make_phantom

        # The reference model finds all four organs from 3.6 mm on (at 4 mm it misses the left kidney).
        phantom = make_phantom(size=(80, 80, 32), spacing=(3.6, 3.6, 7.5))
        volume = slicer.util.addVolumeFromArray(phantom.ct.array, phantom.ct.grid.ijk_to_ras(), "ClaraAWS phantom")
        return phantom, volume, ReferenceServer(host="127.0.0.1", port=0).start()

    @staticmethod
    def _modelOfType(models, types) -> dict:
        return next(model for model in models if model_choices.model_type(model) in types)

    @staticmethod
    def _segmentVoxels(segmentation, segmentId, volume) -> int:
        array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
        return 0 if array is None else int(array.sum())

    def test_AutoSegmentAnnotateUndo(self):
        from .. import ClaraAWSLogic

        phantom, volume, server = self._startServerAndPhantom()
        logic = ClaraAWSLogic(slicer.mrmlScene)
        try:
            models = logic.connect(server.url)
            autoModel = self._modelOfType(models, logic.client.model_types_for(AUTO_SEGMENT))
            segmentation = logic.autoSegment(volume, autoModel["name"])
            segments = segmentation.GetSegmentation()
            ids = [segments.GetNthSegmentID(index) for index in range(segments.GetNumberOfSegments())]
            self.assertEqual(sorted(segments.GetSegment(i).GetName() for i in ids), sorted(autoModel["labels"]))
            for segmentId in ids:
                self.assertGreater(self._segmentVoxels(segmentation, segmentId, volume), 0, segmentId)
            self.delayDisplay(f"Auto-segmented with {autoModel['name']}: {len(ids)} non-empty segments")

            # The six extreme voxels of the phantom's spleen along i, j and k.
            k, j, i = (phantom.truth.array == phantom.label_value("spleen")).nonzero()
            ijk = list(zip(i, j, k))
            extremes = [pick(ijk, key=lambda voxel: voxel[axis]) for axis in range(3) for pick in (min, max)]
            ijkToRas = phantom.ct.grid.ijk_to_ras()
            pointsRAS = [list((ijkToRas @ [*voxel, 1.0])[:3]) for voxel in extremes]
            segmentId = segments.AddEmptySegment("", "annotated spleen")
            annotationModel = self._modelOfType(models, logic.client.model_types_for(ANNOTATE))["name"]
            logic.annotate(volume, segmentation, segmentId, annotationModel, pointsRAS)
            self.assertGreater(self._segmentVoxels(segmentation, segmentId, volume), 0)
            self.assertTrue(logic.undo(segmentation))
            self.assertEqual(self._segmentVoxels(segmentation, segmentId, volume), 0)
            self.delayDisplay("Annotate and undo passed")
        finally:
            logic.cleanup()
            server.stop()

    def test_WidgetAutoSegment(self):
        """Drive the panel: connect and auto-segment through the background jobs and the poll timer."""
        phantom, volume, server = self._startServerAndPhantom()
        slicer.util.selectModule("ClaraAWS")
        widget = slicer.modules.claraaws.widgetRepresentation().self()
        try:
            widget.ui.serverUrlComboBox.setEditText(server.url)
            widget.onConnectButton()
            self._waitFor(lambda: widget._connectedUrl == server.url, "connect")
            widget._parameterNode.inputVolume = volume
            widget._parameterNode.outputSegmentation = None
            self.assertTrue(widget.ui.applyButton.enabled)
            widget.ui.applyButton.click()
            self._waitFor(lambda: not widget.autoState.busy, "auto-segment")
            self.assertEqual(widget.autoState.state.value, "done")
            segmentation = widget._parameterNode.outputSegmentation
            self.assertGreater(segmentation.GetSegmentation().GetNumberOfSegments(), 0)
        finally:
            server.stop()

    @staticmethod
    def _waitFor(condition, what: str, timeoutSeconds: float = 120.0):
        deadline = time.monotonic() + timeoutSeconds
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not finish within {timeoutSeconds} s")
            slicer.app.processEvents()
            time.sleep(0.02)
