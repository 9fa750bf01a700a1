"""Hostile HTTP servers on 127.0.0.1: redirects elsewhere, trickles, compression bombs, lying headers.

Like ``loopback_servers.MisbehavingServer``, ``HostileServer`` picks its behaviour from the first path
segment, which the client sees as a path prefix (``http://127.0.0.1:PORT/trickle``). Every request is
recorded (method, path, headers) so a test can check what reached which server. ``elsewhere`` is the
origin "redirect-away" points at: another ``HostileServer`` on another port, i.e. another origin.
"""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import struct
import threading
import time
from typing import Dict, List, NamedTuple, Optional
from urllib.parse import urlsplit

import numpy as np

from loopback_servers import LoopbackServer, _QuietHandler

MODELS = [{"name": "m", "type": "segmentation", "labels": ["organ"], "description": "hostile"}]
HOSTILE_SESSION_ID = "../../v1/models?x=1#"


class Seen(NamedTuple):
    method: str
    path: str
    headers: Dict[str, str]


def nifti_header(size, *, datatype: int = 2, bitpix: int = 8) -> bytes:
    """A minimal NIfTI-1 header (identity geometry) claiming ``size`` voxels, written independently of ClaraAWSLib."""
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *size, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, datatype, bitpix)
    struct.pack_into("<8f", header, 76, 1.0, 1.0, 1.0, 1.0, 0, 0, 0, 0)
    struct.pack_into("<f", header, 108, 352.0)
    struct.pack_into("<ff", header, 112, 1.0, 0.0)
    struct.pack_into("<hh", header, 252, 0, 1)  # sform only
    struct.pack_into("<12f", header, 280, -1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1, 0)
    header[344:348] = b"n+1\x00"
    return bytes(header)


def gzip_of_zeros(header: bytes, zero_bytes: int) -> bytes:
    """``header`` followed by ``zero_bytes`` zeros, gzipped in pieces (so the test never holds them whole)."""
    import io

    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6, mtime=0) as stream:
        stream.write(header)
        block = bytes(1 << 20)
        left = zero_bytes
        while left > 0:
            stream.write(block[: min(left, len(block))])
            left -= len(block)
    return buffer.getvalue()


def multipart_with_file(data: bytes, filename: str = "result.nii.gz") -> bytes:
    return (
        b'--b\r\nContent-Disposition: form-data; name="params"\r\n\r\n{}\r\n'
        + f'--b\r\nContent-Disposition: form-data; name="result"; filename="{filename}"\r\n\r\n'.encode()
        + data
        + b"\r\n--b--\r\n"
    )


