"""Per-user settings of the ClaraAWS panel, behind a two-method store interface.

The panel passes a thin adapter over ``qt.QSettings``; tests and scripts use
:class:`MemorySettingsStore`. Every key lives under ``ClaraAWS/``. Credentials are never stored:
user names and passwords are stripped from remembered URLs, and AWS access goes through boto3's own
credential chain (only the profile *name* and the region are remembered).

Values are written as plain strings (lists and dicts as JSON), because ``QSettings`` hands back
booleans as ``"true"``/``"false"`` and one-element lists as a bare string on some platforms.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Protocol, Union
from urllib.parse import urlsplit, urlunsplit

from ..aws import normalise_alias
from ..core.errors import InputError

PREFIX = "ClaraAWS/"
KEY_URL_HISTORY = PREFIX + "serverUrlHistory"
KEY_TLS_VERIFY = PREFIX + "tlsVerify"
KEY_CA_BUNDLE = PREFIX + "caBundlePath"
KEY_AWS_PROFILE = PREFIX + "awsProfile"
KEY_AWS_REGION = PREFIX + "awsRegion"
KEY_STACK_ALIASES = PREFIX + "stackAliases"
#: Used as ``dontShowAgainSettingsKey`` of the upload consent dialog (ctkMessageBox stores the
#: pressed button there, a non-zero number, when "Don't show again" is ticked).
KEY_DONT_ASK_BEFORE_UPLOAD = PREFIX + "dontAskBeforeUpload"

KEY_SURFACE_AFTER_IMPORT = PREFIX + "surfaceAfterImport"
KEY_UPDATE_ON_EVERY_CLICK = PREFIX + "updateOnEveryClick"
KEY_DEFAULT_MODEL = PREFIX + "defaultModel/"  # + task name

MAX_URL_HISTORY = 10

# The defaults of the checkable preferences. The settings page sets its check boxes to these before it
# registers them: a ctkSettingsPanel stores a widget's current value for a key not yet stored.
DEFAULT_TLS_VERIFY = True
DEFAULT_SURFACE_AFTER_IMPORT = False
DEFAULT_UPDATE_ON_EVERY_CLICK = True


class SettingsStore(Protocol):
    """The part of ``QSettings`` this module uses."""

    def value(self, key: str, default: Any = None) -> Any: ...

    def setValue(self, key: str, value: Any) -> None: ...


class MemorySettingsStore:
    """A dict-backed store for tests and for use outside Slicer."""

    def __init__(self, initial: Optional[Dict[str, Any]] = None) -> None:
        self.data: Dict[str, Any] = dict(initial or {})

    def value(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def setValue(self, key: str, value: Any) -> None:  # noqa: N802 - mirrors QSettings
        self.data[key] = value


# --- small converters ---------------------------------------------------------------------
def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):  # QSettings may hand back a list for a comma-joined string
        return ",".join(str(v) for v in value)
    return str(value)


def _as_bool(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    try:
        return float(text) != 0  # ctkMessageBox stores the pressed button's number, e.g. "1024"
    except ValueError:
        return default


def _load_json(store: SettingsStore, key: str, expected: type, default: Any) -> Any:
    raw = _as_text(store.value(key, ""))
    if not raw:
        return default
    try:
        loaded = json.loads(raw)
    except ValueError:
        return default  # a hand-edited or foreign value: start over rather than fail the panel
    return loaded if isinstance(loaded, expected) else default


# --- server URLs --------------------------------------------------------------------------
def normalize_server_url(url: str) -> str:
    """Trim blanks and trailing slashes, and drop any ``user:password@`` part."""
    text = (url or "").strip()
    while text.endswith("/"):
        text = text[:-1]
    if not text:
        return ""
    parts = urlsplit(text)
    if "@" in parts.netloc:
        host = parts.netloc.rsplit("@", 1)[1]
        text = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return text


def is_plain_http(url: str) -> bool:
    return normalize_server_url(url).lower().startswith("http://")


def url_history(store: SettingsStore) -> List[str]:
    """Remembered server URLs, most recent first."""
    entries = _load_json(store, KEY_URL_HISTORY, list, [])
    history: List[str] = []
    for entry in entries:
        url = normalize_server_url(str(entry))
        if url and url not in history:
            history.append(url)
    return history[:MAX_URL_HISTORY]


def remember_url(store: SettingsStore, url: str) -> List[str]:
    """Put ``url`` first in the history (once, at most 10 kept) and return the new history."""
    normalized = normalize_server_url(url)
    if not normalized:
        raise InputError("The server URL is empty; type an address such as https://clara.example.org.")
    history = [normalized] + [entry for entry in url_history(store) if entry != normalized]
    history = history[:MAX_URL_HISTORY]
    store.setValue(KEY_URL_HISTORY, json.dumps(history))
    return history


def last_url(store: SettingsStore) -> str:
    history = url_history(store)
    return history[0] if history else ""


# --- TLS ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TLSOptions:
    verify: bool = DEFAULT_TLS_VERIFY
    ca_bundle: str = ""

    def client_verify(self) -> Union[bool, str]:
        """The ``verify`` argument for the client: False, a CA bundle path, or True."""
        if not self.verify:
            return False
        return self.ca_bundle or True


def load_tls_options(store: SettingsStore) -> TLSOptions:
    return TLSOptions(
        verify=_as_bool(store.value(KEY_TLS_VERIFY, None), DEFAULT_TLS_VERIFY),
        ca_bundle=_as_text(store.value(KEY_CA_BUNDLE, "")).strip(),
    )


def save_tls_options(store: SettingsStore, options: TLSOptions) -> None:
    store.setValue(KEY_TLS_VERIFY, "true" if options.verify else "false")
    store.setValue(KEY_CA_BUNDLE, options.ca_bundle.strip())


# --- AWS ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AwsOptions:
    #: A profile name of ~/.aws/config ("" = boto3's default chain); never a key or a token.
    profile: str = ""
    region: str = ""


_REGION_PATTERN = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


def load_aws_options(store: SettingsStore) -> AwsOptions:
    return AwsOptions(
        profile=_as_text(store.value(KEY_AWS_PROFILE, "")).strip(),
        region=_as_text(store.value(KEY_AWS_REGION, "")).strip(),
    )


def save_aws_options(store: SettingsStore, options: AwsOptions) -> AwsOptions:
    profile, region = options.profile.strip(), options.region.strip().lower()
    if region and not _REGION_PATTERN.match(region):
        raise InputError(f"'{options.region}' is not an AWS region name; use a name such as us-east-1.")
    if any(ch.isspace() for ch in profile):
        raise InputError("An AWS profile name cannot contain spaces; use a name from your ~/.aws/config file.")
    store.setValue(KEY_AWS_PROFILE, profile)
    store.setValue(KEY_AWS_REGION, region)
    return AwsOptions(profile, region)


# --- per-stack DNS aliases ----------------------------------------------------------------
def normalize_alias(alias: str) -> str:
    """``host[:port]`` from what the user typed ("" stays ""); InputError when it is not a host name."""
    if not (alias or "").strip():
        return ""
    return normalise_alias(alias)


def stack_aliases(store: SettingsStore) -> Dict[str, str]:
    loaded = _load_json(store, KEY_STACK_ALIASES, dict, {})
    return {str(stack): str(host) for stack, host in loaded.items() if stack and host}


def set_stack_alias(store: SettingsStore, stack_name: str, alias: str) -> Dict[str, str]:
    """Remember (or with an empty alias, forget) the DNS name to use for a stack's server."""
    stack = (stack_name or "").strip()
    if not stack:
        raise InputError("Choose a discovered stack before entering a DNS alias for it.")
    host = normalize_alias(alias)
    aliases = stack_aliases(store)
    if host:
        aliases[stack] = host
    else:
        aliases.pop(stack, None)
    store.setValue(KEY_STACK_ALIASES, json.dumps(aliases, sort_keys=True))
    return aliases


