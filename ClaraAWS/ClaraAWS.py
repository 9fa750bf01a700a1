"""ClaraAWS: segment volumes with NVIDIA Clara AIAA servers (local or on AWS) from a Slicer panel.

The shell Slicer needs: the module class, the parameter node and the entry points Slicer looks up by
name (``ClaraAWSWidget``, ``ClaraAWSTest``). The panel itself is ``ClaraAWSLib.panel``; all protocol,
geometry and scene work is ``ClaraAWSLib``, which runs outside Slicer too.
"""

import slicer
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
)

from ClaraAWSLib.panel import registration
from ClaraAWSLib.panel.self_test import ClaraAWSTest  # noqa: F401 - CTest and the Self Tests module run it
from ClaraAWSLib.panel.widget import ClaraAWSPanel


class ClaraAWS(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("ClaraAWS")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Markups", "Segmentations"]
        self.parent.contributors = ["ClaraAWS developers"]
        self.parent.helpText = _(
            "Segment CT volumes with an NVIDIA Clara AI-Assisted Annotation (AIAA) server: one you run yourself, "
            "or one deployed in your AWS account by the Clara Quick Start (<b>Discover on AWS</b> finds it). "
            "Pick a model and click <b>Auto-segment</b>, or correct a segment with extreme points or clicks. "
            "Only the voxels and the geometry of the volume are sent; no names or patient information. "
            'See <a href="https://github.com/claraaws/SlicerClaraAWS">the project page</a>.')
        self.parent.acknowledgementText = _(
            "ClaraAWS speaks the Clara AIAA v1 protocol published by NVIDIA. It is not affiliated with NVIDIA or "
            "Amazon Web Services. The module layout follows the 3D Slicer scripted-module template.")
        # Slicer emits startupCompleted() once, after every module is loaded (registration.py says more).
        slicer.app.connect("startupCompleted()", registration.register_segment_editor_effect)
        slicer.app.connect("startupCompleted()", registration.register_settings_page)


@parameterNodeWrapper
class ClaraAWSParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelName: str = ""
    annotationModel: str = ""
    deepgrowModel: str = ""
    extremePoints: vtkMRMLMarkupsFiducialNode
    foregroundPoints: vtkMRMLMarkupsFiducialNode
    backgroundPoints: vtkMRMLMarkupsFiducialNode


class ClaraAWSParameters(ScriptedLoadableModuleLogic):
    """Finds the module's parameter node; the scene work itself is ClaraAWSLib.ClaraAWSLogic."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.moduleName = "ClaraAWS"

    def getParameterNode(self) -> ClaraAWSParameterNode:
        return ClaraAWSParameterNode(super().getParameterNode())


class ClaraAWSWidget(ClaraAWSPanel):
    """The panel (ClaraAWSLib.panel.widget) bound to this module's parameter node."""

    def newParameterNode(self) -> ClaraAWSParameterNode:
        return ClaraAWSParameters().getParameterNode()
