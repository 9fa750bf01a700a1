"""A load balancer in front of several servers on 127.0.0.1, as the Quick Start's application load balancer
stands in front of the ECS service's tasks: round-robin per request, or, with stickiness on, the target
named by the ``AWSALB`` cookie it set on an earlier answer (duration-based stickiness: the balancer's own
cookie, which the client only has to send back). Requests per target are counted.

Bodies are read whole (a chunked upload too) and forwarded with a Content-Length; loopback only.
"""

from __future__ import annotations

import http.client
import itertools
import threading
from collections import Counter
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Optional
from urllib.parse import urlsplit

from loopback_servers import read_request_body

COOKIE = "AWSALB"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _target(self) -> int:
        balancer = self.server.balancer
        if balancer.sticky:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
            if COOKIE in cookie and cookie[COOKIE].value.isdigit() and int(cookie[COOKIE].value) < len(balancer.targets):
                return int(cookie[COOKIE].value)
        return next(balancer.turns)

    def forward(self) -> None:
        balancer = self.server.balancer
        body = read_request_body(self)
        index = self._target()
        host, port = balancer.targets[index]
        headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(host, port, timeout=120)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            with balancer.lock:
                balancer.requests[index] += 1
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
    def __init__(self, target_urls: List[str], *, sticky: bool = False) -> None:
        self.targets = [(urlsplit(url).hostname, urlsplit(url).port) for url in target_urls]
        self.sticky = sticky
        self.turns = itertools.cycle(range(len(self.targets)))
        self.requests: Counter = Counter()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.balancer = self
        self.thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "LoadBalancer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