class _HostileHandler(_QuietHandler):
    def handle_any(self) -> None:
        owner = self.server.owner
        owner.seen.append(Seen(self.command, self.path, {k: v for k, v in self.headers.items()}))
        try:
            self.read_body()
        except OSError:
            return
        url = urlsplit(self.path)
        segments = url.path.strip("/").split("/")
        behaviour, rest = segments[0], "/" + "/".join(segments[1:])
        getattr(self, "do_" + behaviour.replace("-", "_"), self.not_found)(rest, url)

    do_GET = do_POST = do_PUT = do_DELETE = handle_any

    def not_found(self, rest, url) -> None:
        self.answer(404, b"no such behaviour", "text/plain")

    def json(self, value, status: int = 200) -> None:
        self.answer(status, json.dumps(value).encode(), "application/json")

    # --- an honest server, to be redirected to -----------------------------------------------
    def do_honest(self, rest, url) -> None:
        if rest.startswith("/v1/models"):
            self.json([{"name": "elsewhere-model", "type": "segmentation", "labels": ["x"]}])
        else:
            self.json({"session_id": "abc"} if self.command == "PUT" else {})

    # --- redirects ------------------------------------------------------------------------
    def do_redirect_away(self, rest, url) -> None:
        status = 307 if self.command in ("POST", "PUT") else 302
        query = f"?{url.query}" if url.query else ""
        self.answer(status, b"", "text/plain", {"Location": f"{self.server.owner.elsewhere}/honest{rest}{query}"})

    def do_redirect_same(self, rest, url) -> None:
        """/v1/models -> /v1/models/ on the same origin, as some proxies do."""
        if url.path.endswith("/"):
            self.json(MODELS)
        else:
            query = f"?{url.query}" if url.query else ""
            self.answer(301, b"", "text/plain", {"Location": f"/redirect-same{rest}/{query}"})

    def do_redirect_loop(self, rest, url) -> None:
        self.answer(302, b"", "text/plain", {"Location": url.path})

    def do_redirect_post_302(self, rest, url) -> None:
        if self.command == "GET":
            self.json(MODELS)
        else:
            self.answer(302, b"", "text/plain", {"Location": "/redirect-post-302/v1/segmentation-moved"})

    # --- slow ----------------------------------------------------------------------------
    def do_silent(self, rest, url) -> None:
        """Reads the request and never answers, like an inference that takes for ever behind a proxy."""
        self.server.owner.silence.wait(60)

    def do_trickle(self, rest, url) -> None:
        """Headers at once, then one byte of body every 0.2 s: no single read ever waits long."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self._trickle(b" " * 100000)

    def do_trickle_headers(self, rest, url) -> None:
        self._trickle(b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 100000)

    def _trickle(self, data: bytes) -> None:
        try:
            for index in range(len(data)):
                self.wfile.write(data[index : index + 1])
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            self.close_connection = True  # the client gave up, as it should

    # --- lying bodies ---------------------------------------------------------------------
    #: Content-Length values by name (``n`` is the body's real length), for /content-length/NAME.
    CONTENT_LENGTHS = {
        "abc": lambda n: "abc",
        "negative": lambda n: "-1",
        "plus": lambda n: f"+{n}",
        "hex": lambda n: hex(n),
        "disagreeing": lambda n: f"{n}, {n + 5}",
        "empty": lambda n: "",
        "repeated": lambda n: f"{n}, {n}",  # valid: one value, repeated (RFC 9110 §8.6)
        "exact": lambda n: str(n),
        "huge": lambda n: "1" + "0" * 30,  # digits only, so valid framing, but 10^30 bytes
        "fullwidth": lambda n: str(n).translate({ord(d): 0xFF10 + int(d) for d in "0123456789"}).encode().decode(
            "latin-1"),  # UTF-8 bytes of fullwidth digits ("４２"), sent as they are
    }

    def do_content_length(self, rest, url) -> None:
        """The model list with the Content-Length named by the next path segment, then the connection closes."""
        body = json.dumps(MODELS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", self.CONTENT_LENGTHS[rest.split("/")[1]](len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def do_bad_chunk(self, rest, url) -> None:
        """A chunked answer whose first chunk size is not hexadecimal."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"zz\r\n[]\r\n0\r\n\r\n")
        self.close_connection = True

    def do_cut_json(self, rest, url) -> None:
        """No Content-Length: the body ends when the connection closes, here in the middle of the JSON."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(json.dumps(MODELS).encode()[:25])
        self.close_connection = True

    def do_labels_5(self, rest, url) -> None:
        self.json([{"name": "m", "type": "segmentation", "labels": 5}])

    def do_name_123(self, rest, url) -> None:
        self.json([{"name": 123, "type": "segmentation", "labels": ["x"]}])

    def do_flood(self, rest, url) -> None:
        """A JSON answer that never ends: 1 MB pieces of spaces, chunked."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        piece = b" " * (1 << 20)
        try:
            for _ in range(200):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        except OSError:
            self.close_connection = True

    # --- words a terminal should not take as they come -------------------------------------
    def do_error_text(self, rest, url) -> None:
        """An AIAA error answer whose message is ``owner.error_message``."""
        self.json({"error": {"message": [self.server.owner.error_message], "type": "Error"}}, status=500)

    def do_echo_auth(self, rest, url) -> None:
        """A 400 that repeats the request's credentials, as careless servers and proxies do."""
        words = f"bad auth {self.headers.get('Authorization')} token {self.headers.get('X-Token')}"
        self.json({"error": {"message": [words]}}, status=400)

    def do_redirect_to(self, rest, url) -> None:
        """A redirect to ``owner.location``, written as it is (a URL that is none, escape codes)."""
        self.send_response(302)
        self.send_header("Location", self.server.owner.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_model_list(self, rest, url) -> None:
        """``owner.models``, the test's model list."""
        self.json(self.server.owner.models)

    def do_deep_json(self, rest, url) -> None:
        self.answer(200, b"[" * 100_000 + b"]" * 100_000, "application/json")

    def do_raw(self, rest, url) -> None:
        """``owner.raw_answer`` bytes in place of an HTTP answer, then the connection closes."""
        self.wfile.write(self.server.owner.raw_answer)
        self.close_connection = True

    # --- results --------------------------------------------------------------------------
    def _result(self, data: bytes, filename: str = "result.nii.gz") -> None:
        if self.command == "GET":
            self.json(MODELS[0])
        else:
            self.answer(200, multipart_with_file(data, filename), "multipart/form-data; boundary=b")

    def do_bomb_claims_huge(self, rest, url) -> None:
        """A 2048^3 grid in a few kilobytes: refused from the header, before inflating."""
        self._result(gzip_of_zeros(nifti_header((2048, 2048, 2048)), 1 << 20))

    def do_bomb_inflates(self, rest, url) -> None:
        """The header claims the input's grid, but 64 MB of zeros follow its voxels."""
        size = self.server.owner.claimed_size
        self._result(gzip_of_zeros(nifti_header(size), int(np.prod(size)) + (64 << 20)))

    def do_bomb_not_nifti(self, rest, url) -> None:
        """A gzip stream that is no NIfTI at all and inflates to 64 MB."""
        self._result(gzip_of_zeros(b"", 64 << 20), "result.nii.gz")

    def do_nrrd_huge(self, rest, url) -> None:
        header = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4096 4096 4096\nencoding: gzip\n\n"
        self._result(header + gzip.compress(bytes(1 << 16)), "result.nrrd")

    def do_wrong_grid(self, rest, url) -> None:
        """A plain NIfTI whose header claims more voxels than it carries."""
        self._result(nifti_header((64, 64, 64)) + bytes(1000), "result.nii")

    def do_scripted_result(self, rest, url) -> None:
        """Whatever result file the test put in ``owner.result_file`` as (bytes, file name)."""
        self._result(*self.server.owner.result_file)

    # --- sessions -------------------------------------------------------------------------
    def do_hostile_session(self, rest, url) -> None:
        if self.command == "PUT":
            self.json({"session_id": HOSTILE_SESSION_ID})
        else:
            self.json(MODELS if rest.startswith("/v1/models") else {})

    def do_session_rejected(self, rest, url) -> None:
        if self.command == "PUT":
            self.json({"session_id": f"s{len(self.server.owner.seen)}"})
        elif self.command == "GET":
            self.json(MODELS[0])
        else:
            self.json({"error": {"message": ["session expired"]}}, status=440)


class HostileServer(LoopbackServer):
    def __init__(self, tls_context: Optional[ssl.SSLContext] = None) -> None:
        super().__init__(_HostileHandler)
        self.seen: List[Seen] = []
        self.silence = threading.Event()  # set to let silent answers end
        self.elsewhere = ""
        self.claimed_size = (6, 5, 4)
        self.result_file = (b"", "result.nii.gz")
        self.error_message = ""
        self.models = MODELS
        self.location = ""
        self.raw_answer = b""
        self.scheme = "http"
        if tls_context is not None:
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
