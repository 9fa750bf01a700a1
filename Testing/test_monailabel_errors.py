"""MONAI Label error answers the real server gives only by accident, on a fake server on 127.0.0.1: one sentence each."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ClaraAWSLib.backends import connect
from ClaraAWSLib.backends.monailabel import MONAILabelClient
from ClaraAWSLib.core import errors
from ClaraAWSLib.core.geometry import ImageGrid, Volume
from monailabel_fakes import FakeMonaiLabel

VOLUME = Volume(np.zeros((6, 8, 10), np.int16), ImageGrid((10, 8, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))


@pytest.fixture
def fake():
    with FakeMonaiLabel() as server:
        yield server


def one_sentence(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text and text.endswith(".") and "Traceback" not in text
    return text


def test_a_bare_500_on_a_session_that_still_exists_is_a_model_failure_not_a_second_upload(fake):
    client = MONAILabelClient(fake.url)
    session = client.create_session(VOLUME)
    with pytest.raises(errors.RemoteError) as caught:
        client.infer("seg", session=session)
    assert "failed to run model 'seg'" in one_sentence(caught.value)
    assert session.uploads == 1 and fake.sessions == 1  # it asked the session, found it alive, did not re-send


def test_a_validation_422_names_the_field(fake):
    detail = {"detail": [{"type": "missing", "loc": ["body", "file"], "msg": "Field required", "input": None}]}
    fake.infer_answer = (422, "application/json", json.dumps(detail).encode())
    with pytest.raises(errors.RemoteError) as caught:
        MONAILabelClient(fake.url).infer("seg", image=VOLUME)
    assert "HTTP 422: file: Field required" in one_sentence(caught.value)


def test_a_running_training_429_is_one_sentence(fake):
    fake.infer_answer = (429, "application/json", b'{"detail":"++++++++++ Train Task is Already Running"}')
    with pytest.raises(errors.RemoteError) as caught:
        MONAILabelClient(fake.url).start_training("seg", max_epochs=2)
    assert "already going" in one_sentence(caught.value)
    assert json.loads(fake.requests[-1][3]) == {"max_epochs": 2}


def test_auth_login_sends_the_bearer_token_and_never_shows_the_password(fake):
    fake.token, fake.password = "t0ken", "s3cret-pass"
    with pytest.raises(errors.AuthorizationError) as caught:
        connect(fake.url).models()
    assert "log in" in one_sentence(caught.value)
    with pytest.raises(errors.AuthorizationError) as caught:
        MONAILabelClient(fake.url, username="ann", password="wrong")
    assert "s3cret" not in str(caught.value) and "wrong" not in str(caught.value)
    client = connect(fake.url, backend="monailabel", username="ann", password="s3cret-pass")
    assert [m["name"] for m in client.models()] == ["seg"]
    assert fake.requests[-1][2].get("Authorization") == "Bearer t0ken"


def test_redirects_same_origin_followed_other_origin_refused_with_nothing_sent_there(fake):
    with FakeMonaiLabel() as elsewhere:
        assert MONAILabelClient(fake.url).info()["name"] == "fake"  # /info/ directly
        fake.redirect_info_to = elsewhere.url
        with pytest.raises(errors.RedirectError) as caught:
            connect(fake.url, backend="monailabel").models()
        one_sentence(caught.value)
        assert elsewhere.requests == []


def test_detection_says_when_a_server_is_neither(misbehaving_server):
    with pytest.raises(errors.MalformedResponseError) as caught:
        connect(misbehaving_server.url + "/status-404")
    assert "neither as a MONAI Label server" in one_sentence(caught.value)
    with pytest.raises(errors.InputError):
        connect(misbehaving_server.url, backend="triton")


def test_tls_is_verified_for_monailabel_too(tls_reference_server, self_signed_certificate):
    cert, _ = self_signed_certificate
    url = tls_reference_server.url.replace("http://", "https://")
    with pytest.raises(errors.TLSError):
        connect(url, backend="monailabel").models()
    # With the CA bundle the handshake passes and the (AIAA) server's 404 for /info/ is what remains.
    with pytest.raises(errors.NotFoundError):
        connect(url, backend="monailabel", verify=cert).models()


def test_model_types_per_task(fake):
    from ClaraAWSLib.backends import ANNOTATE, AUTO_SEGMENT, DEEPEDIT, DEEPGROW

    backend = connect(fake.url)
    assert backend.model_types_for(AUTO_SEGMENT) == ("segmentation",)
    assert set(backend.model_types_for(DEEPGROW)) == {"deepgrow", "deepedit"}
    assert backend.model_types_for(DEEPEDIT) == ("deepedit",)
    assert backend.model_types_for(ANNOTATE) == ()
    with pytest.raises(errors.InputError, match="no extreme-point"):
        backend.check_model_task(backend.model("seg"), ANNOTATE)


def test_uploads_carry_generated_names_progress_and_cancel(fake):
    import re
    import threading

    client = MONAILabelClient(fake.url)
    seen = []
    session = client.create_session(VOLUME, progress=lambda sent, total: seen.append((sent, total)))
    assert seen and seen[-1][0] == seen[-1][1] and [s for s, _ in seen] == sorted(s for s, _ in seen)
    client.upload_image(VOLUME)
    client.save_label("x", VOLUME, {"spleen": 1})
    names = [re.findall(rb'filename="([^"]*)"', body) for _, path, _, body in fake.requests if body]
    names = [name for found in names for name in found]
    assert len(names) == 3 and all(re.fullmatch(rb"volume-[0-9a-f]{12}\.nii\.gz", name) for name in names)
    cancel = threading.Event()
    cancel.set()
    before = len(fake.requests)
    with pytest.raises(errors.CancelledError):
        client.infer("seg", session=session, cancel=cancel)
    assert len(fake.requests) == before  # nothing was sent


def test_cli_discover_takes_output_keys(monkeypatch):
    from ClaraAWSLib.cli.commands import build_parser

    args = build_parser().parse_args(["discover", "--output-key", "MonaiLabelUrl", "--output-key", "ClaraServiceUrl"])
    assert args.output_key == ["MonaiLabelUrl", "ClaraServiceUrl"]
    args = build_parser().parse_args(["models", "--stack", "s", "--output-key", "MonaiLabelUrl", "--backend", "monailabel"])
    assert args.output_key == ["MonaiLabelUrl"] and args.backend == "monailabel"


def test_a_running_training_reports_its_own_epoch_not_the_previous_runs(fake):
    fake.info["train_stats"] = {"seg": {"epoch": 10, "total_epochs": 10, "best_metric": 0.9}}  # the last run's
    task = {"id": "t", "status": "RUNNING", "request": {"model": "seg", "max_epochs": 5},
            "details": ["... Epoch[2] Complete. Time taken: 00:00:01", "... Epoch[3] Complete. Time taken: 00:00:01"]}
    fake.infer_answer = (200, "application/json", json.dumps(task).encode())
    status = MONAILabelClient(fake.url).training_status()
    assert (status.status, status.epoch, status.total_epochs, status.best_metric) == ("RUNNING", 3, 5, None)
    assert status.summary() == "RUNNING, epoch 3 of 5"
    fake.infer_answer = (200, "application/json", json.dumps(dict(task, status="DONE")).encode())
    done = MONAILabelClient(fake.url).training_status()
    assert (done.epoch, done.total_epochs, done.best_metric) == (10, 10, 0.9)
