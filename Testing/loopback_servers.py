"""Small HTTP servers on 127.0.0.1 for client tests: a misbehaving proxy and an AIAA server of another make.

``MisbehavingServer`` chooses its behaviour from the first path segment, which the client sees as a
URL path prefix: ``http://127.0.0.1:PORT/status-413`` answers every request with an HTML 413, like a
proxy would, ``/reset`` drops the connection, ``/garbage`` sends nonsense, and so on.

``OtherAIAAServer`` follows docs/aiaa-protocol.md but makes different choices than our reference
server where the protocol allows: the result part is called ``file``, results come as NRRD or plain
NIfTI, the params part comes after the file, line breaks inside JSON. A client that passes against both
does not depend on one server's details.
"""

from __future__ import annotations

import json
import re
import socket
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

import numpy as np
import SimpleITK as sitk


def read_request_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The whole request body, also a chunked one: left unread, a streamed upload's bytes would be taken for
    the next request on the keep-alive connection (and answered with an HTML 400 that the client then reads
    as the answer to its next request)."""
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline().strip():  # trailers, then the blank line
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()  # the CRLF after each chunk
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # tests read results, not access logs
        pass

    def read_body(self) -> bytes:
        return read_request_body(self)

    def answer(self, status: int, body: bytes, content_type: str, extra: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class LoopbackServer:
    def __init__(self, handler) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        # A short poll interval lets shutdown() return at once instead of after half a second.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self):
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class TcpForwarder:
    """A TCP port on 127.0.0.1 that forwards to another loopback port: what a load balancer in front of a
    server is to the client. ``stop()`` closes it and every connection through it (the server "goes away")."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self.target = (parts.hostname, parts.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.connections: List[socket.socket] = []
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def start(self) -> "TcpForwarder":
        self.thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self.connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not on Linux
        except OSError:
            pass
        self.listener.close()
        with self._lock:
            for connection in self.connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                    connection.close()
                except OSError:
                    pass

    def __enter__(self) -> "TcpForwarder":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- misbehaving -----------------------------------------------------------------------------


class _MisbehavingHandler(_QuietHandler):
    def handle_any(self) -> None:
        self.read_body_safely()
        behaviour = urlsplit(self.path).path.strip("/").split("/")[0]
        self.server.owner.paths.append(self.path)
        match = re.fullmatch(r"status-(\d{3})", behaviour)
        if match:
            status = int(match.group(1))
            page = f"<html><head><title>{status}</title></head><body><h1>{status}</h1><hr>nginx</body></html>".encode()
            self.answer(status, page, "text/html")
        elif behaviour == "aiaa-error":
            error = {"error": {"message": ["CUDA out of memory while running the model"], "type": "RuntimeError"}, "success": False}
            self.answer(500, json.dumps(error).encode(), "application/json")
        elif behaviour == "reset":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif behaviour == "garbage":
            self.answer(200, b"\x00\x01 this is not what you asked for", "text/html")
        elif behaviour == "not-json":
            self.answer(200, b"<html>Welcome to nginx!</html>", "application/json")
        elif behaviour == "multipart-no-file":
            body = b'--b\r\nContent-Disposition: form-data; name="params"\r\n\r\n{}\r\n--b--\r\n'
            self.answer(200, body, "multipart/form-data; boundary=b")
        elif behaviour == "multipart-truncated":
            body = b'--b\r\nContent-Disposition: form-data; name="params"\r\n\r\n{}\r\n--b\r\nContent-Disposition: form-data; name="x"; filename="r.nii.gz"\r\n\r\n\x1f\x8b\x08'
            self.answer(200, body, "multipart/form-data; boundary=b")
        elif behaviour == "multipart-bad-image":
            body = b'--b\r\nContent-Disposition: form-data; name="x"; filename="r.nii.gz"\r\n\r\nnot an image at all\r\n--b--\r\n'
            self.answer(200, body, "multipart/form-data; boundary=b")
        elif behaviour == "far-away-result" and self.command == "GET":
            self.answer(200, json.dumps({"name": "m", "type": "segmentation", "labels": ["x"]}).encode(), "application/json")
        elif behaviour == "far-away-result":  # a label image whose header puts it 5 m from the patient
            from ClaraAWSLib.core.geometry import ImageGrid, Volume
            from ClaraAWSLib.core.imageio import encode_volume

            far = Volume(np.ones((4, 4, 4), np.uint8), ImageGrid((4, 4, 4), (1, 1, 1), (5000.0, 0.0, 0.0)))
            body = (b'--b\r\nContent-Disposition: form-data; name="result"; filename="r.nii.gz"\r\n\r\n'
                    + encode_volume(far).data + b"\r\n--b--\r\n")
            self.answer(200, body, "multipart/form-data; boundary=b")
        elif behaviour == "short-body":  # announces more than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Type", "multipart/form-data; boundary=b")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"--b\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n{}")
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif behaviour == "slow":
            time.sleep(3)
            self.answer(200, b"[]", "application/json")
        elif behaviour == "require-auth":
            if self.headers.get("Authorization") == "Bearer sesame":
                self.answer(200, json.dumps([{"name": "m", "type": "segmentation", "labels": ["x"]}]).encode(), "application/json")
            else:
                self.answer(401, b"<html>401 Authorization Required</html>", "text/html")
        else:
            self.answer(404, b"<html>404 Not Found</html>", "text/html")

    def read_body_safely(self) -> None:
        try:
            self.read_body()
        except OSError:
            pass

    do_GET = do_POST = do_PUT = do_DELETE = handle_any


