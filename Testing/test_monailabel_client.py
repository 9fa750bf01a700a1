"""The MONAI Label backend against the real ``monailabel`` server (CPU) with the test app of Testing/monailabel/app.

Expected masks come from ``expected.py`` (plain numpy on the voxels the test made), never from the
client's own answer; geometry is checked on oblique, anisotropic, non-zero-origin volumes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from ClaraAWSLib.backends import AUTO_SEGMENT, DEEPEDIT, DEEPGROW, connect
from ClaraAWSLib.core import errors
from ClaraAWSLib.core.geometry import ImageGrid, Volume
from conftest import rotation

sys.path.insert(0, str(Path(__file__).resolve().parent / "monailabel" / "app"))
import expected  # noqa: E402  the test app's oracle, plain numpy

pytestmark = pytest.mark.monailabel


def organ_volume(size=(40, 32, 18), seed=5) -> Volume:
    """Two nested boxes (spleen-range 150 around a liver-range 250 core) plus noise below the thresholds."""
    grid = ImageGrid(size, (0.8, 0.7, 2.5), (-120.5, 35.25, -300.0), rotation(10, -15, 25))
    rng = np.random.default_rng(seed)
    array = rng.integers(-50, 90, size=size[::-1]).astype(np.int16)  # [k, j, i]
    array[4:14, 6:26, 5:33] = 150
    array[7:11, 10:20, 12:24] = 250
    return Volume(array, grid)


def ijk(array_kji: np.ndarray) -> np.ndarray:
    return np.asarray(array_kji, np.float32).transpose(2, 1, 0)


def assert_same_grid(result: ImageGrid, sent: ImageGrid) -> None:
    assert tuple(result.size) == tuple(sent.size)
    # NIfTI carries the geometry as float32: agreement to its rounding, not to float64.
    assert np.allclose(result.spacing, sent.spacing, atol=1e-5)
    assert np.allclose(result.origin, sent.origin, atol=1e-4)
    assert np.allclose(result.direction, sent.direction, atol=1e-5)


@pytest.fixture(scope="module")
def client(monailabel_server):
    backend = connect(monailabel_server.url)
    yield backend
    backend.close()


def test_detected_and_models_listed_with_values_by_name(client, monailabel_server, reference_server):
    assert client.kind == "monailabel"
    models = {m["name"]: m for m in client.models()}
    assert models["seg_threshold"]["labels"] == ["spleen", "liver"]
    assert models["seg_threshold"]["label_values"] == expected.SEG_LABELS
    # A plain list: each name's value is its position + 1, which is what the model returns for it.
    assert models["deepgrow_threshold"]["label_values"] == {"spleen": 1, "liver": 2}
    # DeepEdit's non-contiguous values, background left out.
    assert models["deepedit_threshold"]["label_values"] == {"spleen": 1, "liver": 6}
    assert models["deepedit_threshold"]["labels"] == ["spleen", "liver"]
    assert {m["type"] for m in models.values()} >= {"segmentation", "deepgrow", "deepedit"}
    assert connect(reference_server.url).kind == "aiaa"
    with pytest.raises(errors.ServerError) as caught:
        connect(monailabel_server.url, backend="aiaa").models()
    assert "\n" not in str(caught.value)


def test_auto_segment_by_file_is_voxel_exact_on_an_oblique_grid(client):
    volume = organ_volume()
    result = client.run_task(AUTO_SEGMENT, client.model("seg_threshold"), image=volume)
    labels = result.labels()
    assert_same_grid(labels.grid, volume.grid)
    assert np.array_equal(ijk(labels.array), expected.seg_threshold(ijk(volume.array)))
    assert set(np.unique(labels.array)) == {0, 1, 2}
    # Asked compressed: the mask travels in far fewer bytes than its voxels.
    assert len(result.image_bytes) < labels.array.size // 4


def test_session_clicks_send_no_volume_and_a_lost_session_is_sent_again_once(client, monailabel_server):
    volume = organ_volume(seed=8)
    session = client.create_session(volume)
    fg, bg = [[20, 15, 9]], [[21, 15, 9]]
    result = client.run_task(DEEPGROW, client.model("deepgrow_threshold"), session=session, foreground=fg, background=bg)
    assert np.array_equal(ijk(result.labels().array), expected.deepgrow(ijk(volume.array), fg, bg))
    assert result.bytes_sent < 2000  # only the clicks travelled
    # The server forgets the session (deleted behind the client's back): infer answers a bare 500.
    assert requests.delete(f"{monailabel_server.url}/session/{session.session_id}").status_code == 200
    again = client.run_task(DEEPGROW, client.model("deepgrow_threshold"), session=session, foreground=fg)
    assert session.uploads == 2
    assert np.array_equal(ijk(again.labels().array), expected.deepgrow(ijk(volume.array), fg, []))
    assert client.close_session(session) is True
    assert client.close_session(session) is False


def test_deepedit_clicks_per_label_and_a_click_edit_keeps_only_its_label(client):
    volume = organ_volume(seed=9)
    clicks = {"liver": [[18, 15, 9]], "spleen": [[8, 10, 6]], "background": [[18, 15, 9]]}
    model = client.model("deepedit_threshold")
    result = client.run_task(DEEPEDIT, model, image=volume, clicks=clicks)
    wanted = expected.deepedit(ijk(volume.array), clicks)
    assert set(np.unique(wanted)) == {0, 1, 6}
    assert np.array_equal(ijk(result.labels().array), wanted)
    edit = client.run_task(DEEPGROW, model, image=volume, foreground=[[18, 15, 9]], label="liver")
    liver_only = expected.deepedit(ijk(volume.array), {"liver": [[18, 15, 9]]}) == 6
    assert np.array_equal(ijk(edit.labels().array), liver_only.astype(np.uint8))
    with pytest.raises(errors.InputError, match="no label 'kidney'"):
        client.run_task(DEEPEDIT, model, image=volume, clicks={"kidney": [[1, 1, 1]]})
    with pytest.raises(errors.InputError, match="outside the volume"):
        client.run_task(DEEPEDIT, model, image=volume, clicks={"liver": [[400, 1, 1]]})


def test_bare_500s_become_one_sentence_each(client):
    volume = organ_volume(size=(12, 10, 6))
    with pytest.raises(errors.RemoteError) as caught:
        client.infer("no_such_model", image=volume)
    assert caught.value.status == 500 and "failed to run model 'no_such_model'" in str(caught.value)
    with pytest.raises(errors.RemoteError) as caught:
        client.save_label("never-uploaded", volume, {"spleen": 1})
    assert "no image of that id" in str(caught.value)
    with pytest.raises(errors.NotFoundError):
        client.download_image("never-uploaded")
    with pytest.raises(errors.InputError, match="no strategy 'nope'"):
        client.next_sample("nope")
    with pytest.raises(errors.InputError, match="no trainer 'nope'"):
        client.start_training("nope")


def test_datastore_upload_uses_a_generated_id_and_the_image_comes_back_exactly(client, monailabel_server):
    volume = organ_volume(seed=11)
    image_id = client.upload_image(volume)
    assert image_id.startswith("clara-") and len(image_id) == len("clara-") + 16
    listing = requests.get(f"{monailabel_server.url}/datastore/", params={"output": "all"}).json()["objects"]
    assert listing[image_id]["image"]["info"]["name"] == image_id + ".nii.gz"  # stored under the generated id only
    back = client.download_image(image_id)
    assert np.array_equal(back.array, volume.array)
    assert_same_grid(back.grid, volume.grid)
