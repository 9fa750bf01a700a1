"""One server-side session per volume node, so a volume is uploaded once and clicks send only points.

A ``VolumeSession`` is created on the GUI thread with a copy of the voxels and opened (uploaded) on a
worker thread the first time a request needs it; every later request of the same volume waits for
that one upload instead of starting its own. The cache drops an entry when the volume's voxels or
grid change, and closes server sessions when the node is removed, the scene closes, or on cleanup.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, Hashable, Optional, Set

from ..core.errors import CancelledError, ClaraError
from ..core.geometry import ImageGrid, Volume
from .export import ijk_to_ras_matrix

log = logging.getLogger(__name__)


def volume_fingerprint(volume_node) -> Hashable:
    """Changes whenever what ClaraAWS would send for the node changes: the voxels or the grid.

    The image data's MTime moves with any voxel change (``arrayFromVolumeModified``, filters, a new
    image object); the IJK-to-RAS values cover the geometry. Renaming the node or moving it under a
    transform does not change the sent image, so it keeps its session.
    """
    image = volume_node.GetImageData()
    if image is None:
        return None
    return (
        image.GetAddressAsString("vtkImageData"),
        image.GetMTime(),
        tuple(image.GetDimensions()),
        tuple(round(float(v), 9) for v in ijk_to_ras_matrix(volume_node).ravel()),
    )


class VolumeSession:
    """The server session of one volume as it was when the entry was made; thread-safe."""

    def __init__(self, node_id: str, fingerprint: Hashable, volume: Volume) -> None:
        self.node_id = node_id
        self.fingerprint = fingerprint
        self.grid: ImageGrid = volume.grid
        self._volume: Optional[Volume] = volume  # dropped once uploaded: the session keeps the encoded bytes
        self._pending = None  # the volume being compressed ahead of the upload (see prepare)
        self._session = None
        self._closed = False
        self._upload_lock = threading.Lock()
        self._state_lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        with self._state_lock:
            return self._session is not None and not self._closed

    @property
    def image_session(self):
        with self._state_lock:
            return None if self._closed else self._session

    @property
    def pending_upload(self):
        """The volume's background compression started by ``prepare``, or None."""
        with self._state_lock:
            return None if self._closed or self._session is not None else self._pending

    def prepare(self, client) -> bool:
        """Start compressing the volume for ``client``'s server now, so the first request finds the bytes ready.

        Does nothing (False) when the backend cannot compress ahead, the session is open or a compression runs.
        """
        start = getattr(client, "start_encode", None)
        with self._state_lock:
            if start is None or self._closed or self._session is not None or self._pending is not None:
                return False
            volume = self._volume
        pending = start(volume)
        with self._state_lock:
            if self._closed or self._pending is not None:
                pending.cancel()
                return False
            self._pending = pending
        return True

    def open(self, client, progress=None, cancel=None):
        """The ImageSession, uploading the volume first if no request has done so yet (worker thread)."""
        with self._upload_lock:
            with self._state_lock:
                if self._closed:
                    raise CancelledError("The volume changed or was closed while the request waited; nothing was changed.")
                if self._session is not None:
                    return self._session
                volume = self._pending if self._pending is not None else self._volume
            session = client.create_session(volume, progress=progress, cancel=cancel)
            with self._state_lock:
                if not self._closed:
                    self._session, self._volume, self._pending = session, None, None
                    return session
            _close_quietly(client, session)
            raise CancelledError("The volume changed or was closed during the upload; nothing was changed.")

    def close(self, client, closer: Optional[Callable[[object, object], None]] = None) -> None:
        """Forget the session and delete it on the server (best effort; a dead server is ignored)."""
        with self._state_lock:
            self._closed = True
            session, self._session, self._volume = self._session, None, None
            pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        if session is not None and client is not None:
            (closer or _close_quietly)(client, session)


def _close_quietly(client, session) -> None:
    try:
        client.close_session(session)
    except ClaraError as error:  # the session expires on the server anyway
        log.debug("Closing session %s failed: %s", getattr(session, "session_id", "?"), error)


class BackgroundCloser:
    """Deletes server sessions on daemon threads: closing a volume or the scene never waits on the network
    (a load balancer that silently drops packets would otherwise hold the GUI for the connect timeout)."""

    def __init__(self) -> None:
        self._threads: Set[threading.Thread] = set()
        self._lock = threading.Lock()

    def __call__(self, client, session) -> None:
        thread = threading.Thread(target=self._run, args=(client, session), name="ClaraAWS session close", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _run(self, client, session) -> None:
        try:
            _close_quietly(client, session)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for pending closes; True if none is left."""
        deadline = time.monotonic() + timeout
        with self._lock:
            pending = list(self._threads)
        for thread in pending:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            return not self._threads


class SessionCache:
    """Volume node ID -> VolumeSession, valid while the volume's fingerprint is unchanged."""

    def __init__(self, client_provider: Callable[[], object],
                 closer: Optional[Callable[[object, object], None]] = None) -> None:
        self._client = client_provider
        self._closer = closer  # how server sessions are deleted; None: right away on the calling thread
        self._entries: Dict[str, VolumeSession] = {}

    def valid(self, volume_node) -> Optional[VolumeSession]:
        """The entry for the node if it still describes the node's current image; stale entries are closed."""
        entry = self._entries.get(volume_node.GetID())
        if entry is None:
            return None
        if entry.fingerprint != volume_fingerprint(volume_node):
            self.close(volume_node.GetID())
            return None
        return entry

    def open_session(self, volume_node):
        """The already uploaded ImageSession of the node, or None (never uploads)."""
        entry = self.valid(volume_node)
        return entry.image_session if entry is not None else None

    def entry_for(self, volume_node, export: Callable[[object], Volume]) -> VolumeSession:
        """The valid entry of the node, creating one (with exported voxels, not yet uploaded) if needed."""
        entry = self.valid(volume_node)
        if entry is None:
            entry = VolumeSession(volume_node.GetID(), volume_fingerprint(volume_node), export(volume_node))
            self._entries[volume_node.GetID()] = entry
        return entry

    def prepare(self, volume_node, export: Callable[[object], Volume]) -> bool:
        """Start compressing the node's volume for the current server (see ``VolumeSession.prepare``)."""
        client = self._client()
        if client is None:
            return False
        return self.entry_for(volume_node, export).prepare(client)

    def close(self, node_id: str) -> None:
        entry = self._entries.pop(node_id, None)
        if entry is not None:
            entry.close(self._client(), self._closer)

    def close_all(self) -> None:
        for node_id in list(self._entries):
            self.close(node_id)

    def __contains__(self, node_id: str) -> bool:
        return node_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)
