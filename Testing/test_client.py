"""The AIAA client against real servers on 127.0.0.1: our reference server and one of another make."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from ClaraAWSLib.core import errors
from ClaraAWSLib.backends.aiaa.client import AIAAClient
from ClaraAWSLib.core.imageio import encode_volume, write_image_file


def test_models_are_listed_and_filtered(reference_server):
    client = AIAAClient(reference_server.url)
    models = client.models()
    types = {m["type"] for m in models}
    assert {"segmentation", "annotation", "deepgrow"} <= types
    assert all(isinstance(m["labels"], list) and isinstance(m["description"], str) for m in models)
    annotation = client.models(type="annotation")
    assert annotation and all(m["type"] == "annotation" for m in annotation)
    label = models[0]["labels"][0]
    assert all(label in m["labels"] for m in client.models(label=label))
    assert client.model(models[0]["name"])["name"] == models[0]["name"]
    with pytest.raises(errors.NotFoundError):
        client.model("no_such_model")


def test_auto_segmentation_returns_labels_on_the_input_grid(reference_server, phantom_small):
    client = AIAAClient(reference_server.url)
    result = client.inference("phantom_abdomen_seg", phantom_small.ct)
    labels = result.labels()
    assert labels.grid.matches(phantom_small.ct.grid)
    assert labels.array.shape == phantom_small.ct.array.shape
    for value in range(1, len(phantom_small.labels) + 1):
        truth = phantom_small.truth.array == value
        found = labels.array == value
        assert 2 * np.count_nonzero(truth & found) / (truth.sum() + found.sum()) > 0.85
    assert result.bytes_sent > 0 and set(result.timings) >= {"encode", "upload", "wait", "download"}
    assert client.segmentation("phantom_abdomen_seg", phantom_small.ct).labels().array.max() == len(phantom_small.labels)


def _extreme_points(mask: np.ndarray):
    k, j, i = np.nonzero(mask)
    points = []
    for axis in (i, j, k):
        for pick in (np.argmin(axis), np.argmax(axis)):
            points.append([int(i[pick]), int(j[pick]), int(k[pick])])
    return points


def test_extreme_points_and_deepgrow_clicks(reference_server, phantom_small):
    client = AIAAClient(reference_server.url)
    spleen = phantom_small.truth.array == phantom_small.labels.index("spleen") + 1
    result = client.dextr3d("region_grow_annotation", _extreme_points(spleen), phantom_small.ct)
    found = result.labels().array > 0
    assert 2 * np.count_nonzero(found & spleen) / (found.sum() + spleen.sum()) > 0.7
    k, j, i = (int(v) for v in np.argwhere(spleen).mean(axis=0).round())
    grown = client.deepgrow("region_grow_deepgrow", [[i, j, k]], [], phantom_small.ct, current_point=[i, j, k]).labels().array > 0
    assert grown[k, j, i] and np.count_nonzero(grown & spleen) > 0.5 * grown.sum()
    flat = client.deepgrow("region_grow_deepgrow_2d", [[i, j, k]], [], phantom_small.ct, current_point=[i, j, k]).labels().array
    assert flat[k].any() and not np.delete(flat, k, axis=0).any()


def test_strict_server_errors_reach_the_user_as_one_sentence(reference_server, phantom_small):
    client = AIAAClient(reference_server.url)
    with pytest.raises(errors.RemoteError) as raised:  # the client's own checks would refuse too few points
        client.run("dextr3d", "region_grow_annotation", phantom_small.ct, params={"points": [[1, 2, 3]] * 5})
    assert "\n" not in str(raised.value) and "HTTP 4" in str(raised.value)
    with pytest.raises(errors.ServerError):
        client.inference("no_such_model", phantom_small.ct)


def test_sessions_upload_once_and_recover_from_expiry(reference_server, phantom_small):
    client = AIAAClient(reference_server.url)
    before = reference_server.stats.image_uploads
    session = client.create_session(phantom_small.ct)
    assert reference_server.stats.image_uploads == before + 1
    assert isinstance(client.session_info(session), dict)
    spleen = phantom_small.truth.array == phantom_small.labels.index("spleen") + 1
    points = _extreme_points(spleen)
    first = client.dextr3d("region_grow_annotation", points, session=session).labels()
    second = client.dextr3d("region_grow_annotation", points, session=session).labels()
    assert reference_server.stats.image_uploads == before + 1  # later calls carry no image
    assert np.array_equal(first.array, second.array) and first.grid.matches(phantom_small.ct.grid)

    reference_server.sessions.expire_all()
    third = client.dextr3d("region_grow_annotation", points, session=session).labels()
    assert np.array_equal(first.array, third.array)
    assert session.uploads == 2 and reference_server.stats.image_uploads == before + 2

    assert client.close_session(session) is True
    with pytest.raises(errors.SessionExpiredError):
        client.session_info(session)


def test_upload_progress_and_cancel(reference_server, phantom_small):
    client = AIAAClient(reference_server.url)
    seen = []
    client.inference("phantom_abdomen_seg", phantom_small.ct, progress=lambda sent, total: seen.append((sent, total)))
    assert seen and seen[-1][0] == seen[-1][1] and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))

    cancel = threading.Event()

    def cancel_half_way(sent, total):
        if sent > total // 2:
            cancel.set()

    with pytest.raises(errors.CancelledError):
        client.inference("phantom_abdomen_seg", phantom_small.ct, progress=cancel_half_way, cancel=cancel)
    # The client is still usable after a cancelled upload.
    assert client.models()


def test_tls_is_verified_by_default(tls_reference_server, self_signed_certificate):
    cert_path, _ = self_signed_certificate
    url = tls_reference_server.url.replace("http://", "https://")
    with pytest.raises(errors.TLSError) as raised:
        AIAAClient(url).models()
    assert "certificate" in str(raised.value)
    assert AIAAClient(url, verify=str(cert_path)).models()
    assert AIAAClient(url, verify=False).models()
    with pytest.raises(errors.InputError, match="CA bundle"):
        AIAAClient(url, verify="/no/such/bundle.pem")


@pytest.mark.parametrize("suffix", [".nrrd", ".nii", ".nii.gz"])
def test_a_server_of_another_make(tmp_path, oblique_volume, suffix):
    from loopback_servers import OtherAIAAServer

    with OtherAIAAServer(result_suffix=suffix, prefix="/aiaa") as server:
        client = AIAAClient(server.url + "/aiaa/")
        assert [m["name"] for m in client.models()] == ["other_threshold", "other_box"]
        # It ignores ?model= and lists every model: the one asked for is found among them, no other.
        assert client.model("other_box")["name"] == "other_box"
        with pytest.raises(errors.UnknownModelError, match="no model named 'other'"):
            client.model("other")
        labels = client.inference("other_threshold", oblique_volume).labels()
        assert labels.grid.matches(oblique_volume.grid)
        expected = (oblique_volume.array > 100).astype(np.uint8) + (oblique_volume.array > 200)
        assert np.array_equal(labels.array, expected)
        session = client.create_session(oblique_volume)
        box = client.dextr3d("other_box", [[5, 6, 7], [9, 10, 11], [5, 10, 7], [9, 6, 11], [7, 8, 9], [6, 7, 8]], session=session)
        assert box.labels().array[7:12, 6:11, 5:10].all()
        # Upload names are generated, and the load balancer's cookie comes back (stickiness).
        assert all(re.fullmatch(r"volume-[0-9a-f]{12}\.nii\.gz", name) for name in server.received_filenames)
        assert any(cookie and "AWSALB=sticky-target-1" in cookie for cookie in server.cookies_received)
        with pytest.raises(errors.NotFoundError, match="path prefix"):
            AIAAClient(server.url).models()


def test_a_file_path_can_be_sent(tmp_path, reference_server, phantom_small):
    path = tmp_path / "patient_name_here.nii.gz"
    write_image_file(phantom_small.ct, path)
    labels = AIAAClient(reference_server.url).inference("phantom_abdomen_seg", path).labels()
    assert labels.grid.matches(phantom_small.ct.grid)


def test_encoded_images_are_reused_without_encoding_again(reference_server, phantom_small):
    encoded = encode_volume(phantom_small.ct)
    result = AIAAClient(reference_server.url).inference("phantom_abdomen_seg", encoded)
    assert result.timings["encode"] < 0.01 and result.bytes_sent > encoded.size_bytes


def test_download_progress_follows_the_result(reference_server, phantom_small):
    seen = []
    result = AIAAClient(reference_server.url).inference(
        "phantom_abdomen_seg", phantom_small.ct, download_progress=lambda received, total: seen.append((received, total))
    )
    assert seen and seen[-1][0] == seen[-1][1] > len(result.image_bytes)  # the whole multipart body arrived
    assert all(a[0] < b[0] for a, b in zip(seen, seen[1:]))
