"""Static checks of the Slicer module, which cannot run here (no Slicer application).

They catch what would otherwise only fail inside Slicer: a widget name the code uses but the .ui lacks,
a library file left out of the packaged extension, a parameter binding to a field that does not exist,
a syntax or API removed from current Python.
"""

from __future__ import annotations

import ast
import py_compile
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "ClaraAWS"
MODULE_FILE = MODULE_DIR / "ClaraAWS.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "ClaraAWS.ui"
MODULE_CMAKE = MODULE_DIR / "CMakeLists.txt"
TOP_CMAKE = ROOT / "CMakeLists.txt"
LIBRARY_DIR = MODULE_DIR / "ClaraAWSLib"
#: The module file and the panel files that make up the Slicer widget (the panel ring).
PANEL_FILES = [MODULE_FILE] + [LIBRARY_DIR / "panel" / name for name in
                               ("widget.py", "server_section.py", "segment_section.py", "learning_section.py",
                                "self_test.py")]

#: Widgets that need the scene: the top-level qMRMLWidget must pass it on in the .ui.
SCENE_WIDGET_CLASSES = {"qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget", "qSlicerMarkupsPlaceWidget"}
QT_CLASSES = {
    "QWidget", "QLabel", "QPushButton", "QComboBox", "QCheckBox", "QLineEdit", "QGroupBox",
    "QTableWidget", "QProgressBar", "QSpinBox",
}


@pytest.fixture(scope="module")
def ui_tree() -> ET.Element:
    return ET.parse(UI_FILE).getroot()


@pytest.fixture(scope="module")
def module_source() -> str:
    """The widget's source: the module file and the panel files, as one text."""
    return "\n".join(path.read_text(encoding="utf-8") for path in PANEL_FILES)


@pytest.fixture(scope="module")
def module_ast(module_source) -> ast.Module:
    return ast.parse(module_source, filename=str(MODULE_FILE))


def ui_widgets(ui_tree) -> dict:
    return {widget.get("name"): widget for widget in ui_tree.iter("widget")}


def used_ui_names(module_ast) -> set:
    """Every ``<x>.ui.<name>`` attribute chain in the module."""
    names = set()
    for node in ast.walk(module_ast):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui":
            names.add(node.attr)
    return names


