"""Message framing on both sides of the wire (RFC 9112 §6.3).

The reference server: a request whose Content-Length is not 1*DIGIT (``+2``, ``0_2``, ``0x2``, full-width
digits: Python's ``int()`` takes them all) or whose Content-Length values disagree (two headers, or a list)
gets 400 with one sentence and the connection is closed, because where its body ends cannot be known: a
request smuggled in its "body" is never answered. Identical values count as one. A request with both
Transfer-Encoding and Content-Length is read by its chunked coding and its connection closed afterwards.

The client: ``Content-Length: N, N`` is a valid answer (RFC 9110 §8.6), but http.client cannot parse the
list and would read the body to the close; on a kept-alive connection that is the whole read timeout and
then "the result stopped arriving". The client frames such a body by N instead.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import List, Tuple

import pytest

from ClaraAWSLib.backends.aiaa.client import AIAAClient
from ClaraAWSLib.core import errors
from loopback_servers import LoopbackServer, _QuietHandler

Exchange = List[Tuple[int, dict, bytes]]
SMUGGLED = b"GET /v1/models?model=SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"
LAST = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def exchange(url: str, raw: bytes, seconds: float = 10.0) -> Exchange:
    """Send ``raw`` on one connection; every answer until the server closes it: (status, headers, body)."""
    host, port = url.split("//")[1].split(":")
    answers: Exchange = []
    with socket.create_connection((host, int(port)), timeout=seconds) as connection:
        connection.sendall(raw)
        stream = connection.makefile("rb")
        while True:
            status_line = stream.readline()
            if not status_line:
                return answers
            status = int(status_line.split()[1])
            headers = http.client.parse_headers(stream)
            body = stream.read(int(headers.get("Content-Length", 0)))
            answers.append((status, {k.lower(): v for k, v in headers.items()}, body))


def request(*content_lengths: bytes, body: bytes = b"{}", transfer_encoding: bytes = b"") -> bytes:
    head = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    for value in content_lengths:
        head += b"Content-Length: " + value + b"\r\n"
    if transfer_encoding:
        head += b"Transfer-Encoding: " + transfer_encoding + b"\r\n"
    return head + b"\r\n" + body


INVALID = {
    "plus sign": [b"+2"],
    "underscore": [b"0_2"],
    "hexadecimal": [b"0x2"],
    "full-width digits": ["２".encode("utf-8")],
    "negative": [b"-2"],
    "empty": [b""],
    "letters": [b"abc"],
    "decimal point": [b"2.0"],
    "list that disagrees": [b"2, 40"],
    "list with an empty element": [b"2,,2"],
    "two headers that disagree": [b"2", b"40"],
    "two headers that disagree, the other way round": [b"40", b"2"],
}
VALID = {
    "digits": [b"2"],
    "leading zeros": [b"002"],
    "spaces around": [b"  2\t"],
    "identical list": [b"2, 2"],
    "identical list without spaces": [b"2,2"],
    "two identical headers": [b"2", b"2"],
}


@pytest.mark.parametrize("case", INVALID)
def test_an_invalid_content_length_gets_400_and_the_connection_closes(reference_server, case):
    answers = exchange(reference_server.url, request(*INVALID[case]) + SMUGGLED + LAST)
    assert len(answers) == 1, [status for status, _, _ in answers]  # nothing after it is taken for a request
    status, headers, body = answers[0]
    assert status == 400 and headers.get("connection", "").lower() == "close"
    message = json.loads(body)["error"]["message"]
    assert len(message) == 1 and "Content-Length" in message[0] and "\n" not in message[0]
    assert message[0].endswith(".")


@pytest.mark.parametrize("case", VALID)
def test_a_valid_content_length_frames_the_body_and_keeps_the_connection(reference_server, case):
    answers = exchange(reference_server.url, request(*VALID[case]) + LAST)
    assert [status for status, _, _ in answers] == [200, 200]


def test_an_invalid_content_length_announcing_100_continue_is_refused_before_the_body(reference_server):
    raw = (b"POST /v1/segmentation?model=phantom_abdomen_seg HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
           b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: +20\r\n\r\n")
    answers = exchange(reference_server.url, raw)
    assert len(answers) == 1 and answers[0][0] == 400
    assert answers[0][1].get("connection", "").lower() == "close"


def test_transfer_encoding_with_content_length_is_read_chunked_and_the_connection_closed(reference_server):
    # RFC 9112 §6.1: the chunked coding frames the body, and the server closes the connection after answering.
    chunked = request(b"40", body=b"2\r\n{}\r\n0\r\n\r\n", transfer_encoding=b"chunked")
    answers = exchange(reference_server.url, chunked + SMUGGLED + LAST)
    assert [status for status, _, _ in answers] == [200]
    assert answers[0][1].get("connection", "").lower() == "close"


# --- the client ------------------------------------------------------------------------------------

MODELS = [{"name": "m", "type": "segmentation", "labels": ["organ"], "description": "list framing"}]


class _ListFramedHandler(_QuietHandler):
    """Answers the model list with a Content-Length list of one repeated value and keeps the connection open."""

    def do_GET(self) -> None:
        body = json.dumps(MODELS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", self.server.owner.content_length(len(body)))
        self.end_headers()
        self.wfile.write(body)  # and the connection stays open (HTTP/1.1 keep-alive)


class ListFramedServer(LoopbackServer):
    def __init__(self, content_length) -> None:
        super().__init__(_ListFramedHandler)
        self.content_length = content_length


@pytest.mark.parametrize("value", [lambda n: f"{n}, {n}", lambda n: f"{n},{n}", lambda n: f"{n}, {n}, {n}"],
                         ids=["N, N", "N,N", "N, N, N"])
def test_a_repeated_content_length_on_a_kept_alive_connection_is_read_at_once(value):
    with ListFramedServer(value) as server:
        client = AIAAClient(server.url, read_timeout=4.0)
        try:
            started = time.monotonic()
            first = client.models()
            second = client.models()
            elapsed = time.monotonic() - started
        finally:
            client.close()
    assert [model["name"] for model in first] == [model["name"] for model in second] == ["m"]
    # http.client gives up such a connection (it took the length for unknown), but reads no further than N.
    assert elapsed < 2.0, f"the client waited {elapsed:.1f} s for the close instead of reading N bytes"


def test_a_content_length_list_that_disagrees_is_still_refused():
    with ListFramedServer(lambda n: f"{n}, {n + 1}") as server:
        client = AIAAClient(server.url, read_timeout=4.0)
        try:
            with pytest.raises(errors.MalformedResponseError, match="invalid Content-Length"):
                client.models()
        finally:
            client.close()
