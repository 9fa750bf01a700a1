"""A Slicer stand-in for tests: the real ClaraAWS module file, panel, effect and settings page run on
slicer-core's real MRML scene, with doubles for what only the Slicer application has.

Every behaviour a double models is read from Slicer's, CTK's or PythonQt's source and cited where it is
modelled (SOURCES.md collects the facts). Two Slicer versions are modelled:
- ``SLICER_5_8_1``: Python 3.9 era; no ``slicer.packaging``; ``connectGui`` returns None; scripted files are
  loaded with ``imp.load_source`` into the module object of their name.
- ``SLICER_MAIN`` (5.10 and newer, checked against main 583e9b37): ``slicer.packaging`` (from 5.12);
  ``connectGui`` returns its tag; scripted files get a fresh module put in ``sys.modules``.
Each profile also names the zlib its Python's ``zlib`` module is built on (SOURCES.md section 15): the
stand-in shows it as ``zlib.ZLIB_RUNTIME_VERSION``, the version string that library reports.
``slicer.util`` is Slicer's own file as the slicer-core wheel ships it; a profile replaces only the
functions whose behaviour differs in its version.

Usage::

    with StandinSlicer(SLICER_MAIN) as app:   # installs the doubles, a fresh scene and settings
        app.start()                           # loads ClaraAWS.py, fires startupCompleted()
        panel = app.open_module()             # the module's widget (setup + enter), as a user opens it
"""

from __future__ import annotations

import sys
import types
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import slicer

from . import ctk_double, effects, mrml_widgets, qt_double, slicer_python, ui_loader
from .application import Application, Dialogs, Installer, segment_editor_module

MODULE_FILE = Path(__file__).resolve().parents[2] / "ClaraAWS" / "ClaraAWS.py"


@dataclass(frozen=True)
class SlicerProfile:
    name: str
    effect_loader: str  # "imp" or "importlib"
    has_packaging: bool
    connect_gui_returns_tag: bool
    python_zlib_version: str  # zlibVersion() of the zlib Slicer builds its Python on


SLICER_5_8_1 = SlicerProfile("5.8.1", "imp", has_packaging=False, connect_gui_returns_tag=False,
                             python_zlib_version="1.2.3")
SLICER_MAIN = SlicerProfile("main", "importlib", has_packaging=True, connect_gui_returns_tag=True,
                            python_zlib_version="1.3.1.zlib-ng")
PROFILES = (SLICER_5_8_1, SLICER_MAIN)

_SLICER_ATTRIBUTES = ("app", "modules", "mrmlScene", "qMRMLWidget", "qSlicerWidget", "qMRMLNodeComboBox",
                      "qMRMLSegmentSelectorWidget", "qSlicerMarkupsPlaceWidget", "qMRMLSegmentEditorWidget",
                      "qSlicerSegmentEditorEffectFactory", "selfTests", "ScriptedLoadableModule", "parameterNodeWrapper",
                      "i18n", "testing", "packaging")
_OWNED_MODULE_PREFIXES = ("ClaraAWS", "ClaraAWSLib", "SegmentEditorClaraAWSLib")


