"""Slicer's own Python modules that slicer-core lacks: i18n, ScriptedLoadableModule, parameterNodeWrapper,
testing and (Slicer 5.12 and newer) packaging, each reduced to the behaviour ClaraAWS meets.

Sources (Slicer/Slicer; v5.8.1 unless said):
- Base/Python/slicer/ScriptedLoadableModule.py: module 17-51 (sets parent fields, icon, selfTests),
  runTest 72-85 (class ``<ModuleName>Test`` of the module), widget 88-110 (moduleName from the class name,
  parent and layout, moduleAboutToBeUnloaded -> cleanup 126-140), resourcePath 112-115, onReload 236-248
  (slicer.util.reloadScriptedModule), logic.getParameterNode 310-330 (singleton node; restores the
  ModuleName attribute that a scene close removes), createParameterNode 345-365, test runTest 497-508.
- Base/Python/slicer/parameterNodeWrapper/wrapper.py: __init__ writes defaults of parameters the node
  lacks (130-143); connectGui 233-245 returns None at v5.8.1 (main returns the tag: wrapper.py 200-215
  at 583e9b37); connectParametersToGui 190-213 writes each widget and observes ModifiedEvent; a GUI change
  sets the parameter inside NodeModify 166-172; disconnectGui 248-253; StartModify/EndModify/AddObserver/
  Modified are forwarded to the node 340-345.
- Base/Python/slicer/testing.py runUnitTest 14-28: ``unittest.TestLoader().loadTestsFromName(testname)``,
  so every TestCase class in the module file's namespace runs, imported ones included.
- Base/Python/slicer/packaging.py exists from v5.12.0 only (``git ls-tree v5.10.0`` has no such file).
"""

from __future__ import annotations

import importlib
import os
import types
import typing
import unittest
from typing import Dict, Optional

import slicer
import vtk

from . import qt_double as qt

# ------------------------------------------------------------------------------------------------ i18n


def make_i18n() -> types.ModuleType:
    module = types.ModuleType("slicer.i18n")
    module.tr = lambda text: text
    module.translate = lambda context, text: text
    return module


# ------------------------------------------------------------------------------ ScriptedLoadableModule


class ScriptedLoadableModule:
    def __init__(self, parent) -> None:
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = []
        parent.helpText = ""
        parent.acknowledgementText = ""
        if not hasattr(slicer, "selfTests"):
            slicer.selfTests = {}
        slicer.selfTests[self.moduleName] = self.runTest

    def resourcePath(self, filename: str) -> str:  # noqa: N802
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

    def getDefaultModuleDocumentationLink(self, docPage=None) -> str:  # noqa: N802
        return ""

    def runTest(self, msec: int = 100, **kwargs) -> None:  # noqa: N802
        module = importlib.import_module(self.__module__)
        test_class = getattr(module, self.moduleName + "Test", None)
        if test_class is None:
            raise AssertionError(f"Test case class not found: {self.__module__}.{self.moduleName}Test ")
        test_case = test_class()
        test_case.messageDelay = msec
        test_case.runTest(**kwargs)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None) -> None:
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Widget"):
            self.moduleName = self.moduleName[:-6]
        self.developerMode = False
        if not parent:
            from .mrml_widgets import qMRMLWidget

            self.parent = qMRMLWidget()
            self.parent.setLayout(qt.QVBoxLayout())
            self.parent.setMRMLScene(slicer.mrmlScene)
        else:
            self.parent = parent
        self.layout = self.parent.layout()
        if not parent:
            self.setup()
        slicer.app.moduleManager().connect("moduleAboutToBeUnloaded(QString)", self._onModuleAboutToBeUnloaded)

    def resourcePath(self, filename: str) -> str:  # noqa: N802
        return os.path.join(os.path.dirname(slicer.util.modulePath(self.moduleName)), "Resources", filename)

    def cleanup(self) -> None:
        pass

    def _onModuleAboutToBeUnloaded(self, moduleName: str) -> None:  # noqa: N802, N803
        if moduleName == self.moduleName:
            self.cleanup()
            slicer.app.moduleManager().disconnect("moduleAboutToBeUnloaded(QString)", self._onModuleAboutToBeUnloaded)

    def setup(self) -> None:
        pass

    def onReload(self) -> None:  # noqa: N802
        slicer.util.reloadScriptedModule(self.moduleName)


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None) -> None:
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[:-5]
        self.isSingletonParameterNode = True

    def getParameterNode(self):  # noqa: N802
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node:
            if node.GetAttribute("ModuleName") != self.moduleName:
                node.SetAttribute("ModuleName", self.moduleName)
            return node
        return slicer.mrmlScene.AddNode(self.createParameterNode())

    def createParameterNode(self):  # noqa: N802
        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.moduleTestNames = [name for name in dir(self) if name.startswith("test") and callable(getattr(self, name))]
        self.messageDelay = 100

    def delayDisplay(self, message, requestedDelay=None, msec=None) -> None:  # noqa: N802
        slicer.app.processEvents()

    def runTest(self) -> None:  # noqa: N802
        for name in self.moduleTestNames:
            self.setUp()
            getattr(self, name)()
            self.tearDown()


