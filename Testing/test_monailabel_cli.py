"""The ``clara-aws`` command line against the real MONAI Label server: the issue's CLI contract, and the
whole loop next -> segment -> correct -> submit -> train -> status -> the trained model listed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from ClaraAWSLib.core.imageio import read_image_file, write_image_file
from test_cli import assert_one_line_failure, clara_aws
from test_monailabel_client import assert_same_grid, expected, ijk, organ_volume

pytestmark = pytest.mark.monailabel


def test_models_json_contract_for_both_backends(monailabel_server, reference_server):
    run = clara_aws("models", "--server", monailabel_server.url, "--json")
    assert run.returncode == 0, run.stderr
    models = {m["name"]: m for m in json.loads(run.stdout)}
    for model in models.values():
        assert {"name", "type", "labels", "label_values", "description"} <= set(model)
        assert "background" not in model["labels"]
        assert model["labels"] == sorted(model["label_values"], key=model["label_values"].get)
    assert models["deepedit_threshold"]["label_values"] == {"spleen": 1, "liver": 6}
    assert models["deepgrow_threshold"]["label_values"] == {"spleen": 1, "liver": 2}
    forced = clara_aws("models", "--server", monailabel_server.url, "--backend", "monailabel", "--json")
    assert json.loads(forced.stdout) == json.loads(run.stdout)
    aiaa = clara_aws("models", "--server", reference_server.url, "--json")
    assert aiaa.returncode == 0, aiaa.stderr
    for model in json.loads(aiaa.stdout):
        assert model["label_values"] == {name: n + 1 for n, name in enumerate(model["labels"])}


def test_segment_deepgrow_and_deepedit_write_exact_masks(tmp_path, monailabel_server):
    volume = organ_volume(seed=21)
    source = tmp_path / "ct.nii.gz"
    write_image_file(volume, source)
    out = tmp_path / "seg.nii.gz"
    run = clara_aws("segment", "--server", monailabel_server.url, "--model", "seg_threshold", source, "-o", out)
    assert run.returncode == 0, run.stderr
    written = read_image_file(out)
    assert_same_grid(written.grid, volume.grid)
    assert np.array_equal(ijk(written.array), expected.seg_threshold(ijk(volume.array)))

    run = clara_aws("deepgrow", "--server", monailabel_server.url, "--model", "deepgrow_threshold", source, "-o", out,
                    "--fg", "20,15,9", "--bg", "21,15,9", "--session")
    assert run.returncode == 0, run.stderr
    assert np.array_equal(ijk(read_image_file(out).array), expected.deepgrow(ijk(volume.array), [[20, 15, 9]], [[21, 15, 9]]))

    run = clara_aws("deepedit", "--server", monailabel_server.url, "--model", "deepedit_threshold", source, "-o", out,
                    "--click", "liver=18,15,9", "--click", "spleen=8,10,6", "--click", "background=8,10,6")
    assert run.returncode == 0, run.stderr
    clicks = {"liver": [[18, 15, 9]], "spleen": [[8, 10, 6]], "background": [[8, 10, 6]]}
    assert np.array_equal(ijk(read_image_file(out).array), expected.deepedit(ijk(volume.array), clicks))

    assert_one_line_failure(clara_aws("segment", "--server", monailabel_server.url, "--model", "deepgrow_threshold",
                                      source, "-o", out), 2)
    assert_one_line_failure(clara_aws("deepedit", "--server", monailabel_server.url, "--model", "deepedit_threshold",
                                      source, "-o", out, "--click", "kidney=1,1,1"), 2)


def test_the_loop_next_segment_correct_submit_train_status_and_the_trained_model(tmp_path, monailabel_server):
    url = monailabel_server.url
    # Two images in the datastore, as a study folder would hold them (uploaded here over the API).
    for seed in (31, 32):
        files = {"file": ("x.nii.gz", _nifti(organ_volume(seed=seed), tmp_path / f"s{seed}.nii.gz"))}
        assert requests.put(f"{url}/datastore/image", params={"image": f"case{seed}"}, files=files).status_code == 200
    before = requests.get(f"{url}/datastore/").json()

    image = tmp_path / "next.nii.gz"
    run = clara_aws("next", "--server", url, "--strategy", "first", "-o", image, "--json")
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["path"] == str(image) and answer["id"].startswith("case")
    fetched = read_image_file(image)
    assert np.array_equal(fetched.array, organ_volume(seed=int(answer["id"][4:])).array)

    labels = tmp_path / "labels.nii.gz"
    assert clara_aws("segment", "--server", url, "--model", "seg_threshold", image, "-o", labels).returncode == 0
    corrected = read_image_file(labels)
    corrected.array[0:2] = 0  # the "correction": two slices cleared
    write_image_file(corrected, labels)
    run = clara_aws("submit", "--server", url, "--image-id", answer["id"], labels)
    assert run.returncode == 0, run.stderr
    after = requests.get(f"{url}/datastore/").json()
    assert after["completed"] == before["completed"] + 1
    saved = requests.get(f"{url}/datastore/label", params={"label": answer["id"], "tag": "final"})
    stored = read_image_file(_write(tmp_path / "stored.nii.gz", saved.content))
    assert np.array_equal(stored.array, corrected.array)

    bad = tmp_path / "bad.nii.gz"
    corrected.array[5, 5, 5] = 9
    write_image_file(corrected, bad)
    assert_one_line_failure(clara_aws("submit", "--server", url, "--image-id", answer["id"], bad), 2)

    run = clara_aws("train", "start", "--server", url, "--model", "seg_tiny", "--max-epochs", "2", "--wait", timeout=240)
    assert run.returncode == 0, run.stderr
    assert "Training finished" in run.stderr
    status = clara_aws("train", "status", "--server", url, "--json")
    payload = json.loads(status.stdout)
    assert payload["status"] == "DONE" and payload["total_epochs"] == 2 and payload["epoch"] == 2
    assert isinstance(payload["best_metric"], float)
    models = json.loads(clara_aws("models", "--server", url, "--json").stdout)
    assert "seg_tiny" in {m["name"] for m in models}
    stop = clara_aws("train", "stop", "--server", url)
    assert stop.returncode == 0 and "No training was running" in stop.stderr


def test_loop_commands_refuse_an_aiaa_server(tmp_path, reference_server):
    assert_one_line_failure(clara_aws("train", "status", "--server", reference_server.url), 2)
    assert_one_line_failure(clara_aws("next", "--server", reference_server.url, "-o", tmp_path / "n.nii.gz"), 2)


def _nifti(volume, path):
    write_image_file(volume, path)
    return path.read_bytes()


def _write(path, data):
    path.write_bytes(data)
    return path
