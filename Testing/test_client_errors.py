"""Every failure the client can meet becomes one typed error with one readable sentence.

The failures are real: a small misbehaving server on 127.0.0.1 answers like nginx or an AWS load
balancer would, drops connections and sends garbage; no HTTP library is mocked.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest

from ClaraAWSLib.core import errors
from ClaraAWSLib.backends.aiaa.client import AIAAClient
from ClaraAWSLib.backends.transport import normalise_base_url
from ClaraAWSLib.core.geometry import ImageGrid, Volume

TINY = Volume(np.zeros((4, 5, 6), np.int16), ImageGrid((6, 5, 4), (1, 1, 1), (0, 0, 0)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _one_sentence(error: Exception) -> str:
    text = str(error)
    assert text and "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.parametrize(
    "behaviour, error_class, words",
    [
        ("status-404", errors.NotFoundError, "path prefix"),
        ("status-413", errors.PayloadTooLargeError, "body size limit"),
        ("status-502", errors.ServerUnavailableError, "restarting"),
        ("status-503", errors.ServerUnavailableError, "try again"),
        ("status-504", errors.GatewayTimeoutError, "idle timeout"),
        ("status-403", errors.AuthorizationError, "credentials"),
        ("status-500", errors.RemoteError, "HTTP 500"),
        ("aiaa-error", errors.RemoteError, "CUDA out of memory"),
        ("reset", errors.ServerUnreachableError, "closed before the server answered"),
        ("garbage", errors.MalformedResponseError, "instead of a result image"),
        ("multipart-no-file", errors.MalformedResponseError, "without a result image"),
        ("multipart-truncated", errors.MalformedResponseError, "cut short"),
        ("multipart-bad-image", errors.MalformedResponseError, "not an image"),
        ("short-body", errors.MalformedResponseError, "arrived incomplete"),
    ],
)
def test_work_call_failures_are_typed_and_readable(misbehaving_server, behaviour, error_class, words):
    client = AIAAClient(f"{misbehaving_server.url}/{behaviour}")
    with pytest.raises(error_class) as raised:
        client.segmentation("any", TINY).labels()
    assert words in _one_sentence(raised.value)
    # The path prefix is kept in front of the protocol path.
    assert misbehaving_server.paths[-1].startswith(f"/{behaviour}/v1/segmentation?model=any")


def test_413_names_the_upload_size(misbehaving_server):
    client = AIAAClient(f"{misbehaving_server.url}/status-413")
    with pytest.raises(errors.PayloadTooLargeError, match=r"upload of 0\.\d MB"):
        client.inference("any", TINY)


def test_listing_models_from_a_non_aiaa_page_is_malformed(misbehaving_server):
    with pytest.raises(errors.MalformedResponseError, match="not JSON"):
        AIAAClient(f"{misbehaving_server.url}/not-json").models()


def test_server_down_is_unreachable_with_advice():
    client = AIAAClient(f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(errors.ServerUnreachableError) as raised:
        client.models()
    assert "connection refused" in _one_sentence(raised.value)


def test_slow_server_gives_a_timeout_error(misbehaving_server):
    client = AIAAClient(f"{misbehaving_server.url}/slow", read_timeout=0.5)
    with pytest.raises(errors.ServerTimeoutError, match="did not answer within 0.5 s"):
        client.models()


def test_extra_headers_reach_the_server(misbehaving_server):
    with pytest.raises(errors.AuthorizationError, match="HTTP 401"):
        AIAAClient(f"{misbehaving_server.url}/require-auth").models()
    models = AIAAClient(f"{misbehaving_server.url}/require-auth", headers={"Authorization": "Bearer sesame"}).models()
    assert models[0]["name"] == "m"


def test_cancel_before_sending_changes_nothing(misbehaving_server):
    import threading

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(errors.CancelledError):
        AIAAClient(misbehaving_server.url).segmentation("any", TINY, cancel=cancel)
    assert misbehaving_server.paths == []


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://127.0.0.1:5000/", "http://127.0.0.1:5000"),
        ("https://host.example/aiaa/", "https://host.example/aiaa"),
        ("clara-123.us-west-2.elb.amazonaws.com/", "https://clara-123.us-west-2.elb.amazonaws.com"),
    ],
)
def test_base_urls_are_normalised(url, expected):
    assert normalise_base_url(url) == expected


@pytest.mark.parametrize("url", ["", "ftp://host", "http://host:5000/v1/models", "http://host/?a=b"])
def test_wrong_urls_are_refused_with_advice(url):
    with pytest.raises(errors.InputError):
        normalise_base_url(url)


def test_points_are_checked_before_any_request(misbehaving_server):
    client = AIAAClient(misbehaving_server.url)
    with pytest.raises(errors.InputError, match="at least 6 extreme points"):
        client.dextr3d("m", [[1, 2, 3]] * 5, TINY)
    with pytest.raises(errors.InputError, match="3 coordinates|coordinates"):
        client.deepgrow("m", [[1, 2]], image=TINY)
    with pytest.raises(errors.InputError, match="foreground"):
        client.deepgrow("m", [], image=TINY)
    assert misbehaving_server.paths == []


def test_https_to_a_plain_http_server_says_so(misbehaving_server):
    url = misbehaving_server.url.replace("http://", "https://")
    with pytest.raises(errors.TLSError) as raised:
        AIAAClient(url).models()
    assert "does not answer HTTPS" in _one_sentence(raised.value) and misbehaving_server.url in str(raised.value)
