"""HTTP responses of the reference server: JSON, AIAA error JSON, HTML, and multipart results.

Every response carries a Content-Length (never chunked); a result file is streamed from disk.
"""

from __future__ import annotations

import html
import json
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from .problems import ServerProblem


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes = b""
    file_path: Optional[Path] = None  # streamed between ``body`` and ``tail``
    tail: bytes = b""
    headers: Dict[str, str] = field(default_factory=dict)

    @property
    def content_length(self) -> int:
        size = self.file_path.stat().st_size if self.file_path is not None else 0
        return len(self.body) + size + len(self.tail)

    def write_to(self, handler, *, close: bool = False, head_only: bool = False) -> None:
        handler.send_response(self.status)
        handler.send_header("Content-Type", self.content_type)
        handler.send_header("Content-Length", str(self.content_length))
        for name, value in self.headers.items():
            handler.send_header(name, value)
        if close:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        if head_only:
            return
        handler.wfile.write(self.body)
        if self.file_path is not None:
            with open(self.file_path, "rb") as source:
                shutil.copyfileobj(source, handler.wfile, 1 << 20)
        handler.wfile.write(self.tail)
        handler.wfile.flush()


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(status, "application/json", json.dumps(payload).encode("utf-8"))


def problem_response(problem: ServerProblem) -> Response:
    return json_response(problem.to_json(), problem.status)


def multipart_result(params: Dict[str, Any], file_path: Path, filename: str) -> Response:
    """``params`` JSON part plus exactly one part with a filename: the result image."""
    boundary = secrets.token_hex(16)
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="params"\r\n'
        "Content-Type: application/json\r\n\r\n"
        f"{json.dumps(params)}\r\n"
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode("utf-8")
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")
    return Response(200, f"multipart/form-data; boundary={boundary}", head, file_path, tail)


def docs_page(endpoints: Iterable[str], models: Iterable[Dict[str, Any]]) -> Response:
    endpoint_items = "".join(f"<li><code>{html.escape(e)}</code></li>" for e in endpoints)
    model_items = "".join(
        f"<li><b>{html.escape(m['name'])}</b> ({html.escape(m['type'])}; labels: "
        f"{html.escape(', '.join(m.get('labels', [])))}) - {html.escape(m.get('description', ''))}</li>"
        for m in models
    )
    page = (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>ClaraAWS reference AIAA server</title></head>"
        "<body><h1>ClaraAWS reference AIAA server</h1>"
        "<p>A local, CPU-only stand-in for an NVIDIA Clara AIAA server, for tests, demos and offline use. "
        "Its models are classical algorithms, not trained networks, and not for clinical use.</p>"
        f"<h2>Endpoints</h2><ul>{endpoint_items}</ul><h2>Models</h2><ul>{model_items}</ul></body></html>"
    )
    return Response(200, "text/html; charset=utf-8", page.encode("utf-8"))
