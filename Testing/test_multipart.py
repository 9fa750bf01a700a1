"""multipart/form-data without cgi: the streamed request body and the response parser."""

from __future__ import annotations

import threading

import pytest

from ClaraAWSLib.core.errors import CancelledError, MalformedResponseError
from ClaraAWSLib.core.multipart import FilePart, MultipartBody, parse_multipart


def test_body_round_trips_through_the_parser_and_reports_progress():
    seen = []
    payload = bytes(range(256)) * 1000
    body = MultipartBody({"params": '{"a": 1}'}, FilePart("datapoint", "volume-x.nii.gz", payload), progress=lambda s, t: seen.append((s, t)))
    data = b""
    while True:
        chunk = body.read(7000)
        if not chunk:
            break
        data += chunk
    assert len(data) == len(body)
    parts = parse_multipart(body.content_type, data)
    assert [(p.name, p.filename) for p in parts] == [("params", None), ("datapoint", "volume-x.nii.gz")]
    assert parts[0].text() == '{"a": 1}' and parts[1].data == payload
    assert seen[-1] == (len(body), len(body)) and all(a <= b for (a, _), (b, _) in zip(seen, seen[1:]))


def test_cancel_stops_the_body_between_chunks():
    cancel = threading.Event()
    body = MultipartBody({}, FilePart("datapoint", "v.nii", b"x" * 100000), cancel=cancel)
    body.read(1000)
    cancel.set()
    with pytest.raises(CancelledError):
        body.read(1000)


def test_parser_takes_quoted_boundaries_preamble_and_lf_only_bodies():
    body = b"preamble\r\n--q\r\nContent-Disposition: form-data; name=\"file\"; filename=\"r.nrrd\"\r\n\r\nNRRD\r\n--q--\r\nepilogue"
    parts = parse_multipart('multipart/form-data; boundary="q"', body)
    assert parts[0].filename == "r.nrrd" and parts[0].data == b"NRRD"
    lf = b'--q\nContent-Disposition: form-data; name="params"\n\n{}\n--q--\n'
    assert parse_multipart("multipart/form-data; boundary=q", lf)[0].data == b"{}"


def test_parser_refuses_broken_bodies():
    with pytest.raises(MalformedResponseError, match="boundary"):
        parse_multipart("multipart/form-data", b"--x--")
    with pytest.raises(MalformedResponseError, match="cut short"):
        parse_multipart("multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\nxx')
