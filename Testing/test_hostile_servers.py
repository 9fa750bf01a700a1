"""A hostile server costs the user nothing: no redirect elsewhere, no secret leaves, no bomb inflates.

Every server here is real and listens on 127.0.0.1 (see hostile_servers.py); "another origin" is
another port. Each failure must be one typed error with one readable sentence.
"""

from __future__ import annotations

import re
import ssl
import time

import numpy as np
import pytest

from ClaraAWSLib.core import errors
from ClaraAWSLib.backends.aiaa.client import AIAAClient, ImageSession
from ClaraAWSLib.core.geometry import ImageGrid, Volume
from ClaraAWSLib.core.imageio import encode_volume
from hostile_servers import HOSTILE_SESSION_ID, HostileServer

TINY = Volume(np.arange(120, dtype=np.int16).reshape(4, 5, 6), ImageGrid((6, 5, 4), (1, 1, 1), (0, 0, 0)))
SECRET_PASSWORD = "pw-Zq81x"
SECRET_HEADER = "key-7Hc2v"


def one_sentence(error: Exception) -> str:
    text = str(error)
    assert text and "\n" not in text and "Traceback" not in text
    return text


@pytest.fixture
def hostile():
    with HostileServer() as here, HostileServer() as elsewhere:
        here.elsewhere = elsewhere.url
        yield here, elsewhere


@pytest.fixture
def tls_hostile(self_signed_certificate):
    cert, key = self_signed_certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    with HostileServer(tls_context=context) as here, HostileServer() as plain:
        here.elsewhere = plain.url
        yield here, plain, cert


# --- redirects ------------------------------------------------------------------------------


def test_a_redirect_to_another_origin_is_refused_and_names_where_it_pointed(hostile):
    here, elsewhere = hostile
    client = AIAAClient(f"{here.url}/redirect-away", headers={"X-Api-Key": SECRET_HEADER})
    with pytest.raises(errors.RedirectError) as raised:
        client.models()
    text = one_sentence(raised.value)
    assert elsewhere.url in text and "another address" in text
    assert elsewhere.seen == []  # another host's model list is never read


def test_a_redirected_upload_is_not_resent_elsewhere_and_does_not_hang(hostile):
    here, elsewhere = hostile
    client = AIAAClient(f"{here.url}/redirect-away", headers={"X-Api-Key": SECRET_HEADER}, read_timeout=30)
    started = time.monotonic()
    with pytest.raises(errors.RedirectError):
        client.segmentation("m", TINY)
    assert time.monotonic() - started < 20  # a followed 307 with an empty body used to hang for the read timeout
    assert elsewhere.seen == []
    assert here.seen[-1].headers.get("X-Api-Key") == SECRET_HEADER  # it did reach the server it was meant for


def test_an_https_server_redirecting_to_plain_http_is_refused(tls_hostile):
    here, plain, cert = tls_hostile
    client = AIAAClient(f"{here.url}/redirect-away", verify=str(cert), headers={"X-Api-Key": SECRET_HEADER})
    with pytest.raises(errors.RedirectError) as raised:
        client.models()
    assert "from https to plain http" in one_sentence(raised.value) and plain.url in str(raised.value)
    assert plain.seen == []  # the key never travelled in clear text


def test_a_same_origin_redirect_is_followed(hostile):
    here, _ = hostile
    models = AIAAClient(f"{here.url}/redirect-same").models()
    assert [m["name"] for m in models] == ["m"]
    assert [seen.path.split("?")[0] for seen in here.seen] == ["/redirect-same/v1/models", "/redirect-same/v1/models/"]


def test_a_redirect_loop_ends_with_one_sentence(hostile):
    here, _ = hostile
    with pytest.raises(errors.RedirectError, match="redirected more than"):
        AIAAClient(f"{here.url}/redirect-loop").models()


def test_an_upload_redirected_with_302_is_not_turned_into_a_get(hostile):
    here, _ = hostile
    with pytest.raises(errors.RedirectError, match="would drop the upload"):
        AIAAClient(f"{here.url}/redirect-post-302").segmentation("m", TINY)
    assert [seen.method for seen in here.seen] == ["POST"]


# --- secrets --------------------------------------------------------------------------------


def test_url_credentials_go_to_their_own_origin_only_and_never_into_messages(hostile):
    here, elsewhere = hostile
    url = f"http://user:{SECRET_PASSWORD}@{here.url.split('://')[1]}"
    client = AIAAClient(url + "/redirect-away")
    assert SECRET_PASSWORD not in client.base_url
    with pytest.raises(errors.RedirectError) as raised:
        client.models()
    assert SECRET_PASSWORD not in str(raised.value) and SECRET_PASSWORD not in str(raised.value.details)
    assert here.seen[-1].headers.get("Authorization", "").startswith("Basic ")  # sent where it belongs
    assert elsewhere.seen == []
    with pytest.raises(errors.NotFoundError) as raised:
        AIAAClient(url + "/no-such-behaviour").models()
    assert SECRET_PASSWORD not in str(raised.value) and SECRET_PASSWORD not in str(raised.value.details)


