"""The Segment Editor side of the stand-in: the scripted-effect adaptor, the effect factory and an editor widget.

Sources (Slicer/Slicer):
- qSlicerSegmentEditorScriptedEffect::setPythonSource, Modules/Loadable/Segmentations/EditorEffects/
  qSlicerSegmentEditorScriptedEffect.cxx v5.8.1:129-210, v5.10.0 and main:132-220: the Python module name
  is the file's parent folder, the class name the file's base name with "Effect" appended unless it ends
  so; the class is taken from the module of that name when it has one, otherwise the file is loaded as
  that module (v5.8.1: PyImport_AddModule then ``imp.load_source`` into that module object,
  Base/QTCore/qSlicerScriptedUtils.cxx v5.8.1:37-68; v5.10.0 and main: a new module from
  ``importlib.util.spec_from_file_location`` put in ``sys.modules[name]``, qSlicerScriptedUtils.cxx
  main:37-62); a missing class raises RuntimeError "class X was not found in PATH"; ``slicer.<module>``
  is set to the new effect object.
- qSlicerSegmentEditorEffectFactory::registerEffect (qSlicerSegmentEditorEffectFactory.cxx v5.8.1:89-116)
  refuses an empty name and a name already registered; copyEffects (119-150) gives each editor a clone.
- AbstractScriptedSegmentEditorEffect.register (SegmentEditorEffects/AbstractScriptedSegmentEditorEffect.py
  v5.8.1) calls the factory singleton's registerEffect with the adaptor.
- qSlicerSegmentEditorAbstractEffect::saveStateForUndo (qSlicerSegmentEditorAbstractEffect.cxx v5.8.1:1384-1388)
  emits a signal connected to the HOSTING editor widget's saveStateForUndo (setCallbackSlots 226-233).
- qMRMLSegmentEditorWidget (Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.cxx v5.8.1):
  an effect button is enabled when ``!requireSegments || (segments exist && (a segment is selected ||
  !perSegment))`` (1664); activating an effect deactivates the previous one; Z / Ctrl+Z and Y / Ctrl+Y call
  the widget's undo/redo (installKeyboardShortcuts 3162-3215), on the widget that installed them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import types
from typing import Any, List, Optional

import slicer

from . import qt_double as qt


def load_effect_class(path: str, loader: str):
    """The class setPythonSource would instantiate for ``path`` (and the module it lives in), or raise as Slicer does."""
    if not (path.endswith(".py") or path.endswith(".pyc")):
        raise RuntimeError(f"setPythonSource refuses {path}: not a .py file")
    module_name = os.path.basename(os.path.dirname(path))
    class_name = os.path.splitext(os.path.basename(path))[0]
    if not class_name.endswith("Effect"):
        class_name += "Effect"
    if loader == "imp":
        module = sys.modules.setdefault(module_name, types.ModuleType(module_name))  # PyImport_AddModule
    else:
        module = sys.modules.get(module_name)
    found = getattr(module, class_name, None) if module is not None else None
    if found is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if loader == "imp":
            # imp.load_source(name, path) with the name already in sys.modules: the file runs in that
            # module object, whose spec, file and loader attributes it replaces (CPython Lib/imp.py).
            module.__spec__, module.__loader__, module.__file__ = spec, spec.loader, path
            module.__package__ = spec.parent
            spec.loader.exec_module(module)
        else:
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
            module = sys.modules[module_name]
        found = getattr(module, class_name, None)
    if found is None or not isinstance(found, type):
        raise RuntimeError("qSlicerSegmentEditorScriptedEffect::setPythonSource - Failed to load segment editor "
                           f"scripted effect: class {class_name} was not found in {path}")
    return module_name, found


class qSlicerSegmentEditorScriptedEffect(qt.QObject):  # noqa: N801
    PROPERTIES = {"name": ("", None), "perSegment": (False, None), "requireSegments": (True, None),
                  "showEffectCursorInSliceView": (True, None), "showEffectCursorInThreeDView": (False, None)}

    #: Set by the stand-in: "imp" (Slicer 5.8) or "importlib" (5.10 and newer).
    loader = "importlib"

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        object.__setattr__(self, "_python_self", None)
        object.__setattr__(self, "_source", "")
        object.__setattr__(self, "_options", [])
        object.__setattr__(self, "_options_frame", qt.QFrame())  # the editor's options frame (one parent)
        object.__setattr__(self, "editor", None)  # the hosting qMRMLSegmentEditorWidget

    def setPythonSource(self, path: str) -> bool:  # noqa: N802
        """False (the error is logged, as PythonQt::handleError does) when the class cannot be found or made."""
        try:
            module_name, effect_class = load_effect_class(path, type(self).loader)
        except Exception:  # noqa: BLE001 - Slicer reports and returns false; self() stays None
            logging.exception("qSlicerSegmentEditorScriptedEffect::setPythonSource failed")
            return False
        python_self = effect_class(self)
        object.__setattr__(self, "_python_self", python_self)
        object.__setattr__(self, "_source", path)
        setattr(slicer, module_name, python_self)
        return True

    def pythonSource(self) -> str:  # noqa: N802
        return self._source

    def self(self):
        return self._python_self

    def addOptionsWidget(self, widget) -> None:  # noqa: N802
        """Into the options frame's layout: the widgets share one parent (so radio buttons are exclusive)."""
        widget.setParent(self._options_frame)
        self._options.append(widget)

    def addLabeledOptionsWidget(self, label: str, widget) -> None:  # noqa: N802
        self.addOptionsWidget(qt.QLabel(label))
        self.addOptionsWidget(widget)

    def optionsWidgets(self) -> List[Any]:  # noqa: N802
        return list(self._options)

    def parameterSetNode(self):  # noqa: N802
        return self.editor.mrmlSegmentEditorNode() if self.editor is not None else None

    def saveStateForUndo(self) -> None:  # noqa: N802
        if self.editor is not None:
            self.editor.saveStateForUndo()

    def updateGUIFromMRML(self) -> None:  # noqa: N802
        self._python_self.updateGUIFromMRML()

    def clone(self):
        return self._python_self.clone()


