"""Rules of the code base that a reviewer would otherwise check by hand."""

from __future__ import annotations

import ast
import sys
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "ClaraAWS" / "ClaraAWSLib"


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def _python_files():
    """The project's own Python files: not virtualenvs or other hidden folders, not build output."""
    return sorted(
        path for path in ROOT.rglob("*.py")
        if not any(part.startswith(".") or part in ("build", "dist") for part in path.relative_to(ROOT).parts[:-1])
    )


def test_readme_has_the_two_set_up_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```\n(python3 -m venv[^\n]*)\n```", readme)
    assert len(blocks) == 2, blocks
    demo, tests = blocks
    assert demo.endswith("clara-aws demo") and tests.endswith("pytest")
    assert tests in (ROOT / ".ci" / "run").read_text()


#: Each ring and what it may import of ClaraAWSLib (itself always) and of the outside world.
RINGS = {
    "core": ({"core"}, set()),
    "backends": ({"core", "backends"}, set()),
    "aws": ({"core", "aws"}, {"boto3", "botocore"}),
    "synthetic": ({"core", "synthetic"}, set()),
    "server": ({"core", "server", "synthetic"}, set()),
    "datasets": ({"core", "aws", "datasets"}, {"boto3", "botocore"}),
    "cli": ({"core", "backends", "aws", "server", "synthetic", "datasets", "cli"}, set()),
    "scene": ({"core", "backends", "scene"}, {"slicer", "vtk"}),
    "panel": ({"core", "backends", "aws", "scene", "panel", "server", "synthetic"}, {"slicer", "vtk", "qt", "ctk"}),
}
OUTSIDE_OF_RINGS = {"slicer", "vtk", "qt", "ctk", "boto3", "botocore"}


def _library_imports(path: Path):
    """(ring of ClaraAWSLib or None, top-level module) for every import of a library file."""
    parts = path.relative_to(LIB).parts
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")
                yield (top[1] if top[0] == "ClaraAWSLib" and len(top) > 1 else None), top[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                top = (node.module or "").split(".")
                if top[0] == "ClaraAWSLib":
                    rings = [top[1]] if len(top) > 1 else [alias.name for alias in node.names]
                    for ring in rings:
                        yield ring, "ClaraAWSLib"
                else:
                    yield None, top[0]
            else:
                package = list(parts[:-1])
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    yield target[0], "ClaraAWSLib"
                else:  # from .. import X at the package root: X is a ring or a root name
                    for alias in node.names:
                        yield alias.name, "ClaraAWSLib"


@pytest.mark.parametrize("ring", sorted(RINGS))
def test_each_ring_imports_only_inward(ring):
    allowed_rings, allowed_outside = RINGS[ring]
    root_names = {"__version__", "ClaraAWSLogic"}
    problems = []
    for path in sorted((LIB / ring).rglob("*.py")):
        for inner, top in _library_imports(path):
            if top == "ClaraAWSLib" and inner not in allowed_rings and inner not in root_names:
                problems.append(f"{path.relative_to(LIB)} imports ClaraAWSLib.{inner}")
            elif top in OUTSIDE_OF_RINGS and top not in allowed_outside:
                problems.append(f"{path.relative_to(LIB)} imports {top}")
    assert problems == []


def test_only_the_panel_and_the_module_file_import_qt():
    offenders = [path for path in _python_files() if "qt" in set(_imports(path))
                 and not (path.is_relative_to(LIB / "panel") or path.name == "ClaraAWS.py"
                         or path.parent.name == "SegmentEditorClaraAWSLib")]
    assert offenders == []


def test_every_library_file_belongs_to_a_ring():
    loose = [path.name for path in LIB.glob("*.py") if path.name != "__init__.py"]
    assert loose == [] and {path.name for path in LIB.iterdir() if path.is_dir() and path.name != "__pycache__"} == set(RINGS)


def test_scene_panel_and_cli_know_only_the_backend_seam():
    for ring in ("scene", "panel", "cli"):
        for path in (LIB / ring).rglob("*.py"):
            assert "backends." not in path.read_text().replace("from ..backends import", ""), path


BACKEND_PACKAGES = ("aiaa", "monailabel")


def _backend_imports(path: Path):
    """Which backend package each import of ``path`` (a file of backends/) names, relative or absolute."""
    parts = path.relative_to(LIB / "backends").parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(parts[:-1])[: len(parts) - node.level]
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")[2:] if (node.module or "").startswith("ClaraAWSLib.backends") else []
            if target and target[0] in BACKEND_PACKAGES:
                yield target[0]
            elif not target:  # from .. import aiaa
                yield from (alias.name for alias in node.names if alias.name in BACKEND_PACKAGES)


def test_no_backend_imports_another_and_the_transport_imports_none():
    """The wire is every backend's (backends/transport/); shared rules and records live beside the seam."""
    for package in BACKEND_PACKAGES + ("transport",):
        for path in sorted((LIB / "backends" / package).rglob("*.py")):
            others = set(_backend_imports(path)) - {package}
            assert others == set(), f"{path.relative_to(LIB)} imports the {others} backend"
    for path in (LIB / "backends").glob("*.py"):  # the seam, rules, results: no protocol module either
        if path.name != "__init__.py":
            assert set(_backend_imports(path)) == set(), path


def test_the_import_rules_catch_a_wrong_import(tmp_path, monkeypatch):
    # The rules above must fail on a file that breaks them (the check itself is tested, not assumed).
    fake = tmp_path / "ClaraAWSLib"
    (fake / "core").mkdir(parents=True)
    (fake / "core" / "bad.py").write_text("from ..scene import logic\nimport qt\n")
    monkeypatch.setattr(sys.modules[__name__], "LIB", fake)
    with pytest.raises(AssertionError):
        test_each_ring_imports_only_inward("core")


def test_nothing_removed_in_python_3_13_or_numpy_2_is_used():
    banned = {"cgi", "cgitb", "imp", "distutils", "asynchat", "asyncore", "smtpd", "telnetlib", "pipes", "crypt"}
    for path in _python_files():
        text = path.read_text()
        assert not banned & set(_imports(path)), path
        assert not re.search(r"np\.(float|int|bool|object)\b(?!\w)(?!_)(?!\d)", text.replace("np.float32", "").replace("np.float64", "")), path


def test_test_servers_bind_to_loopback_only():
    for path in _python_files():
        text = path.read_text()
        assert "0.0.0.0" not in text or path.name == "test_repository.py", path


def test_the_pip_package_depends_on_the_zlib_ng_the_slicer_settings_page_installs():
    from ClaraAWSLib.core.inflate import ZLIB_NG_REQUIREMENT

    dependencies = re.search(r"^dependencies = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.S | re.M).group(1)
    assert f'"{ZLIB_NG_REQUIREMENT}"' in dependencies
