"""A small fake MONAI Label server on 127.0.0.1 for faults the real one cannot be made to produce on demand.

It answers in the real server's shapes (research note monailabel-server.md): ``/info/``, sessions, and
for ``/infer/`` whatever the test set in ``infer_answer``. With ``token`` set, every path but
``/auth/token`` needs ``Authorization: Bearer <token>`` and answers 401 otherwise, as a server with
auth on does. ``redirect_info_to`` makes ``/info/`` a 307 to another origin.
"""

from __future__ import annotations

import json
from typing import List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from loopback_servers import LoopbackServer, _QuietHandler

INFO = {
    "name": "fake", "version": "0.8.5", "labels": ["spleen"],
    "models": {"seg": {"type": "segmentation", "labels": {"spleen": 1}, "dimension": 3, "description": "", "config": {}}},
    "trainers": {"seg": {"description": "", "config": {"max_epochs": 3}, "labels": {"spleen": 1}}},
    "strategies": {"random": {"description": "Random"}}, "train_stats": {}, "datastore": {"total": 0, "completed": 0},
}


class _FakeHandler(_QuietHandler):
    def _route(self) -> None:
        owner: FakeMonaiLabel = self.server.owner
        body = self.read_body()
        url = urlsplit(self.path)
        owner.requests.append((self.command, url.path, dict(self.headers), body))
        if owner.token and url.path != "/auth/token" and self.headers.get("Authorization") != f"Bearer {owner.token}":
            self.answer(401, b'{"detail":"Not authenticated"}', "application/json", {"WWW-Authenticate": "Bearer"})
            return
        if url.path == "/auth/token":
            form = parse_qs(body.decode())
            if form.get("password") == [owner.password]:
                self.answer(200, json.dumps({"access_token": owner.token, "token_type": "bearer"}).encode(), "application/json")
            else:
                self.answer(401, b'{"detail":"Invalid user credentials"}', "application/json")
        elif url.path == "/info/":
            if owner.redirect_info_to:
                self.answer(307, b"", "text/plain", {"Location": owner.redirect_info_to + "/info/"})
            else:
                self.answer(200, json.dumps(owner.info).encode(), "application/json")
        elif url.path == "/info":  # FastAPI's own trailing-slash redirect
            self.answer(307, b"", "text/plain", {"Location": "/info/"})
        elif url.path == "/session/" and self.command == "PUT":
            owner.sessions += 1
            self.answer(200, json.dumps({"session_id": f"s{owner.sessions}", "session_info": {}}).encode(), "application/json")
        elif url.path.startswith("/session/"):
            self.answer(200, b'{"name":"s1"}', "application/json")  # the session exists
        elif url.path in ("/datastore/image", "/datastore/label") and self.command == "PUT":
            image = parse_qs(url.query).get("image", [""])[0]
            self.answer(200, json.dumps({"image": image, "label": image}).encode(), "application/json")
        elif url.path == "/datastore/":
            self.answer(200, b'{"total":1,"completed":1,"label_tags":{"final":1}}', "application/json")
        elif url.path.startswith("/infer/") or url.path.startswith("/train/"):
            status, content_type, answer = owner.infer_answer
            self.answer(status, answer, content_type)
        else:
            self.answer(404, b'{"detail":"Not Found"}', "application/json")

    do_GET = do_PUT = do_POST = do_DELETE = _route


class FakeMonaiLabel(LoopbackServer):
    def __init__(self) -> None:
        super().__init__(_FakeHandler)
        self.requests: List[Tuple[str, str, dict, bytes]] = []
        self.token: Optional[str] = None
        self.password = ""
        self.redirect_info_to: Optional[str] = None
        self.sessions = 0
        self.info = json.loads(json.dumps(INFO))  # a test's own copy to change
        self.infer_answer: Tuple[int, str, bytes] = (500, "text/plain; charset=utf-8", b"Internal Server Error")
