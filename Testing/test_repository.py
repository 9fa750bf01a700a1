"""Rules of the code base that a reviewer would otherwise check by hand."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "ClaraAWS" / "ClaraAWSLib"
CORE_RING = [
    "errors.py", "geometry.py", "imageio.py", "multipart.py", "client.py", "aws.py", "phantom.py",
    "cli.py", "demo.py", "preview.py", "jobs.py", "processing_state.py", "settings_store.py", "progress_text.py",
]


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


@pytest.mark.parametrize("name", CORE_RING)
def test_the_core_ring_never_imports_slicer_vtk_or_qt(name):
    path = LIB / name
    if not path.exists():
        pytest.skip(f"{name} not written yet")
    assert not {"slicer", "vtk", "qt", "ctk", "boto3"} & set(_imports(path)) - ({"boto3"} if name == "aws.py" else set())


def test_the_server_package_is_core_ring_too():
    for path in (LIB / "server").glob("*.py"):
        assert not {"slicer", "vtk", "qt", "ctk"} & set(_imports(path)), path


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