def make_scripted_loadable_module() -> types.ModuleType:
    module = types.ModuleType("slicer.ScriptedLoadableModule")
    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(module, cls.__name__, cls)
    module.__all__ = [cls.__name__ for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget,
                                               ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest)]
    return module


# --------------------------------------------------------------------------------- parameterNodeWrapper

PARAMETER_PROPERTY = "SlicerParameterName"


def _is_node_type(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, vtk.vtkObject)


class _Connector:
    """One widget bound to one parameter (guiConnectors.py: read, write, onChanged)."""

    def __init__(self, widget) -> None:
        self.widget, self._callback = widget, None
        from .mrml_widgets import qMRMLNodeComboBox

        if isinstance(widget, qMRMLNodeComboBox):
            self._read, self._write, signal = widget.currentNode, widget.setCurrentNode, "currentNodeChanged(vtkMRMLNode*)"
        elif isinstance(widget, qt.QComboBox):
            self._read = lambda: widget.currentText
            self._write, signal = widget.setCurrentText, "currentIndexChanged(int)"
        elif isinstance(widget, qt.QAbstractButton):
            self._read = lambda: bool(widget.checked)
            self._write, signal = (lambda value: setattr(widget, "checked", bool(value))), "toggled(bool)"
        elif isinstance(widget, qt.QLineEdit):
            self._read = lambda: widget.text
            self._write, signal = (lambda value: setattr(widget, "text", value)), "textChanged(QString)"
        else:
            raise RuntimeError(f"parameterNodeWrapper has no GUI connector for {widget.className()}")
        widget.connect(signal, self._changed)

    def _changed(self, *args) -> None:
        if self._callback is not None:
            self._callback()

    def read(self):
        return self._read()

    def write(self, value) -> None:
        blocked = self.widget.blockSignals(True)  # guiConnectors write with signals blocked
        try:
            self._write(value)
        finally:
            self.widget.blockSignals(blocked)

    def onChanged(self, callback) -> None:  # noqa: N802
        self._callback = callback


