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
                                "self_test.py", "registration.py")]

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
    """Every Python file of the module: the module file, the library and the Segment Editor effect."""
    return [MODULE_FILE] + sorted(p for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts
                                  and p != MODULE_FILE)


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


EFFECT_FILE = MODULE_DIR / "SegmentEditorClaraAWSLib" / "SegmentEditorEffect.py"


def test_the_effect_file_follows_slicers_naming_rule():
    """qSlicerSegmentEditorScriptedEffect::setPythonSource (v5.8.1:143-153): module = parent folder, class = file
    base name (+ "Effect"); the folder is no package of ours (5.10+ replaces sys.modules[folder])."""
    tree = ast.parse(EFFECT_FILE.read_text())
    classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    assert classes == [EFFECT_FILE.stem] and EFFECT_FILE.stem.endswith("Effect")
    assert EFFECT_FILE.parent.name not in {"ClaraAWSLib", "panel"} and not (EFFECT_FILE.parent / "__init__.py").exists()
    relative = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level]
    assert relative == []  # loaded by path as a module of its own: relative imports have no package


def test_no_function_imports_a_slicer_submodule():
    """``import slicer.x`` inside a function makes ``slicer`` a local name of all of it (the 5.8 Discover crash)."""
    problems = []
    for path in sorted(MODULE_DIR.rglob("*.py")):
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
                if any(name.startswith("slicer.") for name in names):
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno} import {names}")
    assert problems == []


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