def parameter_fields(module_ast) -> set:
    for node in ast.walk(module_ast):
        if isinstance(node, ast.ClassDef) and any(
            (isinstance(d, ast.Name) and d.id == "parameterNodeWrapper") for d in node.decorator_list
        ):
            return {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in ClaraAWS.py")


def cmake_list(text: str, variable: str) -> list:
    match = re.search(r"set\(\s*" + variable + r"\s+(.*?)\)", text, re.S)
    assert match, f"{variable} is not set"
    entries = []
    for line in match.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.extend(line.split())
    return [entry.replace("${MODULE_NAME}", "ClaraAWS") for entry in entries]


# --- the .ui file and the widget code ------------------------------------------------------
def test_every_ui_name_the_code_uses_exists_in_the_ui_file(ui_tree, module_ast):
    used = used_ui_names(module_ast)
    assert len(used) > 20  # the parse found the widget code
    missing = sorted(used - set(ui_widgets(ui_tree)))
    assert missing == []


def test_widget_names_are_unique(ui_tree):
    names = [widget.get("name") for widget in ui_tree.iter("widget")]
    assert len(names) == len(set(names))


def test_every_parameter_binding_names_a_parameter_node_field(ui_tree, module_ast):
    fields = parameter_fields(module_ast)
    bound = {}
    for name, widget in ui_widgets(ui_tree).items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.findtext("string")
    assert bound, "no widget is bound to the parameter node"
    assert {name: field for name, field in bound.items() if field not in fields} == {}
    assert len(set(bound.values())) == len(bound)  # one widget per parameter


def test_bound_widgets_are_kinds_the_parameter_wrapper_can_connect(ui_tree):
    # A QComboBox bound to a str needs a fixed Choice list; our model lists are dynamic, so only node
    # selectors may carry the binding.
    for widget in ui_widgets(ui_tree).values():
        if any(p.get("name") == "SlicerParameterName" for p in widget.findall("property")):
            assert widget.get("class") == "qMRMLNodeComboBox", widget.get("name")


def test_every_mrml_widget_receives_the_scene(ui_tree):
    top = ui_tree.find("widget")
    receivers = {
        connection.findtext("receiver")
        for connection in ui_tree.iter("connection")
        if connection.findtext("sender") == top.get("name")
        and connection.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and connection.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    needing = {name for name, w in ui_widgets(ui_tree).items() if w.get("class") in SCENE_WIDGET_CLASSES}
    assert needing and needing <= receivers


def test_every_custom_widget_class_is_declared(ui_tree):
    declared = {custom.findtext("class") for custom in ui_tree.iter("customwidget")}
    used = {widget.get("class") for widget in ui_tree.iter("widget")}
    assert sorted(used - declared - QT_CLASSES) == []


def test_top_level_widget_is_a_mrml_widget_named_after_the_module(ui_tree):
    top = ui_tree.find("widget")
    assert (top.get("class"), top.get("name")) == ("qMRMLWidget", "ClaraAWS")


def test_parameter_node_has_the_fields_the_panel_needs(module_ast):
    assert {"inputVolume", "outputSegmentation", "modelName", "annotationModel", "deepgrowModel"} <= parameter_fields(
        module_ast
    )


# --- Python compatibility ------------------------------------------------------------------
def python_files():
    return [MODULE_FILE] + sorted(p for p in LIBRARY_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def test_module_compiles_on_this_python(tmp_path):
    py_compile.compile(str(MODULE_FILE), cfile=str(tmp_path / "ClaraAWS.pyc"), doraise=True)


@pytest.mark.parametrize("path", python_files(), ids=lambda p: p.relative_to(MODULE_DIR).as_posix())
def test_no_api_removed_from_current_python_or_numpy(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] in ("cgi", "imp") for alias in node.names):
            problems.append(f"line {node.lineno}: import of a module removed from Python")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("cgi", "imp"):
            problems.append(f"line {node.lineno}: import of a module removed from Python")
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("float", "int", "bool", "object", "str")
            and isinstance(node.value, ast.Name)
            and node.value.id in ("np", "numpy")
        ):
            problems.append(f"line {node.lineno}: np.{node.attr} was removed from NumPy")
    assert problems == []


def test_widget_module_stays_thin(module_source):
    assert len(MODULE_FILE.read_text().splitlines()) < 750
    assert len(MODULE_FILE.read_text().splitlines()) < 150  # the module file is the shell Slicer needs
    for path in PANEL_FILES[1:]:
        assert len(path.read_text().splitlines()) < 400, path
    for forbidden in ("import requests", "import SimpleITK", "from ClaraAWSLib.backends.aiaa.client", "urllib"):
        assert forbidden not in module_source


def test_point_lists_are_made_only_by_the_tools_and_stop_with_the_module(module_source):
    # Lists made on module open became Slicer's active place list; observers that outlived the module sent
    # deepgrow requests for points placed in other modules (scene_point_lists.ToolPointLists owns both now).
    assert '"vtkMRMLMarkupsFiducialNode"' not in module_source
    assert "PointPositionDefinedEvent, self.onDeepgrowPoint" not in module_source
    tree = ast.parse(module_source)
    methods = {node.name: ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    for method in ("exit", "onSceneStartClose"):
        assert "self._stopTools()" in methods[method], f"{method} must stop the interactive tools"
    assert "self.pointTools.deactivate()" in methods["_stopTools"]
    assert "placeModeEnabled = False" in methods["_stopTools"]


def _method_source(module_source, name):
    return next(ast.unparse(node) for node in ast.walk(ast.parse(module_source))
                if isinstance(node, ast.FunctionDef) and node.name == name)


def test_a_loaded_scene_rebinds_the_panel_to_its_own_point_lists(module_source):
    assert "slicer.mrmlScene.EndImportEvent, self.onSceneEndImport" in module_source
    assert "self.initializeParameterNode()" in _method_source(module_source, "onSceneEndImport")


def test_show_in_segment_editor_works_after_the_selector_went_back_to_new(module_source):
    assert "self.logic.lastSegmentationNode" in _method_source(module_source, "onShowInSegmentEditor")


def test_cancel_and_scene_close_stop_waiting_at_once(module_source):
    assert "self.runner.abandon('auto')" in _method_source(module_source, "onApplyButton")
    assert "self.runner.abandon(channel)" in _method_source(module_source, "onSceneStartClose")
    apply = _method_source(module_source, "onApplyButton")
    assert "arm_cancel()" in apply and apply.index("if self.autoState.busy") < apply.index("prepareAutoSegment")


def test_boto3_install_on_old_slicer_reports_failures_and_says_it_waits(module_source):
    helper = _method_source(module_source, "_pipInstallWithStatus")
    assert "except Exception" in helper and "_showError" in helper and "setOverrideCursor" in helper
    assert "answer_is_yes(slicer.util.confirmOkCancelDisplay" in _method_source(module_source, "_ensureBoto3")


def test_gui_bindings_use_the_tag_that_slicer_58_forgets_to_return(module_source):
    assert "connect_gui(pn, self.ui)" in module_source and ".connectGui(" not in module_source
    assert "dontShowAgainSettingsKey" not in module_source  # consent is per server (panel/consent.py)


EFFECT_FILE = LIBRARY_DIR / "panel" / "segment_editor_effect.py"
#: What the Segment Editor effect calls on Slicer, each read from Slicer 5.8.1's source (file in the comment).
SLICER_58_EFFECT_API = {
    # qSlicerSegmentEditorAbstractEffect.h / AbstractScriptedSegmentEditorEffect.py
    "addOptionsWidget", "addLabeledOptionsWidget", "parameterSetNode", "saveStateForUndo", "setPythonSource",
    "perSegment", "requireSegments", "name", "self", "register",
    # vtkMRMLSegmentEditorNode.h
    "GetSourceVolumeNode", "GetSegmentationNode", "GetSelectedSegmentID",
    # qSlicerMarkupsPlaceWidget.h
    "setMRMLScene", "placeMultipleMarkups", "ForcePlaceMultipleMarkups", "setCurrentNode", "currentNode",
    "qSlicerMarkupsPlaceWidget",
}
#: Methods Slicer calls on a scripted effect (qSlicerSegmentEditorScriptedEffect.cxx, 5.8.1).
SLICER_EFFECT_HOOKS = {"clone", "icon", "helpText", "setupOptionsFrame", "createCursor", "activate", "deactivate",
                       "updateGUIFromMRML"}


def test_the_segment_editor_effect_uses_only_slicer_58_api_and_no_protocol_code():
    source = EFFECT_FILE.read_text()
    tree = ast.parse(source)
    called = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
              and isinstance(node.value, ast.Attribute) and node.value.attr in ("scriptedEffect", "slicer")}
    called |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
               and isinstance(node.value, ast.Name) and node.value.id in ("parameters", "widget")}
    slicer_names = {"modules", "util", "mrmlScene", "qSlicerMarkupsPlaceWidget"}
    assert called - SLICER_58_EFFECT_API - slicer_names - {"setCurrentNode", "enabled"} == set()
    effect_class = next(node for node in tree.body if isinstance(node, ast.ClassDef))
    assert effect_class.name == "SegmentEditorEffect"  # the name Slicer's scripted effect looks for
    methods = {node.name for node in effect_class.body if isinstance(node, ast.FunctionDef)}
    assert {"clone", "setupOptionsFrame", "activate", "deactivate", "updateGUIFromMRML"} <= methods
    assert not methods & {"apply", "onApply"} - SLICER_EFFECT_HOOKS
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    for name in imported:  # thin: the panel and the logic do the work, no protocol or geometry here
        assert not name.startswith(("requests", "SimpleITK", "numpy", "ClaraAWSLib.backends", "ClaraAWSLib.core")), name
    module = MODULE_FILE.read_text()
    assert '"startupCompleted()", self.registerEditorEffect' in module and "segment_editor_effect.py" in module