def parameter_node_wrapper_module(connect_gui_returns_tag: bool) -> types.ModuleType:
    def parameterNodeWrapper(classtype):  # noqa: N802 - Slicer's name
        hints = typing.get_type_hints(classtype)
        defaults = {name: getattr(classtype, name, None) for name in hints}

        def __init__(self, parameterNode):  # noqa: N807, N803
            self.parameterNode = parameterNode
            self._parameterGUIs: Dict[int, Dict[str, _Connector]] = {}
            self._nextParameterGUIsTag = 0
            self._updatingGUIFromParameterNode = False
            for name in hints:
                if not self._is_in(name):
                    self.setValue(name, defaults[name])

        def _is_in(self, name):
            if _is_node_type(hints[name]):
                return True  # a node parameter's default is no node: nothing to write
            return name in (self.parameterNode.GetParameterNames() or ())

        def getValue(self, name):  # noqa: N802
            if _is_node_type(hints[name]):
                return self.parameterNode.GetNodeReference(name)
            return self.parameterNode.GetParameter(name)

        def setValue(self, name, value):  # noqa: N802
            if _is_node_type(hints[name]):
                self.parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)
            else:
                self.parameterNode.SetParameter(name, "" if value is None else str(value))

        def connectParametersToGui(self, mapping):  # noqa: N802
            connectors = {name: _Connector(widget) for name, widget in mapping.items()}
            tag = self._nextParameterGUIsTag
            self._nextParameterGUIsTag += 1
            self._parameterGUIs[tag] = connectors

            def gui_to_parameter(name, connector):
                def callback():
                    with slicer.util.NodeModify(self):
                        if not self._updatingGUIFromParameterNode:
                            self.setValue(name, connector.read())
                return callback

            for name, connector in connectors.items():
                connector.write(self.getValue(name))
                connector.onChanged(gui_to_parameter(name, connector))

            def parameter_to_gui(caller, event):
                if self._updatingGUIFromParameterNode:
                    return
                self._updatingGUIFromParameterNode = True
                try:
                    for mapping_ in list(self._parameterGUIs.values()):
                        for name_, connector_ in mapping_.items():
                            connector_.write(self.getValue(name_))
                finally:
                    self._updatingGUIFromParameterNode = False

            self.AddObserver(vtk.vtkCommand.ModifiedEvent, parameter_to_gui)
            return tag

        def connectGui(self, gui):  # noqa: N802
            widgets = {}
            candidates = gui.findChildren(qt.QWidget) if getattr(gui, "isWidgetType", lambda: False)() \
                else list(vars(gui).values())
            for widget in candidates:
                name = widget.property(PARAMETER_PROPERTY)
                if name:
                    if name not in hints:
                        raise ValueError(f"Cannot find a param with the given name: {name}")
                    widgets[name] = widget
            tag = connectParametersToGui(self, widgets)
            return tag if connect_gui_returns_tag else None

        def disconnectGui(self, tag):  # noqa: N802
            for connector in self._parameterGUIs.pop(tag, {}).values():
                connector.onChanged(None)

        def make_property(name):
            return property(lambda self: self.getValue(name), lambda self, value: self.setValue(name, value))

        namespace = {
            "__init__": __init__, "_is_in": _is_in, "getValue": getValue, "setValue": setValue,
            "connectGui": connectGui, "connectParametersToGui": connectParametersToGui, "disconnectGui": disconnectGui,
            "allParameters": dict(hints),
            "StartModify": lambda self: self.parameterNode.StartModify(),
            "EndModify": lambda self, was: self.parameterNode.EndModify(was),
            "AddObserver": lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(event, callback,
                                                                                                     priority),
            "RemoveObserver": lambda self, tag: self.parameterNode.RemoveObserver(tag),
            "Modified": lambda self: self.parameterNode.Modified(),
        }
        for name in hints:
            namespace[name] = make_property(name)
        return type(classtype.__name__, (), namespace)

    module = types.ModuleType("slicer.parameterNodeWrapper")
    module.parameterNodeWrapper = parameterNodeWrapper
    return module


# ----------------------------------------------------------------------------------------------- testing


def make_testing() -> types.ModuleType:
    module = types.ModuleType("slicer.testing")

    def runUnitTest(path, testname):  # noqa: N802 - testing.py 14-28
        import sys

        if isinstance(path, str):
            sys.path.append(path)
        else:
            sys.path.extend(path)
        suite = unittest.TestLoader().loadTestsFromName(testname)
        result = unittest.TextTestRunner(verbosity=2).run(suite)
        module.last_result = result
        if not result.wasSuccessful():
            raise Exception("")

    module.runUnitTest = runUnitTest
    return module


def make_packaging(installer) -> types.ModuleType:
    """slicer.packaging (v5.12.0+): pip_ensure asks before installing and raises when the user declines."""
    module = types.ModuleType("slicer.packaging")

    def pip_ensure(requirements, requester: Optional[str] = None, skip_in_testing: bool = True, **kwargs):
        return installer.ensure(requirements, requester=requester, skip_in_testing=skip_in_testing)

    def pip_install(requirements, **kwargs):
        return installer.install(requirements)

    module.pip_ensure = pip_ensure
    module.pip_install = pip_install
    return module

