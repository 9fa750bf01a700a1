"""HTTP plumbing of the reference server: routing, request bodies, errors, temp files, keep-alive."""

from __future__ import annotations

import logging
import ssl
import time
from http.server import BaseHTTPRequestHandler
from typing import Callable, Dict, Optional
from urllib.parse import parse_qs, urlsplit

from . import endpoints
from .bodies import BodyReader, declared_content_length, too_large_message
from .endpoints import Request, ServerContext
from .problems import BadRequest, MethodNotAllowed, NotFound, PayloadTooLarge, ServerProblem
from .responses import Response, problem_response

log = logging.getLogger("ClaraAWSLib.server")

Handler = Callable[[ServerContext, Request], Response]

#: After answering an error early, read and discard at most this much of the rest of the body so the
#: client sees the answer rather than a reset connection.
LINGER_MAX_BYTES = 4 << 30
LINGER_MAX_SECONDS = 60.0

ROUTES: Dict[str, Dict[str, Handler]] = {
    "/": {"GET": endpoints.docs},
    "/docs": {"GET": endpoints.docs},
    "/v1/models": {"GET": endpoints.list_models},
    "/session": {"PUT": endpoints.create_session, "POST": endpoints.create_session},
    **{f"/v1/{name}": {"POST": endpoints.run_model(name)} for name in endpoints.ENDPOINT_MODEL_TYPES},
}
SESSION_ROUTES: Dict[str, Handler] = {"GET": endpoints.session_info, "DELETE": endpoints.delete_session}


def find_route(method: str, path: str) -> Handler:
    """The handler for ``method`` and ``path``; NotFound or MethodNotAllowed otherwise."""
    normalised = path.rstrip("/") or "/"
    if normalised in ROUTES:
        methods = ROUTES[normalised]
    elif path.startswith("/session/"):
        methods = SESSION_ROUTES
    else:
        raise NotFound(f"There is no endpoint {path!r} on this server; GET /docs/ lists the endpoints.")
    lookup = "GET" if method == "HEAD" else method
    if lookup not in methods:
        raise MethodNotAllowed(f"{path} does not accept {method}; it accepts {', '.join(sorted(methods))}.")
    return methods[lookup]


class AIAARequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response has a Content-Length
    server_version = "ClaraAWS-reference-AIAA/1"
    timeout = 300  # seconds an idle keep-alive connection (or a stalled upload) may wait
    # Headers and body leave in separate writes; with Nagle's algorithm the body would wait for the
    # client's delayed ACK of the headers, adding ~40 ms to every small answer (each deepgrow click).
    disable_nagle_algorithm = True

    # BaseHTTPRequestHandler calls do_<METHOD>.
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    @property
    def context(self) -> ServerContext:
        return self.server.context  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            # The listening socket defers the TLS handshake to this thread, so a slow client cannot
            # block the accept loop.
            self.request.do_handshake()

    def handle_expect_100(self) -> bool:
        """Refuse an announced oversized body before the client sends it (curl announces large uploads)."""
        limit = self.context.max_upload_bytes
        try:
            declared = declared_content_length(self.headers.get_all("Content-Length"))
            if limit is not None and declared is not None and declared > limit:
                raise PayloadTooLarge(too_large_message(declared, limit))
        except ServerProblem as problem:  # answered before the body, which is never read: the connection closes
            self.context.stats.count_request(urlsplit(self.path).path)
            problem_response(problem).write_to(self, close=True)
            return False
        return super().handle_expect_100()

    def _dispatch(self, method: str) -> None:
        context = self.context
        url = urlsplit(self.path)
        context.stats.count_request(url.path)
        request: Optional[Request] = None
        body: Optional[BodyReader] = None
        try:
            body = self._body_reader()
            request = Request(
                method=method,
                path=url.path,
                query=parse_qs(url.query, keep_blank_values=True),
                content_type=self.headers.get("Content-Type"),
                body=body,
                temp_root=context.temp_root,
            )
            body.check_declared_size()  # answered before reading; the body is then skipped
            handler = find_route(method, url.path)
            started = time.perf_counter()
            response = handler(context, request)
            ready = time.perf_counter()
            context.stats.add_processing_seconds(url.path, ready - started)
            context.stats.add_compute_seconds(url.path, ready - max(started, body.finished_at or started))
            if not body.finished:
                # The route did not need the body (a GET with a body, say); skip it to keep the connection usable.
                body.drain(max_bytes=LINGER_MAX_BYTES, max_seconds=LINGER_MAX_SECONDS)
            response.write_to(self, head_only=method == "HEAD", close=not body.finished or self.close_connection)
        except ServerProblem as problem:
            self._remove_temp_files(request)  # before answering, so a client never sees leftovers
            self._answer_problem(problem, body, method)
        except (ConnectionError, TimeoutError, ssl.SSLError):
            self.close_connection = True
        except Exception:  # a bug or a model failure: report it as AIAA does, with status 500
            log.exception("Request %s %s failed", method, url.path)
            self._remove_temp_files(request)
            self._answer_problem(ServerProblem("The server failed to process the request; see its log."), body, method)
        finally:
            self._remove_temp_files(request)

    @staticmethod
    def _remove_temp_files(request: Optional[Request]) -> None:
        if request is not None:
            request.remove_temp_dir()

    def _body_reader(self) -> BodyReader:
        codings = [coding.strip().lower() for value in self.headers.get_all("Transfer-Encoding") or ()
                   for coding in value.split(",") if coding.strip()]
        chunked = codings == ["chunked"]
        if codings and not chunked:
            self.close_connection = True
            raise BadRequest(f"Transfer-Encoding {', '.join(codings)!r} is not supported; send chunked or a Content-Length.")
        try:
            length = declared_content_length(self.headers.get_all("Content-Length"))
        except BadRequest:
            self.close_connection = True  # the end of the body is unknown: nothing after it can be read as a request
            raise
        if chunked and length is not None:
            # RFC 9112 §6.1: the chunked coding frames the body, and the connection closes after the answer,
            # since a proxy before this server may have framed it by the Content-Length.
            self.close_connection = True
            length = None
        return BodyReader(
            self.rfile,
            content_length=length,
            chunked=chunked,
            max_bytes=self.context.max_upload_bytes,
            on_bytes=self.context.stats.add_bytes,
        )

    def _answer_problem(self, problem: ServerProblem, body: Optional[BodyReader], method: str) -> None:
        unread = body is not None and not body.finished
        try:
            problem_response(problem).write_to(self, close=unread or self.close_connection, head_only=method == "HEAD")
            if unread:
                body.drain(max_bytes=LINGER_MAX_BYTES, max_seconds=LINGER_MAX_SECONDS)
        except (ConnectionError, TimeoutError, ssl.SSLError):
            self.close_connection = True

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        if self.context.log_requests:
            super().log_message(format, *args)