def test_credentials_are_not_shown_for_an_unreachable_server():
    from hostile_servers import free_port

    url = f"http://user:{SECRET_PASSWORD}@127.0.0.1:{free_port()}"
    with pytest.raises(errors.ServerUnreachableError) as raised:
        AIAAClient(url).models()
    assert SECRET_PASSWORD not in str(raised.value) and SECRET_PASSWORD not in str(raised.value.details)


def test_a_bad_header_value_is_refused_without_showing_it():
    with pytest.raises(errors.InputError) as raised:
        AIAAClient("http://127.0.0.1:9", headers={"X-Api-Key": "schlüssel-" + SECRET_HEADER})
    assert "X-Api-Key" in one_sentence(raised.value) and SECRET_HEADER not in str(raised.value)
    with pytest.raises(errors.InputError):
        AIAAClient("http://127.0.0.1:9", headers={"X-Api-Key": "a\r\nInjected: yes"})


# --- slow servers ---------------------------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["trickle", "trickle-headers"])
def test_a_trickling_server_is_cut_off_at_the_overall_deadline(hostile, behaviour):
    here, _ = hostile
    client = AIAAClient(f"{here.url}/{behaviour}", read_timeout=30, deadline=1.5)
    started = time.monotonic()
    with pytest.raises(errors.ServerTimeoutError) as raised:
        client.models()
    elapsed = time.monotonic() - started
    assert "overall deadline of 1.5 s" in one_sentence(raised.value)
    assert elapsed < 15  # each byte arrives well within the read timeout; only the deadline can end this


def test_the_deadline_applies_to_each_request_not_to_the_client(reference_server):
    client = AIAAClient(reference_server.url, deadline=2)
    for _ in range(3):
        client.models()
        time.sleep(0.8)  # 2.4 s in all: a deadline per client would have fired
    assert client.models()


@pytest.mark.parametrize("value", [-1, 0, float("nan"), float("inf"), "soon"])
@pytest.mark.parametrize("option", ["connect_timeout", "read_timeout", "deadline"])
def test_timeouts_must_be_positive_finite_seconds(option, value):
    with pytest.raises(errors.InputError) as raised:
        AIAAClient("http://127.0.0.1:9", **{option: value})
    assert "seconds" in one_sentence(raised.value)


# --- lying answers --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "negative", "plus", "hex", "disagreeing", "empty"])
def test_an_invalid_content_length_is_refused_as_framing_error(hostile, value):
    # RFC 9112 §6.3: an invalid Content-Length makes the framing unrecoverable; read-to-close is not a way out.
    here, _ = hostile
    with pytest.raises(errors.MalformedResponseError) as raised:
        AIAAClient(f"{here.url}/content-length/{value}").models()
    text = one_sentence(raised.value)
    assert "invalid Content-Length" in text and here.url in text


def test_an_invalid_content_length_is_refused_by_the_monailabel_client_too(hostile):
    from ClaraAWSLib.backends.monailabel.client import MONAILabelClient

    here, _ = hostile
    with pytest.raises(errors.MalformedResponseError, match="invalid Content-Length"):
        MONAILabelClient(f"{here.url}/content-length/abc").models()


@pytest.mark.parametrize("value", ["exact", "repeated"])
def test_a_valid_content_length_is_read(hostile, value):
    here, _ = hostile
    assert [m["name"] for m in AIAAClient(f"{here.url}/content-length/{value}").models()] == ["m"]


def test_an_answer_claiming_an_absurd_length_is_refused_in_words_a_person_reads(hostile):
    here, _ = hostile
    with pytest.raises(errors.ResultTooLargeError) as raised:
        AIAAClient(f"{here.url}/content-length/huge").models()
    text = one_sentence(raised.value)
    assert "would be more than 1000 TB" in text and not re.search(r"\d{7,}", text)


def test_a_content_length_in_fullwidth_digits_is_shown_as_sent(hostile):
    here, _ = hostile
    with pytest.raises(errors.MalformedResponseError) as raised:
        AIAAClient(f"{here.url}/content-length/fullwidth").models()
    text = one_sentence(raised.value)
    assert "invalid Content-Length" in text and re.search("'[\uff10-\uff19]+'", text), text


def test_a_chunk_size_that_is_no_number_is_a_framing_error_not_a_cut(hostile):
    here, _ = hostile
    with pytest.raises(errors.MalformedResponseError) as raised:
        AIAAClient(f"{here.url}/bad-chunk").models()
    text = one_sentence(raised.value)
    assert "chunk whose size is not a hexadecimal number" in text and "cut off" not in text


