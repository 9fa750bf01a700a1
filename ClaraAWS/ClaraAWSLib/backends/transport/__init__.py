"""The HTTP wire under every backend (``wire.HttpTransport``), with its parts: server addresses and what a
message may show (``addresses``), the overall deadline and cancel (``deadline``), reading answers within
their bounds (``answers``) and the typed errors of what goes wrong (``failures``).

A backend package says what to send and how to read the answer; nothing of the wire lives in it.
"""

from .addresses import (  # noqa: F401 - the transport's public names
    answers_tls,
    check_headers,
    normalise_base_url,
    origin,
    origin_text,
    split_credentials,
    without_userinfo,
)
from .answers import Answer, json_object  # noqa: F401
from .deadline import Deadline, DeadlineAdapter, positive_seconds  # noqa: F401
from .wire import (  # noqa: F401
    BytesBody,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DEADLINE,
    DEFAULT_READ_TIMEOUT,
    MAX_JSON_ANSWER_BYTES,
    HttpTransport,
    ImageInput,
    ServerWire,
    UploadBody,
    as_encoded_image,
    json_body,
    server_wire,
    upload_name,
)
