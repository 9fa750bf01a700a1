"""An upload must hold its own voxels: the reference server never reads a file an upload's header names.

A MetaImage header may name its data file (``ElementDataFile = /etc/services``, ``../../x``, a LIST or a
pattern), a NRRD header too (``data file: ...``), and a NIfTI-1 pair or Analyze header keeps its voxels in a
``.img`` beside it. ITK follows such names on the server's disk: the server would segment its own files, tell
apart existing and missing paths, and hang on a FIFO while holding the process-wide ITK file lock, so every
other upload would hang too. Each of them must be answered 400 with one sentence before ITK sees the file,
the same sentence whether the named file exists or not; self-contained uploads keep working.
"""

from __future__ import annotations

import gzip
import os
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk

from conftest import running_reference_server
from server_fixtures import error_of, post_work

SEG = "phantom_abdomen_seg"
SIZE = (24, 24, 16)  # x, y, z
VOXELS = int(np.prod(SIZE))


def ct_array() -> np.ndarray:
    array = np.full(SIZE[::-1], -100, np.int16)
    array[4:12, 6:18, 6:18] = 60
    return array


@pytest.fixture
def outside(tmp_path) -> Path:
    """A file outside any upload, with voxel-sized content: what an upload's header must never reach."""
    path = tmp_path / "server-side" / "secret.raw"
    path.parent.mkdir()
    path.write_bytes(ct_array().tobytes())
    return path


def mha_header(data_file: str, *, element_type: str = "MET_SHORT", before_last: str = "") -> bytes:
    return (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        f"DimSize = {SIZE[0]} {SIZE[1]} {SIZE[2]}\nElementSpacing = 1 1 1\nElementType = {element_type}\n"
        f"{before_last}ElementDataFile = {data_file}\n"
    ).encode()


def nrrd_header(last_fields: str = "", newline: str = "\n") -> bytes:
    fields = ["NRRD0004", "type: short", "dimension: 3", f"sizes: {SIZE[0]} {SIZE[1]} {SIZE[2]}", "endian: little",
              "encoding: raw", *filter(None, last_fields.split("|"))]
    return (newline.join(fields) + newline + newline).encode()


def nifti1(magic: bytes, *, vox_offset: float = 352.0) -> bytes:
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *SIZE, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 4, 16)  # int16
    struct.pack_into("<8f", header, 76, 1.0, 1.0, 1.0, 1.0, 0, 0, 0, 0)
    struct.pack_into("<f", header, 108, vox_offset)
    struct.pack_into("<ff", header, 112, 1.0, 0.0)
    struct.pack_into("<hh", header, 252, 0, 1)
    struct.pack_into("<12f", header, 280, -1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1, 0)
    header[344:348] = magic
    return bytes(header)


def upload(url: str, tmp_path: Path, name: str, data: bytes, **options) -> requests.Response:
    path = tmp_path / "uploads" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return post_work(url, "segmentation", SEG, path, **options)


def refused(response: requests.Response, outside: Path) -> str:
    error = error_of(response, 400)
    assert len(error["message"]) == 1
    text = error["message"][0]
    assert "\n" not in text and text.endswith(".") and "Traceback" not in text
    assert str(outside.parent) not in text and "/etc" not in text
    return text


