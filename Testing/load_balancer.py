"""A load balancer in front of several servers on 127.0.0.1, as the Quick Start's application load balancer
stands in front of the ECS service's tasks: round-robin per request over the targets in service, or, with
stickiness on, the target named by the ``AWSALB`` cookie it set on an earlier answer (duration-based
stickiness: the balancer's own cookie, which the client only has to send back).

While a task is replaced it does what an ALB does (Elastic Load Balancing's "HTTP 5XX errors" guide):
- a target that refuses or drops the forwarded request: 502 Bad Gateway, answered by the balancer;
- a target that sends nothing for ``idle_timeout`` seconds (the ALB's idle timeout, 60 s by default): 504;
- no target in service: 503 Service Unavailable;
- ``take_out(i)`` deregisters a target (no new requests; those under way finish), ``put_back(i, url)``
  registers it again, at a new address when a new task replaced it;
- ``drop_next(n)``: the next n requests lose their connection without an answer, as when the
  balancer's own node is replaced.

Counted: requests each target answered, and the answers the balancer gave itself (502, 503, 504, drops).
Bodies are read whole (a chunked upload too) and forwarded with a Content-Length; loopback only.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections import Counter
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Optional, Tuple
from urllib.parse import urlsplit

from loopback_servers import read_request_body

COOKIE = "AWSALB"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
DROPPED = "dropped"


def _address(url: str) -> Tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname != "127.0.0.1":
        raise ValueError(f"the test load balancer forwards to 127.0.0.1 only, not {parts.hostname}")
    return parts.hostname, parts.port


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _own_answer(self, status: int, reason: str) -> None:
        body = f"<html><body><h1>{status} {reason}</h1></body></html>".encode()  # what an ALB sends
        self.send_response(status, reason)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def forward(self) -> None:
        balancer: LoadBalancer = self.server.balancer
        body = read_request_body(self)
        if balancer.take_drop():
            balancer.answered_itself(DROPPED)
            return self._drop()
        index = balancer.choose(SimpleCookie(self.headers.get("Cookie", "")))
        if index is None:
            balancer.answered_itself(503)
            return self._own_answer(503, "Service Temporarily Unavailable")
        host, port = balancer.target(index)
        headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(host, port, timeout=balancer.idle_timeout)
        try:
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
            except socket.timeout:
                balancer.answered_itself(504)
                return self._own_answer(504, "Gateway Time-out")
            except (OSError, http.client.HTTPException):
                balancer.answered_itself(502)  # the target refused, reset or closed the connection
                return self._own_answer(502, "Bad Gateway")
            balancer.answered(index)
            self.send_response(answer.status, answer.reason)
            for name, value in answer.getheaders():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            if balancer.sticky:
                self.send_header("Set-Cookie", f"{COOKIE}={index}; Path=/")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            upstream.close()

    do_GET = do_POST = do_PUT = do_DELETE = forward


class LoadBalancer:
    def __init__(self, target_urls: List[str], *, sticky: bool = False, idle_timeout: float = 60.0) -> None:
        self._targets = [_address(url) for url in target_urls]
        self._in_service = [True] * len(self._targets)
        self._turn = 0
        self._drops = 0
        self.sticky = sticky
        self.idle_timeout = idle_timeout
        #: Requests each target answered, by index.
        self.requests: Counter = Counter()
        #: The balancer's own answers: 502, 503 and "dropped".
        self.own_answers: Counter = Counter()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.balancer = self
        self.thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def target(self, index: int) -> Tuple[str, int]:
        with self.lock:
            return self._targets[index]

    def choose(self, cookie: SimpleCookie) -> Optional[int]:
        with self.lock:
            if self.sticky and COOKIE in cookie and cookie[COOKIE].value.isdigit():
                index = int(cookie[COOKIE].value)
                if index < len(self._targets) and self._in_service[index]:
                    return index
            for _ in range(len(self._targets)):
                index, self._turn = self._turn, (self._turn + 1) % len(self._targets)
                if self._in_service[index]:
                    return index
            return None

    def take_drop(self) -> bool:
        with self.lock:
            if self._drops > 0:
                self._drops -= 1
                return True
            return False

    def answered(self, index: int) -> None:
        with self.lock:
            self.requests[index] += 1

    def answered_itself(self, what) -> None:
        with self.lock:
            self.own_answers[what] += 1

    def take_out(self, index: int) -> None:
        with self.lock:
            self._in_service[index] = False

    def put_back(self, index: int, url: Optional[str] = None) -> None:
        with self.lock:
            if url is not None:
                self._targets[index] = _address(url)
            self._in_service[index] = True

    def drop_next(self, count: int) -> None:
        with self.lock:
            self._drops += count

    def __enter__(self) -> "LoadBalancer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
