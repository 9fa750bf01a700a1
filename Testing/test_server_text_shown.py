"""What a server writes reaches the user as one clean line: no terminal escape codes, no line breaks, no
pages of text, no credential echoed back, and a readable sentence for answers no HTTP client can use.

Servers here are real and listen on 127.0.0.1 (hostile_servers.py); expected texts are written out by hand.
"""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from ClaraAWSLib.backends.aiaa.client import AIAAClient
from ClaraAWSLib.core import errors
from ClaraAWSLib.core.server_text import one_line, redacted, secrets_of
from hostile_servers import HostileServer

ESC = "\x1b"


@pytest.fixture
def server():
    with HostileServer() as here:
        yield here


def shown(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text and "\r" not in text and ESC not in text and "Traceback" not in text, repr(text)
    return text


@pytest.mark.parametrize("raw, clean", [
    (f"seg{ESC}[31mRED{ESC}[0m", "segRED"),
    (f"title{ESC}]0;owned\x07 done", "title done"),
    ("two\nlines\r\nand\rCR", "two lines and CR"),
    ("tab\there\x00nul\x7fdel\x85nel", "tab here nul del nel"),
    ("left\u202eright", "left right"),
    (f"{ESC}[2J{ESC}[H", ""),
])
def test_one_line_keeps_the_words_and_drops_control_and_escape_codes(raw, clean):
    assert one_line(raw) == clean


def test_one_line_bounds_the_length():
    assert one_line("x" * 1000, 50) == "x" * 49 + "…"
    assert one_line("short", 50) == "short"


def test_secrets_cover_the_password_its_basic_auth_form_and_header_tokens():
    pair = base64.b64encode(b"user:s3cret").decode()
    secrets = secrets_of(("user", "s3cret"), {"Authorization": "Bearer tok-123", "X-Api-Key": "k3y"})
    text = f"Basic {pair} user:s3cret s3cret Bearer tok-123 tok-123 k3y"
    assert redacted(text, secrets) == "Basic [redacted] [redacted] [redacted] [redacted] [redacted] [redacted]"


def test_a_server_error_message_with_escape_codes_and_lines_is_one_bounded_line(server):
    server.error_message = f"boom {ESC}[2J\nline two\r\n" + "x" * 5000
    with pytest.raises(errors.RemoteError) as raised:
        AIAAClient(f"{server.url}/error-text").models()
    text = shown(raised.value)
    assert "boom line two xxx" in text and len(text) < 500
    assert ESC not in raised.value.details and "\n" not in raised.value.details


def test_credentials_a_server_echoes_back_are_not_shown(server):
    url = f"http://user:s3cret-pw@{server.url.split('://')[1]}/echo-auth"
    with pytest.raises(errors.ServerError) as raised:
        AIAAClient(url, headers={"X-Token": "tok-987"}).models()
    pair = base64.b64encode(b"user:s3cret-pw").decode()
    everything = str(raised.value) + str(raised.value.details)
    assert "Basic [redacted]" in everything and "token [redacted]" in everything
    for secret in ("s3cret-pw", pair, "tok-987"):
        assert secret not in everything


def test_a_redirect_target_with_escape_codes_is_shown_clean(server):
    server.location = f"http://127.0.0.1:1/next {ESC}[31mred"
    with pytest.raises(errors.RedirectError) as raised:
        AIAAClient(f"{server.url}/redirect-to").models()
    assert "redirected to http://127.0.0.1:1/next red" in shown(raised.value)


@pytest.mark.parametrize("location", ["http://127.0.0.1:99999/x", "http://[::1/x"])
@pytest.mark.parametrize("with_credentials", [False, True])
def test_a_redirect_to_something_that_is_no_url_is_one_sentence(server, location, with_credentials):
    server.location = location
    base = f"http://user:pw-1@{server.url.split('://')[1]}" if with_credentials else server.url
    with pytest.raises(errors.RedirectError) as raised:
        AIAAClient(f"{base}/redirect-to").models()
    assert "nothing was sent there" in shown(raised.value)


def test_json_nested_past_the_interpreters_limit_is_a_malformed_answer(server):
    with pytest.raises(errors.MalformedResponseError) as raised:
        AIAAClient(f"{server.url}/deep-json").models()
    assert "nests its JSON deeper" in shown(raised.value)


@pytest.mark.parametrize("raw, words", [
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n", "longer than 64 KiB or more than 100 header lines"),
    (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(500)) + b"\r\n",
     "longer than 64 KiB or more than 100 header lines"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "does not answer in HTTP"),
])
def test_an_answer_no_http_client_reads_is_not_called_a_restart(server, raw, words):
    server.raw_answer = raw
    with pytest.raises(errors.ServerUnreachableError) as raised:
        AIAAClient(f"{server.url}/raw").models()
    text = shown(raised.value)
    assert words in text and "try again" not in text


@pytest.mark.parametrize("content", [b"", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                                     b"\x1f\x8b\x08binary"])
def test_a_ca_bundle_without_a_certificate_is_a_bad_argument(tmp_path, content):
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(content)
    with pytest.raises(errors.InputError) as raised:
        AIAAClient("https://127.0.0.1:9", verify=str(bundle))
    assert "holds no PEM certificate" in shown(raised.value)
    done = subprocess.run([sys.executable, "-m", "ClaraAWSLib.cli", "models", "--server", "https://127.0.0.1:9",
                           "--ca-bundle", str(bundle)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "holds no PEM certificate" in done.stderr


def test_a_ca_bundle_with_a_certificate_is_taken(self_signed_certificate):
    cert, _key = self_signed_certificate
    assert AIAAClient("https://127.0.0.1:9", verify=str(cert)).base_url == "https://127.0.0.1:9"


def test_models_prints_server_written_names_and_descriptions_as_clean_lines(server):
    server.models = [{"name": f"seg{ESC}[31mRED", "type": "segmentation", "labels": ["li\nver"],
                      "description": f"evil{ESC}[2J\rcleared\nsecond line"}]
    done = subprocess.run([sys.executable, "-m", "ClaraAWSLib.cli", "models", "--server", f"{server.url}/model-list",
                           "--backend", "aiaa"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert ESC not in done.stdout and "\r" not in done.stdout
    assert "segRED" in done.stdout and "li ver" in done.stdout and "evil cleared second line" in done.stdout
