"""The real MONAI Label server (PyPI ``monailabel``, CPU) on 127.0.0.1 with the test app of Testing/monailabel/app.

The server lives in its own virtualenv (2 GB, pinned in Testing/monailabel/requirements.txt; ``.ci/run``
makes it and sets ``CLARA_MONAILABEL_VENV``). Without it the tests that need the server skip with the
reason; with ``CLARA_MONAILABEL_REQUIRED=1`` (set by ``.ci/run``) a missing server fails them instead,
so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest
import requests

REPOSITORY = Path(__file__).resolve().parent.parent
APP = Path(__file__).resolve().parent / "monailabel" / "app"
VENV_VARIABLE = "CLARA_MONAILABEL_VENV"
REQUIRED_VARIABLE = "CLARA_MONAILABEL_REQUIRED"
START_TIMEOUT = 120.0


def server_python() -> Optional[Path]:
    """The MONAI Label venv's python: $CLARA_MONAILABEL_VENV, else the repository's .venv-monailabel."""
    folder = os.environ.get(VENV_VARIABLE) or str(REPOSITORY / ".venv-monailabel")
    python = Path(folder) / "bin" / "python"
    if python.exists() and (Path(folder) / "bin" / "monailabel").exists():
        return python
    return None


def require_server_python() -> Path:
    python = server_python()
    if python is None:
        reason = (
            f"the real MONAI Label server is not installed (set {VENV_VARIABLE} to a virtualenv made with "
            "'pip install --no-deps -r Testing/monailabel/requirements.txt'; .ci/run does this)"
        )
        if os.environ.get(REQUIRED_VARIABLE) == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return python


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MonaiLabelServer:
    """One server process on a copy of the test app (the server writes model/, logs/ into its app folder)."""

    def __init__(self, python: Path, workdir: Path, env: Optional[dict] = None) -> None:
        self.python = python
        self.workdir = workdir
        self.app = workdir / "app"
        self.studies = workdir / "studies"
        self.port = _free_port()
        self.extra_env = env or {}
        self.process: Optional[subprocess.Popen] = None
        self.start_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MonaiLabelServer":
        shutil.copytree(APP, self.app, ignore=shutil.ignore_patterns("__pycache__", "model", "logs", "bin"))
        self.studies.mkdir(exist_ok=True)
        env = dict(os.environ)
        env.update(
            MONAI_LABEL_TRACKING_ENABLED="false", HF_HUB_OFFLINE="1",
            MONAI_LABEL_SESSION_PATH=str(self.workdir / "sessions"),
            # the server's sub-processes (training) call `python`: make it the server venv's
            PATH=f"{self.python.parent}{os.pathsep}{env.get('PATH', '')}",
        )
        env.update(self.extra_env)
        self.log = open(self.workdir / "server.log", "wb")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [str(self.python), "-m", "monailabel.main", "start_server", "--app", str(self.app), "--studies",
             str(self.studies), "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the MONAI Label server exited at start; its log:\n{self.log_text()[-4000:]}")
            try:
                if requests.get(self.url + "/info/", timeout=2).status_code == 200:
                    self.start_seconds = time.perf_counter() - started
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the MONAI Label server did not answer within {START_TIMEOUT:g} s; its log:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        return (self.workdir / "server.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # The server's process group holds its training sub-processes too; end exactly that group.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        if getattr(self, "log", None) is not None:
            self.log.close()


if __name__ == "__main__":  # manual runs: python Testing/monailabel_server.py /tmp/somewhere
    import tempfile

    server = MonaiLabelServer(server_python(), Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())).start()
    print(server.url, f"started in {server.start_seconds:.1f} s", flush=True)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()
