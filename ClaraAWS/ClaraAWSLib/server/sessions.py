"""Image sessions: an uploaded volume kept for a while so later calls send only points.

Expired sessions are removed lazily, whenever the store is used. The store is bounded in count and
in the bytes its images take: when a new session would pass either bound, the oldest sessions expire
first. An unknown or expired session id is answered with HTTP 440, as AIAA does.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import SimpleITK as sitk

from .models import ImageCache
from .problems import InvalidParams, PayloadTooLarge, SessionExpired


@dataclass
class Session:
    session_id: str
    image: sitk.Image
    expiry_seconds: int
    created_wall: float
    expires_at: float  # on the store's clock
    upload_bytes: int
    cache: ImageCache = field(default_factory=ImageCache)

    @property
    def image_bytes(self) -> int:
        image = self.image
        return image.GetNumberOfPixels() * image.GetNumberOfComponentsPerPixel() * image.GetSizeOfPixelComponent()

    def info(self, now: float) -> Dict[str, Any]:
        image = self.image
        return {
            "session_id": self.session_id,
            "expiry": self.expiry_seconds,
            "expires_in": max(0, int(round(self.expires_at - now))),
            "created": int(self.created_wall),
            "size": list(image.GetSize()),
            "spacing": list(image.GetSpacing()),
            "origin": list(image.GetOrigin()),
            "direction": list(image.GetDirection()),
            "pixel_type": image.GetPixelIDTypeAsString(),
            "upload_bytes": self.upload_bytes,
        }


class SessionStore:
    """Thread-safe sessions with expiry; ``clock`` is injectable so tests can move time."""

    def __init__(
        self,
        default_expiry: int = 3600,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_sessions: Optional[int] = None,
        max_bytes: Optional[int] = None,
    ) -> None:
        if default_expiry <= 0:
            raise ValueError("The session expiry must be a positive number of seconds.")
        self.default_expiry = int(default_expiry)
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        # Insertion order is creation order: the first entry is the oldest session.
        self._sessions: Dict[str, Session] = {}
        self.evicted = 0

    def applied_expiry(self, requested: Optional[int]) -> int:
        """The server's limit, or the request's expiry when that is smaller (0 or None: the limit)."""
        if requested is None or requested == 0:
            return self.default_expiry
        if requested < 0:
            raise InvalidParams(f"expiry={requested} is negative; send a number of seconds, or 0 for the default.")
        return min(self.default_expiry, int(requested))

    def create(self, image: sitk.Image, *, requested_expiry: Optional[int], upload_bytes: int) -> Session:
        expiry = self.applied_expiry(requested_expiry)
        now = self._clock()
        session = Session(
            session_id=uuid.uuid4().hex,
            image=image,
            expiry_seconds=expiry,
            created_wall=time.time(),
            expires_at=now + expiry,
            upload_bytes=upload_bytes,
        )
        if self.max_bytes is not None and session.image_bytes > self.max_bytes:
            raise PayloadTooLarge(
                f"The image takes {session.image_bytes} bytes, more than the {self.max_bytes} this server keeps for all "
                "sessions together; send a smaller image, run without a session, or raise the server's --max-session-mb."
            )
        with self._lock:
            self._purge(now)
            self._make_room(session.image_bytes)
            self._sessions[session.session_id] = session
        return session

    @property
    def image_bytes(self) -> int:
        """Bytes all sessions' images take now."""
        with self._lock:
            return sum(s.image_bytes for s in self._sessions.values())

    def _make_room(self, new_bytes: int) -> None:
        held = sum(s.image_bytes for s in self._sessions.values())
        while self._sessions and (
            (self.max_sessions is not None and len(self._sessions) >= self.max_sessions)
            or (self.max_bytes is not None and held + new_bytes > self.max_bytes)
        ):
            oldest = next(iter(self._sessions))
            held -= self._sessions.pop(oldest).image_bytes
            self.evicted += 1

    def get(self, session_id: str) -> Session:
        with self._lock:
            self._purge(self._clock())
            session = self._sessions.get(session_id)
        if session is None:
            raise SessionExpired(_gone(session_id))
        return session

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._purge(self._clock())
            if self._sessions.pop(session_id, None) is None:
                raise SessionExpired(_gone(session_id))

    def info(self, session: Session) -> Dict[str, Any]:
        return session.info(self._clock())

    def expire_all(self) -> int:
        """Forget every session now (as if they had all expired); returns how many there were."""
        with self._lock:
            count = len(self._sessions)
            self._sessions.clear()
        return count

    def ids(self) -> List[str]:
        with self._lock:
            self._purge(self._clock())
            return list(self._sessions)

    def __len__(self) -> int:
        return len(self.ids())

    def _purge(self, now: float) -> None:
        for session_id in [sid for sid, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[session_id]


def _gone(session_id: str) -> str:
    shown = session_id if len(session_id) <= 64 else session_id[:61] + "..."
    return f"Session {shown!r} is unknown or has expired; create a new session (PUT /session/) and retry."
