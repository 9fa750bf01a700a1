"""A result image must hold its own voxels: a header naming another file is refused before ITK opens it.

A NRRD ``data file`` or a MetaImage ``ElementDataFile`` can name any path on the user's machine; ITK would
read that file's bytes as voxels (a hostile server copying the user's files into OUTPUT, or into the
image ``next`` saves and ``segment`` later uploads), or block for good on a FIFO.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest
import SimpleITK as sitk

from ClaraAWSLib.backends.aiaa.client import AIAAClient
from ClaraAWSLib.core import errors
from ClaraAWSLib.core.geometry import ImageGrid, Volume
from ClaraAWSLib.core.result_images import decode_image
from hostile_servers import HostileServer

SIZE = (6, 5, 4)  # i, j, k
VOXELS = int(np.prod(SIZE))
TINY = Volume(np.zeros(SIZE[::-1], np.int16), ImageGrid(SIZE, (1, 1, 1), (0, 0, 0)))


@pytest.fixture
def secret(tmp_path):
    """A file of the user's that holds exactly one image's worth of bytes."""
    path = tmp_path / "credentials"
    path.write_bytes((b"aws_secret_access_key=EXAMPLE\n" * 10)[:VOXELS])
    return path


def nrrd_header(field: str) -> bytes:
    return (f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: {' '.join(map(str, SIZE))}\nencoding: raw\n"
            f"{field}\n\n").encode()


def metaimage_header(lines: bytes) -> bytes:
    return (b"ObjectType = Image\nNDims = 3\nDimSize = " + " ".join(map(str, SIZE)).encode()
            + b"\nElementType = MET_UCHAR\n" + lines)


def detached_results(secret):
    relative = os.path.relpath(secret, "/tmp")  # ITK resolves a relative name from the header's folder
    return {
        "nrrd data file": (nrrd_header(f"data file: {secret}"), "result.nrrd"),
        "nrrd datafile": (nrrd_header(f"datafile: {secret}"), "result.nrrd"),
        "nrrd relative": (nrrd_header(f"data file: ../../../../../../..{'/' if relative[0] != '/' else ''}"
                                      f"{secret}"), "result.nrrd"),
        "nrrd with no name": (nrrd_header(f"data file: {secret}"), "result"),
        "nrrd named as nifti": (nrrd_header(f"data file: {secret}"), "result.nii.gz"),
        "nhdr": (nrrd_header(f"data file: {secret}"), "result.nhdr"),
        "mha": (metaimage_header(f"ElementDataFile = {secret}\n".encode()), "result.mha"),
        "mhd": (metaimage_header(f"ElementDataFile = {secret}\n".encode()), "result.mhd"),
        "mha key cut by a NUL": (metaimage_header(b"Comment\0 = x\nElementDataFile = LOCAL\n" + bytes(VOXELS)),
                                 "result.mha"),
        "mha lone CR": (metaimage_header(b"Comment = x\rElementDataFile = LOCAL\n" + bytes(VOXELS)), "result.mha"),
        "mha header size": (metaimage_header(b"HeaderSize = -1\nElementDataFile = LOCAL\n" + bytes(VOXELS)),
                            "result.mha"),
    }


@pytest.mark.parametrize("kind", list(detached_results("/x")))
def test_a_result_whose_header_names_another_file_is_refused(secret, kind):
    data, filename = detached_results(secret)[kind]
    with pytest.raises(errors.MalformedResponseError) as raised:
        decode_image(data, filename)
    assert "does not hold its own voxels" in str(raised.value) and "\n" not in str(raised.value)
    assert str(secret) not in str(raised.value)


def test_a_result_naming_a_fifo_is_refused_at_once_instead_of_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome = []

    def decode():
        try:
            decode_image(metaimage_header(f"ElementDataFile = {fifo}\n".encode()), "result.mha")
        except errors.MalformedResponseError as error:
            outcome.append(error)

    worker = threading.Thread(target=decode, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # free the blocked reader so the test run can end
        with open(fifo, "wb"):
            pass
    assert outcome, "the client blocked on the FIFO"


def written_by_itk(tmp_path, suffix: str, compress: bool) -> tuple:
    array = np.arange(VOXELS, dtype=np.uint8).reshape(SIZE[::-1]) % 3
    image = sitk.GetImageFromArray(array)
    path = tmp_path / f"written{suffix}"
    sitk.WriteImage(image, str(path), compress)
    return path.read_bytes(), array


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
@pytest.mark.parametrize("compress", [False, True])
def test_single_file_results_as_itk_writes_them_are_read(tmp_path, suffix, compress):
    data, array = written_by_itk(tmp_path, suffix, compress)
    assert np.array_equal(decode_image(data, f"result{suffix}").array, array)


def test_a_hand_written_single_file_nrrd_and_mha_are_read(tmp_path):
    voxels = bytes(range(VOXELS))
    expected = np.frombuffer(voxels, np.uint8).reshape(SIZE[::-1])
    gz = decode_image(nrrd_header("# comment").replace(b"encoding: raw", b"encoding: gzip") + gzip.compress(voxels),
                      "result.nrrd")
    assert np.array_equal(gz.array, expected)
    compressed = zlib.compress(voxels)
    mha = decode_image(metaimage_header(b"CompressedData = True\nCompressedDataSize = " + str(len(compressed)).encode()
                                        + b"\r\nElementDataFile = LOCAL\r\n") + compressed, "result.mha")
    assert np.array_equal(mha.array, expected)


def test_the_client_refuses_such_a_result_from_a_server(secret):
    with HostileServer() as server:
        server.result_file = detached_results(secret)["nrrd with no name"]
        result = AIAAClient(f"{server.url}/scripted-result").segmentation("m", TINY)
        with pytest.raises(errors.MalformedResponseError):
            result.labels()


def test_segment_writes_nothing_and_says_why(secret, tmp_path):
    source = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16, 16), np.int16)), str(source))
    output = tmp_path / "out.nii.gz"
    with HostileServer() as server:
        server.claimed_size = (16, 16, 16)
        server.result_file = (nrrd_header(f"data file: {secret}").replace(b"6 5 4", b"16 16 16"), "result.nrrd")
        done = subprocess.run([sys.executable, "-m", "ClaraAWSLib.cli", "segment", "--server",
                               f"{server.url}/scripted-result", "--model", "m", str(source), "-o", str(output)],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "does not hold its own voxels" in done.stderr and "Traceback" not in done.stderr
    assert not output.exists()
