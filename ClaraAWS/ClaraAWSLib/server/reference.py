"""``ReferenceServer``: the local AIAA-compatible server in a background thread, and ``clara-aws serve``."""

from __future__ import annotations

import shutil
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Optional, Sequence, TextIO

from .app import AIAARequestHandler
from .endpoints import ServerContext
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
    server's limit in seconds; ``max_upload_bytes`` makes larger bodies fail with 413 (None: no limit).
    ``ssl_context`` (a server-side ``ssl.SSLContext``) serves HTTPS instead of HTTP.
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
    ) -> None:
        self.host = host
        self._requested_port = int(port)
        self._ssl_context = ssl_context
        self.stats = ServerStats()
        self.sessions = SessionStore(default_expiry=session_expiry)
        self.models = ModelRegistry(models)
        self.max_upload_bytes = max_upload_bytes
        self.log_requests = log_requests
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


def serve_forever_cli(
    host: str = "127.0.0.1",
    port: int = 5000,
    session_expiry: int = 3600,
    max_upload_mb: Optional[float] = None,
    *,
    out: TextIO = sys.stdout,
) -> int:
    """Run the reference server in the foreground until Ctrl-C (``clara-aws serve``); returns an exit code."""
    max_bytes = int(max_upload_mb * 1024 * 1024) if max_upload_mb else None
    server = ReferenceServer(host, port, session_expiry=session_expiry, max_upload_bytes=max_bytes, log_requests=True)
    try:
        server.start()
    except OSError as exc:
        print(f"Cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port.", file=sys.stderr)
        return 2
    print(f"ClaraAWS reference AIAA server listening on {server.url}  (health check: {server.url}/docs/)", file=out)
    print("Models (classical CPU algorithms, not trained networks):", file=out)
    for info in server.models.infos():
        print(f"  {info['name']:<26} {info['type']:<13} labels: {', '.join(info['labels'])}", file=out)
    print("Press Ctrl-C to stop.", file=out, flush=True)
    try:
        while server._thread is not None and server._thread.is_alive():
            server._thread.join(0.5)
    except KeyboardInterrupt:
        print("\nStopping.", file=out, flush=True)
    finally:
        server.stop()
    return 0
