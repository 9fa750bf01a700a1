"""``clara-aws submit`` and ``train start --wait`` against the real MONAI Label server: what submit refuses
before anything is saved (a label on another grid, non-whole or no values, the image itself, a tag with
path characters), how it maps another model's values to the trainer's, and what Ctrl-C while waiting says.

Each test runs the real CLI against its own server (the loop tests elsewhere count the shared server's
labels); expected values come from the test app's oracle (``expected.py``) and the volumes made here.
"""

from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from ClaraAWSLib.core.geometry import ImageGrid, Volume
from ClaraAWSLib.core.imageio import read_image_file, write_image_file
from test_cli import assert_one_line_failure, clara_aws
from test_monailabel_client import organ_volume

sys.path.insert(0, str(Path(__file__).resolve().parent / "monailabel" / "app"))
import expected  # noqa: E402  the test app's oracle, plain numpy

pytestmark = pytest.mark.monailabel

#: The test app's trainer seg_tiny trains these values (Testing/monailabel/app/main.py).
TRAINER_VALUES = {"spleen": 1, "liver": 2}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server of this module's own: these tests add images, labels and a training run."""
    from monailabel_server import MonaiLabelServer, require_server_python

    started = MonaiLabelServer(require_server_python(), tmp_path_factory.mktemp("monailabel-submit")).start()
    try:
        yield started
    finally:
        started.stop()


def upload(server, image_id: str, volume: Volume, folder: Path) -> None:
    path = folder / f"{image_id}-image.nii.gz"
    write_image_file(volume, path)
    answer = requests.put(f"{server.url}/datastore/image", params={"image": image_id},
                          files={"file": ("x.nii.gz", path.read_bytes())}, data={"params": "{}"})
    assert answer.status_code == 200, answer.text


def label_file(folder: Path, name: str, array: np.ndarray, grid: ImageGrid) -> Path:
    path = folder / name
    write_image_file(Volume(array, grid), path)
    return path


def stored_labels(server, image_id: str) -> dict:
    """The image's labels as the server's datastore lists them (tag -> record)."""
    objects = requests.get(f"{server.url}/datastore/", params={"output": "all"}).json()["objects"]
    return objects[image_id].get("labels") or {}


def stored_final_label(server, image_id: str, folder: Path) -> Volume:
    answer = requests.get(f"{server.url}/datastore/label", params={"label": image_id, "tag": "final"})
    assert answer.status_code == 200, answer.text
    path = folder / f"{image_id}-stored.nii.gz"
    path.write_bytes(answer.content)
    return read_image_file(path)


def test_submit_refuses_a_label_on_another_grid_and_names_both(tmp_path, server):
    image = organ_volume(size=(40, 32, 18), seed=41)
    upload(server, "grid0", image, tmp_path)
    truth = expected.seg_threshold(image.array)

    corner = ImageGrid((20, 16, 9), image.grid.spacing, image.grid.origin, image.grid.direction)
    smaller = label_file(tmp_path, "small.nii.gz", np.ascontiguousarray(truth[:9, :16, :20]), corner)
    run = clara_aws("submit", "--server", server.url, "--image-id", "grid0", smaller)
    assert_one_line_failure(run, 2)
    assert "size [20, 16, 9]" in run.stderr and "size [40, 32, 18]" in run.stderr

    other = ImageGrid(image.grid.size, (1.6, 1.4, 5.0), (10.0, 20.0, 30.0), image.grid.direction)
    moved = label_file(tmp_path, "moved.nii.gz", truth, other)
    run = clara_aws("submit", "--server", server.url, "--image-id", "grid0", moved)
    assert_one_line_failure(run, 2)
    assert "[1.6, 1.4, 5.0]" in run.stderr and "[0.8, 0.7, 2.5]" in run.stderr
    assert "final" not in stored_labels(server, "grid0")

    same = label_file(tmp_path, "same.nii.gz", truth, image.grid)
    run = clara_aws("submit", "--server", server.url, "--image-id", "grid0", same)
    assert run.returncode == 0, run.stderr
    assert np.array_equal(stored_final_label(server, "grid0", tmp_path).array, truth)


