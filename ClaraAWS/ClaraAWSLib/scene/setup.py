"""Make a MRML scene ready for segmentation work, inside Slicer or under the slicer-core wheel.

Inside a running Slicer the application has already registered the segmentation node classes and
converter rules. Under slicer-core in plain CPython nothing has, so the first ClaraAWS logic bound to
a scene creates the application, colour and segmentations logics once and keeps them alive for as
long as the scene exists (one set per scene, shared by every caller).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Optional

import slicer


@dataclass
class SceneServices:
    """The logics a scene needs for segmentation work; all ``None`` inside a running Slicer."""

    application_logic: Optional[Any] = None
    color_logic: Optional[Any] = None
    segmentations_logic: Optional[Any] = None


_services_by_scene: "weakref.WeakKeyDictionary[Any, SceneServices]" = weakref.WeakKeyDictionary()


def running_in_slicer_application() -> bool:
    """True inside the Slicer application, False under the bare slicer-core wheel."""
    return hasattr(slicer, "app") and hasattr(slicer, "modules")


def default_scene():
    """The application's scene inside Slicer (or the scene a test bound to ``slicer.mrmlScene``)."""
    scene = getattr(slicer, "mrmlScene", None)
    if scene is None:
        raise RuntimeError("No MRML scene given and slicer.mrmlScene is not set; pass a vtkMRMLScene.")
    return scene


def ensure_scene_services(scene) -> SceneServices:
    """Register what segmentation work needs on ``scene`` (once) and return the logics used."""
    if running_in_slicer_application() and scene is getattr(slicer, "mrmlScene", None):
        return SceneServices()
    services = _services_by_scene.get(scene)
    if services is not None:
        return services
    application_logic = slicer.vtkSlicerApplicationLogic()
    application_logic.SetMRMLScene(scene)
    color_logic = application_logic.GetColorLogic()
    color_logic.SetMRMLScene(scene)
    if scene.GetFirstNodeByClass("vtkMRMLColorTableNode") is None:
        color_logic.AddDefaultColorNodes()
    # Without a registered Colors logic the volumes logic complains on every labelmap it touches.
    application_logic.SetModuleLogic("Colors", color_logic)
    segmentations_logic = slicer.vtkSlicerSegmentationsModuleLogic()
    # Binding the segmentations logic registers vtkMRMLSegmentEditorNode and the converter rules.
    segmentations_logic.SetMRMLScene(scene)
    segmentations_logic.SetMRMLApplicationLogic(application_logic)
    services = SceneServices(application_logic, color_logic, segmentations_logic)
    _services_by_scene[scene] = services
    return services