class StandinSlicer:
    def __init__(self, profile: SlicerProfile = SLICER_MAIN, *, testing: bool = False, no_main_window: bool = False,
                 settings: Optional[Dict[str, Any]] = None, hide_packages=("boto3", "botocore")) -> None:
        self.profile = profile
        self.testing, self.no_main_window = testing, no_main_window
        self.initial_settings = dict(settings or {})
        self.dialogs = Dialogs()
        self.installer = Installer()
        self.installer.blocked.update(hide_packages)
        self.errors: list = []
        self._saved_modules: Dict[str, Any] = {}
        self._saved_attributes: Dict[str, Any] = {}
        self._python_zlib_version = zlib.ZLIB_RUNTIME_VERSION

    # --- install / uninstall ---------------------------------------------------------------------------------
    def __enter__(self) -> "StandinSlicer":
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.uninstall()

    def _put_module(self, name: str, module: types.ModuleType) -> None:
        self._saved_modules.setdefault(name, sys.modules.get(name))
        sys.modules[name] = module

    def install(self) -> None:
        from ClaraAWSLib.scene.setup import ensure_scene_services

        for name in list(sys.modules):
            package = name.split(".")[0]
            if package in self.installer.blocked:
                self.installer.hidden_modules[name] = sys.modules[name]
            if package in _OWNED_MODULE_PREFIXES or package in self.installer.blocked:
                self._saved_modules.setdefault(name, sys.modules.pop(name))
        for name in _SLICER_ATTRIBUTES:
            self._saved_attributes[name] = getattr(slicer, name, _MISSING)
        qt_module = _module("qt", qt_double)
        ctk_module = _module("ctk", ctk_double)
        self._put_module("qt", qt_module)
        self._put_module("ctk", ctk_module)
        ui_loader.WIDGET_CLASSES.update(ctk_double.WIDGET_CLASSES)
        ui_loader.WIDGET_CLASSES.update(mrml_widgets.WIDGET_CLASSES)
        qt_double.QSettings.store = dict(self.initial_settings)
        qt_double.QTimer.running = []
        qt_double.SLOT_ERRORS.clear()
        qt_double.QApplication._override_cursors = []
        qt_double.QMessageBox.answer_provider = self.dialogs
        effects.qSlicerSegmentEditorScriptedEffect.loader = self.profile.effect_loader
        effects.qSlicerSegmentEditorEffectFactory._instance = None

        modules = {
            "slicer.i18n": slicer_python.make_i18n(),
            "slicer.ScriptedLoadableModule": slicer_python.make_scripted_loadable_module(),
            "slicer.parameterNodeWrapper": slicer_python.parameter_node_wrapper_module(
                self.profile.connect_gui_returns_tag),
            "slicer.testing": slicer_python.make_testing(),
            "SegmentEditorEffects": effects.make_segment_editor_effects_module(),
            "qSlicerSegmentationsEditorEffectsPythonQt": effects.make_effects_pythonqt_module(),
        }
        if self.profile.has_packaging:
            modules["slicer.packaging"] = slicer_python.make_packaging(self.installer)
        else:
            self._saved_modules.setdefault("slicer.packaging", sys.modules.pop("slicer.packaging", None))
        for name, module in modules.items():
            self._put_module(name, module)
            if name.startswith("slicer."):
                setattr(slicer, name.split(".", 1)[1], module)

        scene = slicer.vtkMRMLScene()
        self.services = ensure_scene_services(scene)  # what the application's logics do for its scene
        slicer.mrmlScene = scene
        self.app = Application(testing=self.testing, no_main_window=self.no_main_window,
                               loader=self.profile.effect_loader)
        slicer.app = self.app
        slicer.modules = types.SimpleNamespace()
        for name, cls in mrml_widgets.WIDGET_CLASSES.items():
            setattr(slicer, name, cls)
        slicer.qMRMLSegmentEditorWidget = effects.qMRMLSegmentEditorWidget
        slicer.qSlicerSegmentEditorEffectFactory = effects.qSlicerSegmentEditorEffectFactory
        # What slicer.util's array helpers reach for (slicer.modules.segmentations.logic()).
        slicer.modules.segmentations = types.SimpleNamespace(name="Segmentations",
                                                             logic=lambda: self.services.segmentations_logic)
        slicer.modules.segmenteditor = segment_editor_module(self._segment_editor_node)
        self.app.loaded_modules["SegmentEditor"] = slicer.modules.segmenteditor
        self._patched_util = {}
        if not self.profile.has_packaging:
            # Slicer 5.8's util.pip_install runs pip itself (Base/Python/slicer/util.py v5.8.1); it has no packaging.
            self._patch_util("pip_install", lambda requirements, **kwargs: self.installer.install(requirements))
        sys.meta_path.insert(0, self.installer)
        zlib.ZLIB_RUNTIME_VERSION = self.profile.python_zlib_version

    def _patch_util(self, name: str, replacement) -> None:
        self._patched_util[name] = getattr(slicer.util, name)
        setattr(slicer.util, name, replacement)

    def _segment_editor_node(self):
        return slicer.mrmlScene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode") or \
            slicer.mrmlScene.AddNode(_segment_editor_node())

    def uninstall(self) -> None:
        try:
            self.app.quit()
        finally:
            if self.installer in sys.meta_path:
                sys.meta_path.remove(self.installer)
            zlib.ZLIB_RUNTIME_VERSION = self._python_zlib_version
            for name, original in self._patched_util.items():
                setattr(slicer.util, name, original)
            for name in list(sys.modules):
                if name.split(".")[0] in _OWNED_MODULE_PREFIXES:
                    del sys.modules[name]
            for name, module in self._saved_modules.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
            for name, value in self._saved_attributes.items():
                if value is _MISSING:
                    if hasattr(slicer, name):
                        delattr(slicer, name)
                else:
                    setattr(slicer, name, value)
            qt_double.QTimer.running = []
            mrml_widgets._SceneObserver.release_all()

    # --- a user's Slicer session --------------------------------------------------------------------------------
    def start(self, module_file: Path = MODULE_FILE):
        """Slicer's start-up: load the module file, then emit startupCompleted()."""
        self.module = self.app.load_scripted_module(str(module_file))
        self.app.complete_startup()
        return self.module

    def open_module(self, name: str = "ClaraAWS"):
        """The user picks the module: its widget is made (setup) and entered."""
        self.app.select_module(name)
        return slicer.modules.__dict__[name.lower()].widgetRepresentation().self()

    def restart(self) -> "StandinSlicer":
        """Quit and start a new Slicer on the same settings (as the INI file gives them back)."""
        stored = {key: qt_double.QSettings.as_ini_text(value) for key, value in qt_double.QSettings.store.items()}
        self.uninstall()
        fresh = StandinSlicer(self.profile, testing=self.testing, no_main_window=self.no_main_window, settings=stored,
                              hide_packages=tuple(self.installer.blocked))
        fresh.install()
        return fresh

    @property
    def slot_errors(self) -> list:
        """Exceptions Python slots raised (Slicer would print each traceback and go on)."""
        return list(qt_double.SLOT_ERRORS)

    @property
    def settings(self) -> qt_double.QSettings:
        """The application's settings, as a module sees them through ``qt.QSettings()``."""
        return qt_double.QSettings()

    @property
    def settings_values(self) -> Dict[str, Any]:
        return dict(qt_double.QSettings.store)

    def close_scene(self) -> None:
        """File -> Close Scene (qSlicerMainWindow: mrmlScene()->Clear(false))."""
        slicer.mrmlScene.Clear(0)

    def segment_editor(self):
        """The Segment Editor module's editor widget (its shortcuts installed), as the user opens it."""
        return slicer.modules.segmenteditor.widgetRepresentation().self().editor


_MISSING = object()


def _module(name: str, source) -> types.ModuleType:
    module = types.ModuleType(name)
    for attribute in dir(source):
        if not attribute.startswith("_"):
            setattr(module, attribute, getattr(source, attribute))
    return module


def _segment_editor_node():
    node = slicer.vtkMRMLSegmentEditorNode()
    node.SetSingletonTag("SegmentEditor")
    return node


__all__ = ["StandinSlicer", "SLICER_5_8_1", "SLICER_MAIN", "PROFILES", "SlicerProfile", "MODULE_FILE"]
