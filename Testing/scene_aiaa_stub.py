"""A tiny AIAA server on 127.0.0.1 whose answers are odd on purpose, for the scene logic tests.

Its one segmentation model thresholds the image it receives (value 1 above ``LOW_HU``, 2 above
``HIGH_HU``) and then, depending on ``server.mode``, answers on the input grid, on a cropped grid, on a
grid with other spacing, without geometry, with HTTP 500, or with a broken body. The expected labels
for any input are ``threshold_labels(volume)``, so tests can predict every answer exactly.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ClaraAWSLib.core.geometry import ImageGrid, Volume, resample_labels_to_grid
from loopback_servers import read_request_body
from ClaraAWSLib.core.imageio import decode_image, encode_volume
from ClaraAWSLib.core.multipart import parse_multipart

LOW_HU, HIGH_HU = 60, 140
MODELS = [
    {"name": "odd_seg", "type": "segmentation", "labels": ["liver", "spleen"], "description": "threshold"},
    {"name": "odd_grow", "type": "deepgrow", "labels": ["region"], "description": "threshold", "deepgrow": "3D"},
]
#: Box the "cropped" and "crop_param" modes use: [[i0, i1], [j0, j1], [k0, k1]], end exclusive.
CROP_BOX = [[10, 60], [20, 70], [5, 25]]


def threshold_labels(volume: Volume) -> np.ndarray:
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[volume.array > LOW_HU] = 1
    labels[volume.array > HIGH_HU] = 2
    return labels


def cropped(volume: Volume, box=CROP_BOX) -> Volume:
    (i0, i1), (j0, j1), (k0, k1) = box
    origin = volume.grid.ijk_to_lps() @ np.array([i0, j0, k0, 1.0])
    grid = ImageGrid((i1 - i0, j1 - j0, k1 - k0), volume.grid.spacing, tuple(origin[:3]), volume.grid.direction)
    return Volume(np.ascontiguousarray(volume.array[k0:k1, j0:j1, i0:i1]), grid)


def coarser(volume: Volume) -> Volume:
    grid = volume.grid
    size = tuple(max(1, int(round(n / 1.5))) for n in grid.size)
    other = ImageGrid(size, tuple(s * 1.5 for s in grid.spacing), grid.origin, grid.direction)
    return resample_labels_to_grid(volume, other)


def _multipart(params: Dict[str, Any], file: Optional[Tuple[str, bytes]]) -> Tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks = [
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n"
        f"Content-Type: application/json\r\n\r\n{json.dumps(params)}\r\n".encode()
    ]
    if file is not None:
        name, data = file
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so after stop() no kept-alive connection still answers.
    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:
        pass

    @property
    def stub(self) -> "OddAIAAServer":
        return self.server.stub  # type: ignore[attr-defined]

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _body_parts(self):
        body = read_request_body(self)
        self.stub.bodies.append(body)
        return parse_multipart(self.headers.get("Content-Type", ""), body)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if urlsplit(self.path).path.rstrip("/") == "/v1/models":
            self._json(200, MODELS)
        else:
            self._json(404, {"error": {"message": ["not found"], "type": "NotFound"}})

    def do_DELETE(self) -> None:  # noqa: N802
        session_id = urlsplit(self.path).path.rstrip("/").split("/")[-1]
        self.stub.sessions.pop(session_id, None)
        self._json(200, {})

    def do_PUT(self) -> None:  # noqa: N802
        parts = self._body_parts()
        file = next(part for part in parts if part.filename)
        session_id = uuid.uuid4().hex
        self.stub.sessions[session_id] = decode_image(file.data, file.filename)
        self.stub.uploads += 1
        self._json(200, {"session_id": session_id})

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        parts = self._body_parts()
        files = [part for part in parts if part.filename]
        params = json.loads(next((p.data for p in parts if p.name == "params"), b"{}") or b"{}")
        self.stub.requests.append({"path": url.path, "query": query, "params": params, "had_file": bool(files),
                                   "filenames": [part.filename for part in files]})
        if "session_id" in query:
            volume = self.stub.sessions.get(query["session_id"])
            if volume is None:
                self._json(440, {"error": {"message": ["session expired"], "type": "SessionExpired"}})
                return
        else:
            volume = decode_image(files[0].data, files[0].filename)
        self._answer(volume, params)

    def _answer(self, volume: Volume, params: Dict[str, Any]) -> None:
        mode = self.stub.mode
        labels = Volume(threshold_labels(volume), volume.grid)
        if mode == "status500":
            self._json(500, {"error": {"message": ["CUDA out of memory"], "type": "RuntimeError"}, "success": False})
            return
        if mode == "malformed":
            self._send(200, b"--x\r\nthis is not multipart", "multipart/form-data; boundary=nothere")
            return
        if mode == "no_file":
            body, content_type = _multipart({"note": "no image"}, None)
            self._send(200, body, content_type)
            return
        result_params: Dict[str, Any] = {}
        if mode == "cropped":
            labels = cropped(labels)
        elif mode == "coarser":
            labels = coarser(labels)
        elif mode == "no_geometry":
            small = cropped(labels)
            labels = Volume(small.array, ImageGrid(small.grid.size, (1, 1, 1), (0, 0, 0)))
        elif mode == "crop_param":
            labels = Volume(np.ones_like(labels.array), labels.grid)  # only the box is meaningful
            result_params["crop"] = [[low, high - 1] for low, high in CROP_BOX]  # inclusive ends on the wire
        encoded = encode_volume(labels)
        body, content_type = _multipart(result_params, ("result" + encoded.suffix, encoded.data))
        self._send(200, body, content_type)


class OddAIAAServer:
    def __init__(self, mode: str = "exact") -> None:
        self.mode = mode
        self.requests: List[Dict[str, Any]] = []
        self.sessions: Dict[str, Volume] = {}
        self.bodies: List[bytes] = []
        self.uploads = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.stub = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> "OddAIAAServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "OddAIAAServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