class qSlicerSegmentEditorEffectFactory(qt.QObject):  # noqa: N801
    SIGNALS = ("effectRegistered",)
    _instance: Optional["qSlicerSegmentEditorEffectFactory"] = None

    def __init__(self) -> None:
        super().__init__(None)
        object.__setattr__(self, "registered", [])

    @classmethod
    def instance(cls) -> "qSlicerSegmentEditorEffectFactory":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def registerEffect(self, effect) -> bool:  # noqa: N802
        if effect is None or not effect.name:
            return False
        if any(known.name == effect.name for known in self.registered):
            return False
        self.registered.append(effect)
        self.emit("effectRegistered", effect.name)
        return True

    def registeredEffects(self) -> List[Any]:  # noqa: N802
        return list(self.registered)


class AbstractScriptedSegmentEditorEffect:
    def __init__(self, scriptedEffect) -> None:  # noqa: N803
        self.scriptedEffect = scriptedEffect

    def register(self) -> None:
        slicer.qSlicerSegmentEditorEffectFactory.instance().registerEffect(self.scriptedEffect)


def make_segment_editor_effects_module() -> types.ModuleType:
    module = types.ModuleType("SegmentEditorEffects")
    module.AbstractScriptedSegmentEditorEffect = AbstractScriptedSegmentEditorEffect
    return module


def make_effects_pythonqt_module() -> types.ModuleType:
    module = types.ModuleType("qSlicerSegmentationsEditorEffectsPythonQt")
    module.qSlicerSegmentEditorScriptedEffect = qSlicerSegmentEditorScriptedEffect
    return module