SETTINGS_PAGE = LIBRARY_DIR / "panel" / "settings_page.py"
#: What the settings page calls, read from Slicer 5.8.1's DICOM settings panel (Modules/Scripted/DICOM/DICOM.py)
#: and CTK's ctkSettingsPanel/ctkPathLineEdit headers as bundled with it.
SLICER_58_SETTINGS_API = {"ctkSettingsPanel", "registerProperty", "ctkCollapsibleGroupBox", "ctkPathLineEdit",
                          "SIGNAL", "Files"}


def test_the_settings_page_follows_slicers_settings_panel_conventions():
    source = SETTINGS_PAGE.read_text()
    tree = ast.parse(source)
    ctk_names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                 and isinstance(node.value, ast.Name) and node.value.id == "ctk"}
    assert ctk_names <= SLICER_58_SETTINGS_API
    assert "class ClaraAWSSettingsPanel(ctk.ctkSettingsPanel)" in source
    keys = set(re.findall(r"settings_store\.(KEY_[A-Z_]+)", source))
    from ClaraAWSLib.panel import settings_store

    assert keys and all(hasattr(settings_store, key) for key in keys)  # the panel reads the same keys
    assert "password" not in source.lower() and "token" not in source.lower()  # never credentials
    module = MODULE_FILE.read_text()
    assert 'slicer.app.settingsDialog().addPanel("ClaraAWS", self.settingsPanel)' in module
    assert "noMainWindow" in module


