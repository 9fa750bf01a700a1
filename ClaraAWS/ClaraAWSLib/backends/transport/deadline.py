"""An overall deadline per request, and cancel that stops a request at once.

Connect and read timeouts bound each wait for a byte, not a request: a proxy that trickles one byte
per second never trips them. ``DeadlineAdapter`` therefore remembers the connection each request is
using on this thread, and a timer shuts that socket down when the request's deadline passes, so the
blocked read returns at once and the client can say what happened.
"""

from __future__ import annotations

import math
import socket
import threading
from typing import Optional

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ...core.errors import InputError

_current = threading.local()


class _Watch:
    """The connections one request used on this thread; ``expired`` once the timer fired."""

    def __init__(self) -> None:
        self.connections: list = []
        self.expired = False
        self._lock = threading.Lock()

    def add(self, connection) -> None:
        with self._lock:
            self.connections.append(connection)
            expired = self.expired
        if expired:
            _shut(connection)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            connections = list(self.connections)
        for connection in connections:
            _shut(connection)


def _shut(connection) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: nothing is waiting on it


class _WatchedRequest:
    # putrequest runs for every request, also on a reused keep-alive connection, in the calling thread.
    def putrequest(self, *args, **kwargs):
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.add(self)
        return super().putrequest(*args, **kwargs)


class _WatchedHTTPConnection(_WatchedRequest, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedRequest, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


def _watch_pools(manager):
    manager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
    return manager


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections a ``Deadline`` can cut."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, *args, **kwargs):
        return _watch_pools(super().proxy_manager_for(*args, **kwargs))


class Deadline:
    """``with Deadline(seconds, cancel):`` cuts this thread's request connections when ``seconds`` have passed
    or as soon as ``cancel`` (anything with ``is_set()``) is set, so a cancelled request stops waiting at once
    instead of sitting in a read timeout of many minutes."""

    #: How often a cancel flag is looked at while a request waits.
    CANCEL_POLL_SECONDS = 0.1

    def __init__(self, seconds: Optional[float], cancel=None) -> None:
        self.seconds = seconds
        self._cancel = cancel
        self._watch = _Watch()
        self._timer: Optional[threading.Timer] = None
        self._done = threading.Event()
        self.cancelled = False

    @property
    def expired(self) -> bool:
        return self._watch.expired and not self.cancelled

    def __enter__(self) -> "Deadline":
        _current.watch = self._watch
        if self.seconds is not None:
            self._timer = threading.Timer(self.seconds, self._watch.expire)
            self._timer.daemon = True
            self._timer.start()
        if self._cancel is not None:
            threading.Thread(target=self._watch_cancel, name="ClaraAWS-cancel-watch", daemon=True).start()
        return self

    def _watch_cancel(self) -> None:
        while not self._done.wait(self.CANCEL_POLL_SECONDS):
            if self._cancel.is_set():
                self.cancelled = True
                self._watch.expire()
                return

    def __exit__(self, *exc_info) -> None:
        _current.watch = None
        self._done.set()
        if self._timer is not None:
            self._timer.cancel()


def positive_seconds(value, what: str) -> float:
    """``value`` as a finite, positive number of seconds, or one InputError naming ``what``."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InputError(f"The {what} {value!r} is not a number of seconds; give e.g. 30.") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise InputError(f"The {what} must be a positive, finite number of seconds, not {value!r}; give e.g. 30.")
    return seconds