def test_submit_for_another_model_maps_its_values_by_name_to_the_trainers(tmp_path, server):
    image = organ_volume(seed=42)
    upload(server, "model0", image, tmp_path)
    truth = expected.seg_threshold(image.array)  # in the trainer's values: spleen 1, liver 2
    in_deepedit_values = np.zeros_like(truth)
    for name, value in TRAINER_VALUES.items():
        in_deepedit_values[truth == value] = expected.DEEPEDIT_LABELS[name]  # liver is 6 there
    assert set(np.unique(in_deepedit_values)) == {0, 1, 6}
    labels = label_file(tmp_path, "deepedit.nii.gz", in_deepedit_values, image.grid)

    run = clara_aws("submit", "--server", server.url, "--image-id", "model0", labels, "--model", "deepedit_threshold")
    assert run.returncode == 0, run.stderr
    assert np.array_equal(stored_final_label(server, "model0", tmp_path).array, truth)
    label_info = stored_labels(server, "model0")["final"]["info"]["label_info"]
    assert {item["name"]: item["idx"] for item in label_info} == TRAINER_VALUES


def test_submit_refuses_values_that_are_not_whole_numbers(tmp_path, server):
    image = organ_volume(seed=43)
    upload(server, "float0", image, tmp_path)
    truth = expected.seg_threshold(image.array).astype(np.float32)
    halves = truth.copy()
    halves[truth == 2] = 1.5
    run = clara_aws("submit", "--server", server.url, "--image-id", "float0", label_file(tmp_path, "half.nii.gz", halves, image.grid))
    assert_one_line_failure(run, 2)
    assert "1.5" in run.stderr
    assert "final" not in stored_labels(server, "float0")

    # Whole values in a float image are a label all the same: stored as integers.
    run = clara_aws("submit", "--server", server.url, "--image-id", "float0", label_file(tmp_path, "whole.nii.gz", truth, image.grid))
    assert run.returncode == 0, run.stderr
    stored = stored_final_label(server, "float0", tmp_path).array
    assert stored.dtype.kind in "iu" and np.array_equal(stored, truth.astype(np.uint8))


def test_submit_refuses_a_label_without_labelled_voxels_unless_allowed(tmp_path, server):
    image = organ_volume(seed=44)
    upload(server, "empty0", image, tmp_path)
    empty = label_file(tmp_path, "empty.nii.gz", np.zeros(image.array.shape, np.uint8), image.grid)
    run = clara_aws("submit", "--server", server.url, "--image-id", "empty0", empty)
    assert_one_line_failure(run, 2)
    assert "no labelled voxel" in run.stderr
    assert "final" not in stored_labels(server, "empty0")

    run = clara_aws("submit", "--server", server.url, "--image-id", "empty0", empty, "--allow-empty")
    assert run.returncode == 0, run.stderr
    assert not stored_final_label(server, "empty0", tmp_path).array.any()


def test_submitting_the_image_as_its_label_says_so_in_one_short_sentence(tmp_path, server):
    image = organ_volume(seed=45)
    upload(server, "image0", image, tmp_path)
    ct = tmp_path / "ct.nii.gz"
    write_image_file(image, ct)
    unknown = set(np.unique(image.array).tolist()) - {0} - set(TRAINER_VALUES.values())
    assert len(unknown) > 100

    run = clara_aws("submit", "--server", server.url, "--image-id", "image0", ct)
    assert_one_line_failure(run, 2)
    assert f"{len(unknown):,} values" in run.stderr
    assert "is this the image rather than its label?" in run.stderr
    assert len(run.stderr) < 400 and run.stderr.count(",") < 15
    assert "final" not in stored_labels(server, "image0")


@pytest.mark.parametrize("tag", ["", " ", "../../evil", "a/b", "a\\b", "..", "x\ty"])
def test_submit_refuses_an_empty_tag_or_one_with_path_characters(tmp_path, server, tag):
    image = organ_volume(seed=46)
    upload(server, "tag0", image, tmp_path)
    labels = label_file(tmp_path, "labels.nii.gz", expected.seg_threshold(image.array), image.grid)
    run = clara_aws("submit", "--server", server.url, "--image-id", "tag0", labels, "--tag", tag)
    assert_one_line_failure(run, 2)
    assert "--tag" in run.stderr
    assert stored_labels(server, "tag0") == {}
    assert not [path for path in server.workdir.rglob("*") if "evil" in path.name]


def _read_until(stream, marker: bytes, timeout: float) -> bytes:
    """What ``stream`` gives until ``marker`` shows or ``timeout`` passes (a pipe read without blocking forever)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.5)
        if ready:
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    return seen
