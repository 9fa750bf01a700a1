"""``slicer.app``, ``slicer.modules`` and the module life cycle of the stand-in.

Sources (Slicer/Slicer):
- Scripted modules are loaded like scripted effects, by file path, as a module named after the file
  (qSlicerScriptedUtils::loadSourceAsModule, see effects.py); the module's folder is on sys.path
  (qSlicerScriptedUtils::importModulePythonExtensions, Base/QTCore/qSlicerScriptedUtils.cxx v5.8.1:103-128),
  and the class named like the module is instantiated with the module object as ``parent``.
- The widget is created on first ``widgetRepresentation()`` and ``setup()`` runs then, once; the Python
  widget is published as ``slicer.modules.<Name>Widget`` and the module instance as
  ``slicer.modules.<Name>Instance`` (Base/QTGUI/qSlicerScriptedLoadableModuleWidget.cxx v5.8.1:170-174,
  qSlicerScriptedLoadableModule.cxx:173-176); selecting a module exits the previous one and enters the
  new one (qSlicerAbstractModuleWidget::enter sets isEntered).
- ``startupCompleted()`` is emitted once, after every module was loaded and instantiated, when the main
  window is first shown (or on a 0 ms timer without one): Base/QTApp/qSlicerApplicationHelper.txx
  v5.8.1:312-319, main qSlicerApplicationHelper.hxx:499-506; a slot connected later never runs.
- File -> Close Scene is ``mrmlScene.Clear(0)`` on the application's scene (qSlicerMainWindow
  on_FileCloseSceneAction_triggered); the real vtkMRMLScene of slicer-core does the rest (singleton
  nodes are reset, vtkMRMLScene.cxx v5.8.1 Clear).
- The settings dialog is made at start-up, before any module, with the application's settings
  (qSlicerApplication.cxx v5.8.1:407-452); openSettingsDialog reloads every panel first (893-924).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import types
from typing import Any, Callable, Dict, List, Optional

import slicer

from . import ctk_double as ctk
from . import mrml_widgets
from . import qt_double as qt
from .effects import SegmentEditorModuleWidget


class CommandOptions:
    def __init__(self, no_main_window: bool) -> None:
        self.noMainWindow = no_main_window


class ModuleManager(qt.QObject):
    SIGNALS = ("moduleAboutToBeUnloaded", "moduleLoaded")

    def __init__(self, app: "Application") -> None:
        super().__init__(None)
        object.__setattr__(self, "_app", app)

    def module(self, name: str):
        return self._app.loaded_modules.get(name)


class ModuleSelector:
    def __init__(self, app: "Application") -> None:
        self._app = app
        self.selectedModule = ""

    def selectModule(self, name: str) -> None:  # noqa: N802
        previous = self._app.loaded_modules.get(self.selectedModule)
        if previous is not None:
            previous.widgetRepresentation().exit()
        module = self._app.loaded_modules.get(name)
        if module is None:
            raise RuntimeError(f"Could not find module with name '{name}'")
        self.selectedModule = name
        module.widgetRepresentation().enter()


class MainWindow(qt.QWidget):
    def __init__(self, app: "Application") -> None:
        super().__init__(None)
        self.objectName = "qSlicerMainWindow"
        object.__setattr__(self, "_selector", ModuleSelector(app))

    def moduleSelector(self) -> ModuleSelector:  # noqa: N802
        return self._selector


class ModuleWidgetRepresentation(mrml_widgets.qSlicerWidget):
    """qSlicerScriptedLoadableModuleWidget (Base/QTGUI/qSlicerScriptedLoadableModuleWidget.cxx v5.8.1): the
    Python widget's ``parent``; setPythonSource (95-177) makes ``<Name>Widget(self)`` and publishes it as
    ``slicer.modules.<Name>Widget``; reload (180-189) does that again from the reloaded module and calls
    setup, without enter or exit (isEntered is left as it was)."""

    PROPERTIES = {"isEntered": (False, None)}

    def __init__(self, module: "ScriptedModule") -> None:
        super().__init__(None)
        self.setLayout(qt.QVBoxLayout())
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_python_widget", None)
        self.setMRMLScene(slicer.mrmlScene)
        self._create()

    def _create(self) -> None:
        name = self._module.name
        python_widget = getattr(sys.modules[name], name + "Widget")(self)
        object.__setattr__(self, "_python_widget", python_widget)
        setattr(slicer.modules, name + "Widget", python_widget)
        python_widget.setup()

    def self(self):
        return self._python_widget

    def enter(self) -> None:
        self._values["isEntered"] = True
        self._python_widget.enter()

    def exit(self) -> None:
        self._python_widget.exit()
        self._values["isEntered"] = False

    def reload(self) -> None:
        self._create()


class ScriptedModule(qt.QObject):
    """qSlicerScriptedLoadableModule: ``slicer.modules.<name lower>``."""

    def __init__(self, app: "Application", name: str, path: str) -> None:
        super().__init__(None)
        self.name, self.path = name, path
        self.title = self.helpText = self.acknowledgementText = ""
        self.categories: List[str] = []
        self.dependencies: List[str] = []
        self.contributors: List[str] = []
        self.hidden = False
        self.icon = None
        object.__setattr__(self, "_app", app)
        object.__setattr__(self, "representation", None)
        object.__setattr__(self, "python_module", None)

    def widgetRepresentation(self) -> ModuleWidgetRepresentation:  # noqa: N802
        if self.representation is None:
            object.__setattr__(self, "representation", ModuleWidgetRepresentation(self))
        return self.representation


class BuiltinModule:
    """A C++ module the stand-in provides (the Segment Editor)."""

    def __init__(self, name: str, make_widget: Callable[[], Any]) -> None:
        self.name, self._make, self._representation = name, make_widget, None

    def widgetRepresentation(self):  # noqa: N802
        if self._representation is None:
            widget = self._make()
            self._representation = types.SimpleNamespace(self=lambda: widget, enter=widget.enter, exit=widget.exit)
        return self._representation


class Application(qt.QObject):
    """``slicer.app``: testing mode, command options, the settings dialog, the event loop, start-up."""

    SIGNALS = ("startupCompleted", "aboutToQuit")

    def __init__(self, *, testing: bool, no_main_window: bool, loader: str) -> None:
        super().__init__(None)
        self.applicationName = "Slicer"
        object.__setattr__(self, "_testing", testing)
        object.__setattr__(self, "_options", CommandOptions(no_main_window))
        object.__setattr__(self, "_settings_dialog", ctk.ctkSettingsDialog(qt.QSettings()))
        object.__setattr__(self, "_module_manager", ModuleManager(self))
        object.__setattr__(self, "_main_window", None if no_main_window else MainWindow(self))
        object.__setattr__(self, "loaded_modules", {})
        object.__setattr__(self, "loader", loader)
        object.__setattr__(self, "startup_done", False)

    # --- what Slicer's Python calls --------------------------------------------------------------------------
    def testingEnabled(self) -> bool:  # noqa: N802
        return self._testing

    def commandOptions(self) -> CommandOptions:  # noqa: N802
        return self._options

    def settingsDialog(self) -> ctk.ctkSettingsDialog:  # noqa: N802
        return self._settings_dialog

    def openSettingsDialog(self, panel: str = "") -> None:  # noqa: N802
        self._settings_dialog.reloadSettings()

    def moduleManager(self) -> ModuleManager:  # noqa: N802
        return self._module_manager

    def topLevelWidgets(self) -> List[qt.QWidget]:  # noqa: N802
        return [self._main_window] if self._main_window is not None else []

    def mainWindow(self):  # noqa: N802
        return self._main_window

    def processEvents(self, *args) -> None:  # noqa: N802
        now = time.monotonic()
        for timer in list(qt.QTimer.running):
            timer.fire_if_due(now)

    # --- start-up and modules -------------------------------------------------------------------------------
    def load_scripted_module(self, path: str) -> ScriptedModule:
        """Load a scripted module file as Slicer does and instantiate its module class."""
        name = os.path.splitext(os.path.basename(path))[0]
        folder = os.path.dirname(path)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        scripted = ScriptedModule(self, name, path)
        object.__setattr__(scripted, "python_module", getattr(module, name)(scripted))
        setattr(slicer.modules, name + "Instance", scripted.python_module)
        self.loaded_modules[name] = scripted
        setattr(slicer.modules, name.lower(), scripted)
        return scripted

    def complete_startup(self) -> None:
        assert not self.startup_done, "startupCompleted() is emitted once"
        object.__setattr__(self, "startup_done", True)
        self.emit("startupCompleted")

    def select_module(self, name: str) -> None:
        slicer.util.selectModule(name)

    def run_until(self, condition: Callable[[], bool], timeout: float = 60.0, what: str = "the condition") -> None:
        """The event loop, until ``condition()`` holds (QTimers fire; worker threads run meanwhile)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not happen within {timeout} s")
            self.processEvents()
            time.sleep(0.005)

    def quit(self) -> None:
        """Application exit: each loaded module is unloaded (moduleAboutToBeUnloaded), widgets cleaned up."""
        for name in list(self.loaded_modules):
            self._module_manager.emit("moduleAboutToBeUnloaded", name)