class qMRMLSegmentEditorWidget(qt.QWidget):  # noqa: N801
    """An editor with its own effects (clones of the registered ones) and undo history (vtkSegmentationHistory)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        object.__setattr__(self, "_node", None)
        object.__setattr__(self, "_effects", {})
        object.__setattr__(self, "_active", None)
        object.__setattr__(self, "_history", slicer.vtkSegmentationHistory())
        object.__setattr__(self, "_shortcuts_installed", False)

    # --- parameter set ----------------------------------------------------------------------------------
    def setMRMLSegmentEditorNode(self, node) -> None:  # noqa: N802
        object.__setattr__(self, "_node", node)

    def mrmlSegmentEditorNode(self):  # noqa: N802
        return self._node

    def setSegmentationNode(self, node) -> None:  # noqa: N802
        self._node.SetAndObserveSegmentationNode(node)
        self._history.SetSegmentation(node.GetSegmentation() if node is not None else None)

    def segmentationNode(self):  # noqa: N802
        return self._node.GetSegmentationNode() if self._node is not None else None

    def setSourceVolumeNode(self, node) -> None:  # noqa: N802
        self._node.SetAndObserveSourceVolumeNode(node)

    def sourceVolumeNode(self):  # noqa: N802
        return self._node.GetSourceVolumeNode()

    def setCurrentSegmentID(self, segment_id: str) -> None:  # noqa: N802
        self._node.SetSelectedSegmentID(segment_id)

    def currentSegmentID(self) -> str:  # noqa: N802
        return self._node.GetSelectedSegmentID() or ""

    # --- effects ------------------------------------------------------------------------------------------
    def _ensure_effects(self) -> None:
        for registered in slicer.qSlicerSegmentEditorEffectFactory.instance().registeredEffects():
            if registered.name not in self._effects:
                clone = registered.clone()
                object.__setattr__(clone, "editor", self)
                clone.self().setupOptionsFrame()
                self._effects[registered.name] = clone

    def effectByName(self, name: str):  # noqa: N802
        self._ensure_effects()
        return self._effects.get(name)

    def effect_button_enabled(self, name: str) -> bool:
        """qMRMLSegmentEditorWidget.cxx v5.8.1:1643-1664."""
        effect = self.effectByName(name)
        if self.sourceVolumeNode() is None:
            return False
        segmentation = self.segmentationNode()
        available = segmentation is not None and segmentation.GetSegmentation().GetNumberOfSegments() > 0
        return not effect.requireSegments or (available and (bool(self.currentSegmentID()) or not effect.perSegment))

    def setActiveEffectByName(self, name: str) -> None:  # noqa: N802
        effect = self.effectByName(name) if name else None
        if effect is not None and not self.effect_button_enabled(name):
            raise AssertionError(f"the {name} effect's button is disabled: a user cannot select it now")
        if self._active is not None:
            self._active.self().deactivate()
        object.__setattr__(self, "_active", effect)
        self._node.SetActiveEffectName(name or "")
        if effect is not None:
            # qSlicerSegmentEditorAbstractEffect::activate (v5.8.1:195-205): the Python updateGUIFromMRML runs
            # before the Python activate.
            effect.self().updateGUIFromMRML()
            effect.self().activate()

    def activeEffect(self):  # noqa: N802
        return self._active

    # --- undo ---------------------------------------------------------------------------------------------
    def saveStateForUndo(self) -> None:  # noqa: N802
        if self._history.GetMaximumNumberOfStates() > 0:
            self._history.SaveState()

    def undo(self) -> None:
        self._history.RestorePreviousState()

    def redo(self) -> None:
        self._history.RestoreNextState()

    def installKeyboardShortcuts(self, parent=None) -> None:  # noqa: N802
        object.__setattr__(self, "_shortcuts_installed", True)

    def uninstallKeyboardShortcuts(self) -> None:  # noqa: N802
        object.__setattr__(self, "_shortcuts_installed", False)

    def press_key(self, key: str) -> None:
        """A key press in the window: only an editor that installed its shortcuts reacts."""
        if not self._shortcuts_installed:
            return
        if key in ("Z", "Ctrl+Z"):
            self.undo()
        elif key in ("Y", "Ctrl+Y"):
            self.redo()


class SegmentEditorModuleWidget:
    """``slicer.modules.segmenteditor.widgetRepresentation().self()`` (Modules/Scripted/SegmentEditor/
    SegmentEditor.py v5.8.1): ``.editor``; its Z/Y shortcuts exist between enter() (121) and exit() (139)."""

    def __init__(self, editor_node) -> None:
        self.editor = qMRMLSegmentEditorWidget()
        self.editor.setMRMLSegmentEditorNode(editor_node)

    def enter(self) -> None:
        self.editor.installKeyboardShortcuts()

    def exit(self) -> None:
        self.editor.uninstallKeyboardShortcuts()