# --- upload consent -----------------------------------------------------------------------
def upload_consent_remembered(store: SettingsStore) -> bool:
    """True when the user ticked "Don't show again" on the upload consent dialog."""
    return _as_bool(store.value(KEY_DONT_ASK_BEFORE_UPLOAD, None), False)


def forget_upload_consent(store: SettingsStore) -> None:
    store.setValue(KEY_DONT_ASK_BEFORE_UPLOAD, 0)


# --- panel preferences (the Application Settings page edits them) --------------------------
def forget_url(store: SettingsStore, url: str) -> List[str]:
    """Drop one address from the server history; returns the history left."""
    wanted = normalize_server_url(url)
    history = [item for item in url_history(store) if item != wanted]
    store.setValue(KEY_URL_HISTORY, json.dumps(history))
    return history


def surface_after_import(store: SettingsStore) -> bool:
    return _as_bool(store.value(KEY_SURFACE_AFTER_IMPORT, None), DEFAULT_SURFACE_AFTER_IMPORT)


def update_on_every_click(store: SettingsStore) -> bool:
    return _as_bool(store.value(KEY_UPDATE_ON_EVERY_CLICK, None), DEFAULT_UPDATE_ON_EVERY_CLICK)


def default_model(store: SettingsStore, task: str) -> str:
    return _as_text(store.value(KEY_DEFAULT_MODEL + task, "")).strip()