def segment_editor_module(editor_node_provider: Callable[[], Any]) -> BuiltinModule:
    return BuiltinModule("SegmentEditor", lambda: SegmentEditorModuleWidget(editor_node_provider()))


class Dialogs:
    """What the user answers to each dialog, scripted by a test, and every dialog shown."""

    def __init__(self) -> None:
        self.shown: List[Dict[str, Any]] = []
        self._answers: List[Callable[[qt.QMessageBox], int]] = []

    def answer(self, button: int, *, tick_check_box: bool = False) -> None:
        def press(box: qt.QMessageBox) -> int:
            if tick_check_box and box.checkBox() is not None:
                box.checkBox().checked = True
            return button
        self._answers.append(press)

    def __call__(self, box: qt.QMessageBox) -> int:
        self.shown.append({"title": box.windowTitle, "text": box.text, "detail": box.detailedText,
                           "buttons": box.standardButtons})
        if not self._answers:
            raise AssertionError(f"a dialog opened that the test did not expect: {box.text!r}")
        return self._answers.pop(0)(box)

    def texts(self) -> List[str]:
        return [entry["text"] for entry in self.shown]

    @property
    def pending(self) -> int:
        return len(self._answers)


class Installer:
    """pip, as the stand-in's Slicer runs it: records requirements and makes blocked packages importable."""

    def __init__(self) -> None:
        self.blocked: set = set()
        #: Modules of blocked packages the test process had imported before: an install gives back these
        #: objects. Importing a C extension a second time re-runs its initialisation, and the first module
        #: object's functions then raise the second one's exception classes (zlib_ng.error does).
        self.hidden_modules: Dict[str, Any] = {}
        self.installs: List[Any] = []
        self.fail_with: Optional[str] = None
        self.confirmations: List[str] = []

    def install(self, requirements) -> None:
        self.installs.append(requirements)
        if self.fail_with:
            raise RuntimeError(self.fail_with)
        self.blocked.clear()
        for name, module in self.hidden_modules.items():
            sys.modules.setdefault(name, module)
        importlib.invalidate_caches()

    def ensure(self, requirements, *, requester=None, skip_in_testing=True):
        """slicer.packaging.pip_ensure, Base/Python/slicer/packaging.py main:327-455: nothing when all is
        installed; in testing mode it skips (returns None, installs nothing); otherwise it asks with
        slicer.util.confirmOkCancelDisplay, raises RuntimeError when the user declines, then installs."""
        if not self.blocked:
            return None
        if skip_in_testing and slicer.app.testingEnabled():
            return None
        self.confirmations.append(str(requester))
        title = f"{requester} - Install Python Packages" if requester else "Install Python Packages"
        if not slicer.util.confirmOkCancelDisplay("1 Python package needs to be installed.\n\n"
                                                  "This will modify Slicer's Python environment. Continue?", title,
                                                  detailedText=str(requirements)):
            raise RuntimeError("User declined package installation")
        self.install(requirements)
        return None

    # --- a meta-path finder that hides blocked packages, as if they were not installed ---------------------
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named '{name}'")
        return None