class MisbehavingServer(LoopbackServer):
    def __init__(self) -> None:
        super().__init__(_MisbehavingHandler)
        self.paths: List[str] = []


# --- an AIAA server of another make ----------------------------------------------------------


def _parse_form(content_type: str, body: bytes) -> Tuple[Dict[str, str], Optional[Tuple[str, bytes]]]:
    """Minimal form parser for test traffic: text fields, and the one file part."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type).group(1).encode()
    fields, file = {}, None
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk[2:].partition(b"\r\n\r\n")
        content = content[:-2]
        name = re.search(rb'name="([^"]*)"', head).group(1).decode()
        filename = re.search(rb'filename="([^"]*)"', head)
        if filename:
            file = (filename.group(1).decode(), content)
        else:
            fields[name] = content.decode()
    return fields, file


class _OtherAIAAHandler(_QuietHandler):
    def parse_request(self) -> bool:
        ok = super().parse_request()
        owner = self.server.owner
        owner.cookies_received.append(self.headers.get("Cookie"))
        if ok and owner.prefix:
            if not self.path.startswith(owner.prefix + "/"):
                self.close_connection = True
                self.answer(404, b"not under the prefix", "text/plain")
                return False
            self.path = self.path[len(owner.prefix) :]
        return ok

    def answer(self, status, body, content_type, extra=None) -> None:
        # Like an AWS load balancer with stickiness: a cookie the client should send back.
        super().answer(status, body, content_type, {"Set-Cookie": "AWSALB=sticky-target-1; Path=/", **(extra or {})})

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path.rstrip("/") == "/v1/models":
            models = [
                {"name": "other_threshold", "type": "segmentation", "labels": ["bright", "brighter"], "description": "threshold"},
                {"name": "other_box", "type": "annotation", "labels": ["box"], "description": "box of the points"},
            ]
            self.answer(200, json.dumps(models).encode(), "application/json")
        else:
            self.answer(404, b"no", "text/plain")

    def do_PUT(self) -> None:
        fields, file = _parse_form(self.headers["Content-Type"], self.read_body())
        session_id = uuid.uuid4().hex
        self.server.owner.sessions[session_id] = file
        self.answer(200, json.dumps({"session_id": session_id}).encode(), "application/json")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        fields, file = _parse_form(self.headers["Content-Type"], self.read_body())
        if "session_id" in query:
            file = self.server.owner.sessions.get(query["session_id"])
            if file is None:
                self.answer(440, b'{"error": {"message": ["session expired"]}}', "application/json")
                return
        filename, data = file
        owner = self.server.owner
        owner.received_filenames.append(filename)
        with tempfile.TemporaryDirectory() as folder:
            source = Path(folder) / Path(filename).name
            source.write_bytes(data)
            image = sitk.ReadImage(str(source))
            array = sitk.GetArrayFromImage(image)
            params = json.loads(fields.get("params") or "{}")
            if url.path.endswith("/dextr3d"):
                points = np.array(params["points"])
                labels = np.zeros(array.shape, np.uint8)
                (i0, j0, k0), (i1, j1, k1) = points.min(axis=0), points.max(axis=0)
                labels[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1] = 1
            else:
                labels = (array > owner.threshold).astype(np.uint8) + (array > owner.threshold * 2).astype(np.uint8)
            result = sitk.GetImageFromArray(labels)
            result.CopyInformation(image)
            target = Path(folder) / f"out{owner.result_suffix}"
            sitk.WriteImage(result, str(target), useCompression=owner.result_suffix != ".nii")
            payload = target.read_bytes()
        boundary = "OtherServerBoundary" + uuid.uuid4().hex
        body = b"".join(
            [
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{target.name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n".encode(),
                payload,
                f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n'.encode(),
                json.dumps({"label_names": {"bright": 1, "brighter": 2}}, indent=2).encode(),
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        self.answer(200, body, f'multipart/form-data; boundary="{boundary}"')


class OtherAIAAServer(LoopbackServer):
    def __init__(self, result_suffix: str = ".nrrd", threshold: float = 100.0, prefix: str = "") -> None:
        super().__init__(_OtherAIAAHandler)
        self.prefix = prefix.rstrip("/")
        self.cookies_received: List[Optional[str]] = []
        self.result_suffix = result_suffix
        self.threshold = threshold
        self.sessions: Dict[str, Tuple[str, bytes]] = {}
        self.received_filenames: List[str] = []
