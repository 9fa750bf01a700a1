"""Thread-safe counters of what the reference server received, for tests and benchmarks."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Dict, List, Tuple


class ServerStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._image_uploads = 0
        self._bytes_received = 0
        self._sessions_created = 0
        self._requests: Counter = Counter()
        self._processing: List[Tuple[str, float]] = []
        self._compute: List[Tuple[str, float]] = []

    # --- recording (called by request handlers) ---------------------------------------------
    def count_request(self, path: str) -> None:
        with self._lock:
            self._requests[path] += 1

    def add_bytes(self, size: int) -> None:
        with self._lock:
            self._bytes_received += size

    def add_image_uploads(self, count: int) -> None:
        with self._lock:
            self._image_uploads += count

    def add_processing_seconds(self, path: str, seconds: float) -> None:
        """Time a route spent between reading the request line and having its answer ready."""
        with self._lock:
            self._processing.append((path, seconds))

    def add_compute_seconds(self, path: str, seconds: float) -> None:
        """Time a route spent after the request body's last byte arrived: what a client cannot hide."""
        with self._lock:
            self._compute.append((path, seconds))

    def add_session(self) -> None:
        with self._lock:
            self._sessions_created += 1

    # --- reading ------------------------------------------------------------------------------
    @property
    def image_uploads(self) -> int:
        """File parts received on any endpoint, session creation included."""
        with self._lock:
            return self._image_uploads

    @property
    def bytes_received(self) -> int:
        """Request body bytes received (chunked framing excluded)."""
        with self._lock:
            return self._bytes_received

    @property
    def compute_seconds(self) -> List[Tuple[str, float]]:
        """(path, seconds from the body's end to the answer) per answered request, in order; a copy."""
        with self._lock:
            return list(self._compute)

    @property
    def processing_seconds(self) -> List[Tuple[str, float]]:
        """(path, seconds) per answered request, in order; a copy."""
        with self._lock:
            return list(self._processing)

    @property
    def sessions_created(self) -> int:
        with self._lock:
            return self._sessions_created

    @property
    def requests(self) -> Dict[str, int]:
        """Requests per URL path (query excluded); a copy."""
        with self._lock:
            return dict(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._image_uploads = self._bytes_received = self._sessions_created = 0
            self._requests.clear()

    def snapshot(self) -> Dict[str, object]:
        with self._lock:
            return {
                "image_uploads": self._image_uploads,
                "bytes_received": self._bytes_received,
                "sessions_created": self._sessions_created,
                "requests": dict(self._requests),
            }
