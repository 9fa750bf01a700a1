"""``ReferenceServer``: the local AIAA-compatible server in a background thread, and ``clara-aws serve``."""

from __future__ import annotations

import ipaddress
import re
import shutil
import signal
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Optional, Sequence, TextIO

from ..core.errors import InputError, ListenError
from .app import AIAARequestHandler
from .endpoints import ServerContext
from .gpu_play import GpuPlay
from .limits import ServerLimits
from .models import Model, ModelRegistry
from .sessions import SessionStore
from .stats import ServerStats


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address, context: ServerContext, ssl_context: Optional[ssl.SSLContext]) -> None:
        self.context = context
        self._ssl_context = ssl_context
        self._connections_lock = threading.Lock()
        self._connections: set = set()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, AIAARequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host name (a DNS query); the address is all we need.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        if self._ssl_context is not None:
            # Handshakes happen in each connection's own thread (see AIAARequestHandler.setup).
            self.socket = self._ssl_context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def process_request_thread(self, request, client_address) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def handle_error(self, request, client_address) -> None:
        # Clients that vanish mid-request (or fail the TLS handshake) are routine, not errors.
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError, ssl.SSLError, OSError)):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ReferenceServer:
    """A local AIAA v1 server with classical CPU models, for tests, demos and offline use.

    ``port=0`` picks a free port; ``url`` tells which after ``start()``. ``session_expiry`` is the
    server's limit in seconds; ``max_upload_bytes`` makes larger bodies fail with 413 (None: no limit);
    ``max_image_voxels`` bounds an image once decoded (413), ``max_sessions`` and ``max_session_bytes``
    bound the sessions kept (the oldest expire first); defaults as in ``ServerLimits``.
    ``ssl_context`` (a server-side ``ssl.SSLContext``) serves HTTPS instead of HTTP.
    ``inference_delay`` makes every model run wait that many seconds first, as a GPU model's latency
    would (the built-in models answer in milliseconds, too fast to interrupt a batch between cases), and
    ``inference_slots`` bounds the model runs at once (1: one GPU's queue); see :mod:`.gpu_play`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        session_expiry: int = 3600,
        max_upload_bytes: Optional[int] = None,
        models: Optional[Sequence[Model]] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        log_requests: bool = False,
        max_image_voxels: Optional[int] = ServerLimits.max_image_voxels,
        max_sessions: Optional[int] = ServerLimits.max_sessions,
        max_session_bytes: Optional[int] = ServerLimits.max_session_bytes,
        inference_delay: float = 0.0,
        inference_slots: Optional[int] = None,
    ) -> None:
        self.host = host
        self._requested_port = int(port)
        self._ssl_context = ssl_context
        self.stats = ServerStats()
        self.sessions = SessionStore(default_expiry=session_expiry, max_sessions=max_sessions, max_bytes=max_session_bytes)
        self.models = ModelRegistry(models)
        self.max_upload_bytes = max_upload_bytes
        self.max_image_voxels = max_image_voxels
        self.log_requests = log_requests
        self.gpu = GpuPlay(delay_s=inference_delay, slots=inference_slots)
        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._temp_root: Optional[Path] = None

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "ReferenceServer":
        if self._httpd is not None:
            return self
        self._temp_root = Path(tempfile.mkdtemp(prefix="clara-aws-server-"))
        context = ServerContext(
            models=self.models,
            sessions=self.sessions,
            stats=self.stats,
            temp_root=self._temp_root,
            max_upload_bytes=self.max_upload_bytes,
            log_requests=self.log_requests,
            max_image_voxels=self.max_image_voxels,
            gpu=self.gpu,
        )
        try:
            self._httpd = _HTTPServer((self.host, self._requested_port), context, self._ssl_context)
        except BaseException:
            shutil.rmtree(self._temp_root, ignore_errors=True)
            raise
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="clara-aws-reference-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sessions.expire_all()
        if self._temp_root is not None:
            shutil.rmtree(self._temp_root, ignore_errors=True)

    def __enter__(self) -> "ReferenceServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- addresses ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("The reference server is not running; call start() first.")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def temp_root(self) -> Optional[Path]:
        """The directory holding uploads while requests run (None when stopped)."""
        return self._temp_root if self._httpd is not None else None

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @classmethod
    def with_limits(cls, host: str, port: int, limits: ServerLimits, **options) -> "ReferenceServer":
        return cls(
            host,
            port,
            session_expiry=limits.session_expiry,
            max_upload_bytes=limits.max_upload_bytes,
            max_image_voxels=limits.max_image_voxels,
            max_sessions=limits.max_sessions,
            max_session_bytes=limits.max_session_bytes,
            **options,
        )


def serve_forever_cli(
    host: str = "127.0.0.1",
    port: int = 5000,
    *,
    limits: Optional[ServerLimits] = None,
    gpu: Optional[GpuPlay] = None,
    out: TextIO = sys.stdout,
) -> int:
    """Run the reference server in the foreground until Ctrl-C or SIGTERM (``clara-aws serve``); returns 0.

    Raises InputError for an address that cannot be one and ListenError when the address is taken or
    not this machine's. The temp folder holding uploads is removed however the server stops.
    """
    if not 0 <= int(port) <= 65535:
        raise InputError(f"--port {port} is not a port number; give one from 1 to 65535, or 0 for a free one.")
    if not _could_be_host(host):
        raise InputError(f"--host {host!r} is neither an IP address nor a host name; use e.g. 127.0.0.1.")
    gpu = gpu or GpuPlay()
    server = ReferenceServer.with_limits(host, port, limits or ServerLimits(), log_requests=True,
                                         inference_delay=gpu.delay_s, inference_slots=gpu.slots)
    try:
        server.start()
    except socket.gaierror:
        raise InputError(f"--host {host!r} is not an address of this machine or a host name that resolves; use e.g. 127.0.0.1.") from None
    except (OSError, OverflowError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ListenError(f"Cannot listen on {host}:{port} ({reason}); choose another --port or --host.") from None
    previous = {}
    if threading.current_thread() is threading.main_thread():
        # SIGINT too: a shell that starts the server in the background ignores SIGINT, and Python then
        # never raises KeyboardInterrupt; the server must still stop (and clean up) on Ctrl-C or kill -INT.
        previous = {number: signal.signal(number, _interrupt) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        print(f"ClaraAWS reference AIAA server listening on {server.url}  (health check: {server.url}/docs/)", file=out)
        print("Models (classical CPU algorithms, not trained networks):", file=out)
        for info in server.models.infos():
            print(f"  {info['name']:<26} {info['type']:<13} labels: {', '.join(info['labels'])}", file=out)
        print("Press Ctrl-C to stop.", file=out, flush=True)
        while server._thread is not None and server._thread.is_alive():
            server._thread.join(0.5)
    except KeyboardInterrupt:
        print("\nStopping.", file=out, flush=True)
    finally:
        server.stop()  # removes the temp folder with any uploaded voxels
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0


_HOST_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


def _could_be_host(host: str) -> bool:
    """An IP literal, or a host name by RFC 1123 (which never looks like a dotted number): no DNS query needed to refuse."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    return bool(_HOST_NAME.fullmatch(host)) and not re.fullmatch(r"[0-9.]+", host)


def _interrupt(signum, frame) -> None:
    # SIGTERM (systemd, docker stop, kill) stops the server like Ctrl-C does, through the finally above.
    raise KeyboardInterrupt
