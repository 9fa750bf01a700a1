"""When the panel asks before image data leaves the machine, and what an answer means.

Consent belongs to a server, not to the application: "Don't show again" for one server never silences
the question (or the plain-HTTP warning) for another, and it can be taken back per server on the
settings page. A plain-HTTP server is asked about in every Slicer session, whatever was ticked.
"""

from __future__ import annotations

import json
from typing import List
from urllib.parse import urlsplit

from .settings_store import PREFIX, SettingsStore, is_plain_http

KEY_CONSENTED_SERVERS = PREFIX + "uploadConsentServers"

def server_key(url: str) -> str:
    """The server a consent is about: scheme, host and port, without credentials or path."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    host = (parts.hostname or "").lower()
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme.lower()}://{host}{port}"


class ConsentBook:
    """Which servers the user agreed to upload to, for this session and (ticked) for good."""

    def __init__(self, store: SettingsStore) -> None:
        self._store = store
        self._this_session: set = set()

    def remembered(self) -> List[str]:
        try:
            value = json.loads(str(self._store.value(KEY_CONSENTED_SERVERS, "[]") or "[]"))
        except ValueError:
            return []
        return [str(item) for item in value] if isinstance(value, list) else []

    def needs_asking(self, url: str) -> bool:
        key = server_key(url)
        if key in self._this_session:
            return False
        return is_plain_http(url) or key not in self.remembered()

    def agreed(self, url: str, dont_ask_again: bool = False) -> bool:
        """Record a yes; True when it was stored for good (the settings page lists those)."""
        key = server_key(url)
        if not dont_ask_again or is_plain_http(url):
            self._this_session.add(key)
            return False
        # Kept in the settings only, so that "Ask again" on the settings page takes effect at once.
        if key not in self.remembered():
            self._store.setValue(KEY_CONSENTED_SERVERS, json.dumps(self.remembered() + [key]))
        return True

    def forget(self, url: str) -> None:
        key = server_key(url)
        self._this_session.discard(key)
        self._store.setValue(KEY_CONSENTED_SERVERS, json.dumps([k for k in self.remembered() if k != key]))