def hostile_uploads(outside: Path):
    """(name, upload file name, bytes): every one names voxels outside the upload."""
    voxels = ct_array().tobytes()
    climb = "../" * 12 + str(outside).lstrip("/")
    return [
        ("mha absolute path", "v.mha", mha_header(str(outside))),
        ("mha relative path upwards", "v.mha", mha_header(climb)),
        ("mha /etc/services", "v.mha", mha_header("/etc/services", element_type="MET_UCHAR")),
        ("mha LIST", "v.mha", mha_header("LIST") + f"{outside}\n".encode() * SIZE[2]),
        ("mha pattern", "v.mha", mha_header(f"{outside.parent}/slice%d.raw 1 {SIZE[2]} 1")),
        ("mha colon separator", "v.mha", mha_header(str(outside)).replace(b"ElementDataFile =", b"ElementDataFile:")),
        ("mha name then LOCAL", "v.mha", mha_header("LOCAL", before_last=f"ElementDataFile = {outside}\n") + voxels),
        ("mha lower-case key then LOCAL", "v.mha",
         mha_header("LOCAL", before_last=f"elementdatafile = {outside}\n") + voxels),
        # C strings end at a NUL: ITK reads this key as ElementDataFile.
        ("mha NUL inside the key", "v.mha", mha_header(str(outside)).replace(b"ElementDataFile", b"ElementDataFile\0x")),
        # ITK ends a key at a lone CR but not a value: the second line below is ITK's ElementDataFile.
        ("mha lone CR hides a line", "v.mha",
         mha_header(str(outside), before_last="Comment = x\rElementDataFile = LOCAL\n")),
        # In a Latin-1 locale, C takes byte 0xA0 for a space and MetaIO skips it before a key.
        ("mha non-ASCII byte before the key", "v.mha",
         mha_header("LOCAL", before_last=f"\xa0ElementDataFile = {outside}\n").replace(b"\xc2\xa0", b"\xa0") + voxels),
        ("mha no ElementDataFile at all", "v.mha", mha_header("LOCAL").replace(b"ElementDataFile = LOCAL\n", b"") + voxels),
        ("nrrd data file", "v.nrrd", nrrd_header(f"data file: {outside}")),
        ("nrrd datafile", "v.nrrd", nrrd_header(f"datafile: {outside}")),
        ("nrrd DATA FILE", "v.nrrd", nrrd_header(f"DATA FILE: {outside}")),
        ("nrrd data file /etc/services", "v.nrrd", nrrd_header("data file: /etc/services").replace(b"short", b"uchar")),
        ("nrrd data file LIST", "v.nrrd", nrrd_header(f"data file: LIST|{outside}")),
        ("nrrd CR line ends", "v.nrrd", nrrd_header(f"data file: {outside}", newline="\r")),
        ("nrrd CRLF line ends", "v.nrrd", nrrd_header(f"data file: {outside}", newline="\r\n")),
        ("nrrd non-ASCII field name", "v.nrrd", nrrd_header(f"data f\u0130le: {outside}")),
        ("nii pair header (ni1)", "v.nii", nifti1(b"ni1\0", vox_offset=0.0)),
        ("nii.gz pair header (ni1)", "v.nii.gz", gzip.compress(nifti1(b"ni1\0", vox_offset=0.0))),
        ("nii Analyze header", "v.nii", nifti1(b"\0\0\0\0", vox_offset=0.0)),
        ("nii.gz Analyze header", "v.nii.gz", gzip.compress(nifti1(b"\0\0\0\0", vox_offset=0.0) + voxels)),
    ]


CASES = [case[0] for case in hostile_uploads(Path("/x/y"))]


@pytest.mark.parametrize("case", CASES)
def test_an_upload_naming_voxels_elsewhere_is_refused_with_one_sentence(reference_server, tmp_path, outside, case):
    name, filename, data = next(item for item in hostile_uploads(outside) if item[0] == case)
    text = refused(upload(reference_server.url, tmp_path, filename, data), outside)
    assert any(word in text for word in ("another file", "separate", "ElementDataFile", "single-file")), text