def test_the_active_learning_section_uses_the_logic_and_asks_before_storing_a_local_volume(module_source):
    submit = _method_source(module_source, "onSubmitLabel")
    assert "confirmOkCancelDisplay" in submit and "uploadConsent=consent" in submit
    assert submit.index("datastoreId") < submit.index("prepareSubmitLabel")  # asked before anything is prepared
    for method, call in (("onNextSample", "self.logic.prepareNextSample("), ("onTrain", "logic.startTraining("),
                         ("_pollTraining", "logic.trainingStatus"), ("_updateLearningGui", "supportsActiveLearning")):
        assert call in _method_source(module_source, method), method
    assert "self._updateLearningGui()" in _method_source(module_source, "_onConnected")


def test_a_chosen_volume_is_compressed_before_the_click(module_source):
    assert "self.logic.preEncode(volume)" in _method_source(module_source, "_onParameterNodeModified")


#: Signals the effect and the settings page connect to: Qt's own (QAbstractButton, QLineEdit) and
#: ctkPathLineEdit's, as declared in the Qt 5 and CTK headers Slicer 5.8 builds with.
KNOWN_SIGNALS = {"clicked()", "clicked(bool)", "toggled(bool)", "textChanged(QString)", "currentPathChanged(QString)",
                 "timeout()", "currentIndexChanged(int)"}


@pytest.mark.parametrize("path", [EFFECT_FILE, SETTINGS_PAGE, LIBRARY_DIR / "panel" / "learning_section.py"])
def test_every_signal_the_effect_and_settings_page_use_exists(path):
    used = set(re.findall(r'(?:connect\(|SIGNAL\()"([A-Za-z]+\([A-Za-z*,]*\))"', path.read_text()))
    assert used and used <= KNOWN_SIGNALS, used - KNOWN_SIGNALS


def test_re_editing_saved_points_and_the_every_click_switch_are_wired(module_source):
    assert "self.logic.pointsOfSegment(" in _method_source(module_source, "onLoadSavedPoints")
    assert "update_on_every_click(self.settings)" in _method_source(module_source, "onDeepgrowPoint")
    assert "surface_after_import(self.settings)" in _method_source(module_source, "runEditRequest")


# --- packaging -----------------------------------------------------------------------------
def test_cmake_lists_every_library_file_and_nothing_else():
    listed = cmake_list(MODULE_CMAKE.read_text(), "MODULE_PYTHON_SCRIPTS")
    on_disk = {p.relative_to(MODULE_DIR).as_posix() for p in python_files()}
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert sorted(on_disk - set(listed)) == [], "not packaged"
    assert sorted(set(listed) - on_disk) == [], "listed but missing"


def test_cmake_resources_exist_and_tests_are_registered():
    text = MODULE_CMAKE.read_text()
    resources = cmake_list(text, "MODULE_PYTHON_RESOURCES")
    assert {"Resources/Icons/ClaraAWS.png", "Resources/UI/ClaraAWS.ui"} <= set(resources)
    assert all((MODULE_DIR / resource).is_file() for resource in resources)
    assert "WITH_GENERIC_TESTS" in text
    assert re.search(r"if\(BUILD_TESTING\)\s+.*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text, re.S)


def test_extension_metadata():
    text = TOP_CMAKE.read_text()
    assert re.search(r"^project\(ClaraAWS\)", text, re.M)
    values = dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))
    assert values["EXTENSION_HOMEPAGE"] == "https://github.com/claraaws/SlicerClaraAWS"
    assert values["EXTENSION_CATEGORY"] == "Segmentation"
    assert values["EXTENSION_DEPENDS"] == "NA"
    assert values["EXTENSION_CONTRIBUTORS"] and values["EXTENSION_DESCRIPTION"]
    raw = "https://raw.githubusercontent.com/claraaws/SlicerClaraAWS/main/"
    assert values["EXTENSION_ICONURL"].startswith(raw) and values["EXTENSION_SCREENSHOTURLS"].startswith(raw)
    assert (ROOT / values["EXTENSION_ICONURL"][len(raw):]).is_file()
    assert "add_subdirectory(ClaraAWS)" in text


@pytest.mark.parametrize("icon", [MODULE_DIR / "Resources" / "Icons" / "ClaraAWS.png", ROOT / "Resources" / "ClaraAWS.png"])
def test_icons_are_128_pixel_pngs(icon):
    header = icon.read_bytes()[:32]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
    assert struct.unpack(">II", header[16:24]) == (128, 128)