def test_json_cut_off_midway_says_so(hostile):
    here, _ = hostile
    with pytest.raises(errors.MalformedResponseError) as raised:
        AIAAClient(f"{here.url}/cut-json").models()
    assert "middle of its JSON" in one_sentence(raised.value)


@pytest.mark.parametrize("behaviour, words", [("labels-5", "labels of model 'm'"), ("name-123", "name is 123")])
def test_a_malformed_model_list_is_one_sentence(hostile, behaviour, words):
    here, _ = hostile
    with pytest.raises(errors.MalformedResponseError) as raised:
        AIAAClient(f"{here.url}/{behaviour}").models()
    assert words in one_sentence(raised.value)


def test_an_endless_json_answer_is_cut_off(hostile):
    here, _ = hostile
    with pytest.raises(errors.ResultTooLargeError) as raised:
        AIAAClient(f"{here.url}/flood").models()
    assert "MB" in one_sentence(raised.value)


# --- bombs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["bomb-claims-huge", "bomb-inflates", "bomb-not-nifti", "nrrd-huge"])
def test_a_compression_bomb_is_refused_before_it_inflates(hostile, behaviour):
    here, _ = hostile
    here.claimed_size = TINY.grid.size
    result = AIAAClient(f"{here.url}/{behaviour}").segmentation("m", TINY)
    with pytest.raises(errors.ResultTooLargeError) as raised:
        result.labels()
    assert "nothing was changed" in one_sentence(raised.value)


def test_a_result_shorter_than_its_grid_is_refused(hostile):
    here, _ = hostile
    here.claimed_size = (64, 64, 64)
    input_volume = Volume(np.zeros((64, 64, 64), np.int16), ImageGrid((64, 64, 64), (1, 1, 1), (0, 0, 0)))
    result = AIAAClient(f"{here.url}/wrong-grid").segmentation("m", input_volume)
    with pytest.raises(errors.MalformedResponseError, match="shorter than its header"):
        result.labels()


# --- sessions -------------------------------------------------------------------------------


def test_a_hostile_session_id_never_reaches_a_request_path(hostile):
    here, _ = hostile
    client = AIAAClient(f"{here.url}/hostile-session")
    with pytest.raises(errors.MalformedResponseError) as raised:
        client.create_session(TINY)
    assert "session id" in one_sentence(raised.value)
    session = ImageSession(HOSTILE_SESSION_ID, encode_volume(TINY))
    with pytest.raises(errors.MalformedResponseError):
        client.close_session(session)
    with pytest.raises(errors.MalformedResponseError):
        client.session_info(HOSTILE_SESSION_ID)
    assert [seen.method for seen in here.seen] == ["PUT"]  # no DELETE /v1/models, nothing after the PUT


def test_a_session_rejected_twice_says_so(hostile):
    here, _ = hostile
    client = AIAAClient(f"{here.url}/session-rejected")
    session = client.create_session(TINY)
    with pytest.raises(errors.SessionExpiredError) as raised:
        client.dextr3d("m", [[1, 1, 1]] * 6, session=session)
    assert "rejected twice" in one_sentence(raised.value)
    assert [seen.method for seen in here.seen] == ["PUT", "POST", "PUT", "POST"]


# --- points and URLs ------------------------------------------------------------------------


def test_points_outside_the_volume_are_refused_before_any_upload(hostile):
    here, _ = hostile
    client = AIAAClient(f"{here.url}/honest")
    with pytest.raises(errors.InputError) as raised:
        client.dextr3d("m", [[1, 1, 1]] * 5 + [[6, 0, 0]], TINY)
    assert "Point 6 at voxel [6, 0, 0] lies outside" in one_sentence(raised.value)
    with pytest.raises(errors.InputError, match="Background point 1"):
        client.deepgrow("m", [[0, 0, 0]], [[0, -1, 0]], image=TINY)
    session = ImageSession("s1", encode_volume(TINY))
    with pytest.raises(errors.InputError, match="Foreground point 1"):
        client.deepgrow("m", [[0, 0, 4]], session=session)
    assert here.seen == []


@pytest.mark.parametrize("url", ["http://[::1", "http://host:99999", "http://[not-an-ip]:5000"])
def test_malformed_urls_are_one_sentence(url):
    with pytest.raises(errors.InputError) as raised:
        AIAAClient(url)
    assert "not a valid server address" in one_sentence(raised.value)


def test_plain_http_to_an_https_server_says_so(tls_reference_server):
    url = tls_reference_server.url.replace("https://", "http://")
    with pytest.raises(errors.ServerError) as raised:
        AIAAClient(url, read_timeout=10).models()
    assert "https://" in one_sentence(raised.value) and "HTTPS" in str(raised.value)