def test_an_existing_and_a_missing_server_file_get_the_same_answer(reference_server, tmp_path, outside):
    """No probing which files exist on the server: the answer does not depend on the named file."""
    missing = outside.parent / "missing.raw"
    for make in (mha_header, lambda path: nrrd_header(f"data file: {path}")):
        suffix = ".mha" if make is mha_header else ".nrrd"
        answers = [upload(reference_server.url, tmp_path, "v" + suffix, make(str(path))) for path in (outside, missing)]
        assert [answer.status_code for answer in answers] == [400, 400]
        assert answers[0].json() == answers[1].json()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_by_an_upload_neither_hangs_it_nor_any_other_upload(tmp_path, outside):
    """Before: ITK opened the FIFO and waited for a writer, holding the ITK file lock, so every upload hung."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    good = tmp_path / "good.nii.gz"
    image = sitk.GetImageFromArray(ct_array())
    sitk.WriteImage(image, str(good), True)
    answers = {}
    with running_reference_server() as server:
        def hostile():
            try:
                answers["fifo"] = upload(server.url, tmp_path, "v.mha", mha_header(str(fifo)))
            except requests.RequestException as error:
                answers["fifo"] = error

        worker = threading.Thread(target=hostile, daemon=True)
        started = time.monotonic()
        worker.start()
        worker.join(15)
        try:
            assert not worker.is_alive(), "the upload naming a FIFO hangs"
            assert time.monotonic() - started < 15
            refused(answers["fifo"], outside)
            ok = post_work(server.url, "segmentation", SEG, good)
            assert ok.status_code == 200, ok.text[:300]
        finally:
            _release_reader(fifo)  # before the fix: give ITK its end of file so the server can stop
            worker.join(30)


def _release_reader(fifo: Path) -> None:
    try:
        descriptor = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # nobody is reading it
    os.close(descriptor)


# --- what must keep working ----------------------------------------------------------------------


def self_contained_uploads():
    image = sitk.GetImageFromArray(ct_array())
    image.SetSpacing((1.5, 1.5, 3.0))
    voxels = ct_array().tobytes()
    return [
        ("nii.gz written by ITK", ".nii.gz", True, None),
        ("nii written by ITK", ".nii", False, None),
        ("nrrd written by ITK (gzip)", ".nrrd", True, None),
        ("nrrd written by ITK (raw)", ".nrrd", False, None),
        ("mha written by ITK (zlib)", ".mha", True, None),
        ("mha written by ITK (raw)", ".mha", False, None),
        ("mha hand-written, Local", ".mha", None, mha_header("Local") + voxels),
        ("mha hand-written, CRLF", ".mha", None, mha_header("LOCAL").replace(b"\n", b"\r\n") + voxels),
        ("nrrd hand-written, CRLF and a comment", ".nrrd", None,
         nrrd_header("# a comment naming data file: nothing|space: left-posterior-superior|"
                     "space directions: (1,0,0) (0,1,0) (0,0,1)",
                     newline="\r\n") + voxels),
        ("mha with a UTF-8 comment", ".mha", None, mha_header("LOCAL", before_last="Comment = Créé à l'hôpital\n") + voxels),
        ("nrrd with a UTF-8 comment line", ".nrrd", None, nrrd_header("# créé à l'hôpital") + voxels),
        ("nii hand-written (n+1)", ".nii", None, nifti1(b"n+1\0") + bytes(4) + voxels),
    ], image


@pytest.mark.parametrize("case", [case[0] for case in self_contained_uploads()[0]])
def test_a_self_contained_upload_is_segmented(reference_server, tmp_path, case):
    cases, image = self_contained_uploads()
    _, suffix, compress, data = next(item for item in cases if item[0] == case)
    path = tmp_path / ("image" + suffix)
    if data is None:
        sitk.WriteImage(image, str(path), compress)
    else:
        path.write_bytes(data)
    response = post_work(reference_server.url, "segmentation", SEG, path)
    assert response.status_code == 200, response.text[:300]


@pytest.mark.parametrize("filename", ["v.nrrd", "v.mha"])
def test_a_header_longer_than_the_server_reads_is_refused_naming_its_length(reference_server, tmp_path, outside,
                                                                             filename):
    """A self-contained image whose header is padded with 70 KB of comments: the sentence must not claim its
    voxels are elsewhere, only that its header is longer than the server reads."""
    comment = "x" * 70_000
    if filename.endswith(".nrrd"):
        data = nrrd_header(f"# {comment}") + ct_array().tobytes()
    else:
        data = mha_header("LOCAL", before_last=f"Comment = {comment}\n") + ct_array().tobytes()
    text = refused(upload(reference_server.url, tmp_path, filename, data), outside)
    assert "64 KiB" in text and "comments" in text, text
