"""NIfTI-1 and Analyze inputs checked from their own bytes: NaN and infinite voxels, cut files, gzip members.

ITK's NIfTI reader (nifti1_io) returns every NaN or infinite float voxel as 0 and the missing end of a
cut file as zeros, so ClaraAWS reads such files' bytes itself, at the places nifti1_io reads them: the
.img of a .hdr/.img pair (NIfTI or Analyze 7.5, named by either file), from byte 348 of a single file
whose vox_offset is smaller, across every member of a multi-member .nii.gz. Every file here is built in
the test, with numpy, struct, gzip and SimpleITK, never with ClaraAWSLib.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ClaraAWSLib.core.errors import InputError
from ClaraAWSLib.core.imageio import check_nifti_complete, read_image_file

from test_cli import assert_one_line_failure, clara_aws

SERVER = {"name": "The uploaded image", "advice": "the upload was cut short: send it again"}
CODES = {np.dtype(np.int16): 4, np.dtype(np.float32): 16, np.dtype(np.float64): 64}
#: Two bad voxels, [k, j, i]: what the sentence must count and place.
BAD = {(1, 2, 3): np.nan, (4, 5, 6): -np.inf}
TWO_BAD = ("holds 2 NaN or infinite voxels (1 NaN, 1 infinite) in 2 of its 5 slices (k = 1 to 4), "
           "the first at voxel I,J,K = 3,2,1; replace them (e.g. with the background value) before segmenting.")


@pytest.fixture(params=["zlib", "zlib-ng"])
def inflater(request, monkeypatch):
    """Each gzip test once with Python's zlib and once with zlib-ng (core/inflate.py picks the latter when installed)."""
    from ClaraAWSLib.core import inflate

    if request.param == "zlib":
        monkeypatch.setattr(inflate, "_zlib_ng", None)
    elif inflate._zlib_ng is None:
        pytest.skip("zlib-ng is not installed")
    return request.param


def _array(dtype=np.float32, bad=None) -> np.ndarray:
    array = np.random.default_rng(11).normal(0, 100, size=(5, 6, 7)).astype(dtype)  # k, j, i
    for where, value in (bad or {}).items():
        array[where] = value
    return array


def _header(array: np.ndarray, *, magic: bytes = b"n+1\x00", vox_offset: float = 352.0, endian: str = "<") -> bytes:
    """A 348-byte NIfTI-1 header (Analyze 7.5 when ``magic`` is blank) for ``array`` ([k, j, i]), sform only."""
    header = bytearray(348)
    struct.pack_into(endian + "i", header, 0, 348)
    nk, nj, ni = array.shape
    struct.pack_into(endian + "8h", header, 40, 3, ni, nj, nk, 1, 1, 1, 1)
    struct.pack_into(endian + "hh", header, 70, CODES[array.dtype], array.dtype.itemsize * 8)
    struct.pack_into(endian + "8f", header, 76, 1.0, 1.5, 1.5, 3.0, 0, 0, 0, 0)
    struct.pack_into(endian + "f", header, 108, vox_offset)
    struct.pack_into(endian + "ff", header, 112, 1.0, 0.0)
    struct.pack_into(endian + "hh", header, 252, 0, 1)
    struct.pack_into(endian + "12f", header, 280, 1.5, 0, 0, 0, 0, 1.5, 0, 0, 0, 0, 3.0, 0)
    header[344:348] = magic
    return bytes(header)


def _voxels(array: np.ndarray, endian: str = "<") -> bytes:
    return array.astype(array.dtype.newbyteorder(endian)).tobytes()


def _single_file(array: np.ndarray) -> bytes:
    """Header, the empty extension flag and the voxels, as every NIfTI writer lays out a .nii."""
    return _header(array) + bytes(4) + _voxels(array)


def _members(*pieces: bytes) -> bytes:
    return b"".join(gzip.compress(piece, mtime=0) for piece in pieces)


def _refusal(path, **server) -> str:
    with pytest.raises(InputError) as refused:
        if server:
            check_nifti_complete(Path(path), **server)
        else:
            read_image_file(path)
    message = str(refused.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def _itk_hides(path) -> None:
    """What the checks are for: ITK reads the file, with no NaN or infinite voxel left in it."""
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()


# --- NaN and infinite voxels -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("compressed", [False, True], ids=["hdr-img", "hdr.gz-img.gz"])
@pytest.mark.parametrize("named", ["header", "image"])
def test_nan_in_a_nifti_pair_is_refused_whichever_file_is_named(tmp_path, dtype, compressed, named):
    header = tmp_path / ("ct.hdr.gz" if compressed else "ct.hdr")
    sitk.WriteImage(sitk.GetImageFromArray(_array(dtype, BAD)), str(header))  # a pair, magic "ni1"
    image = tmp_path / ("ct.img.gz" if compressed else "ct.img")
    assert image.exists()
    given = header if named == "header" else image
    _itk_hides(given)
    assert _refusal(given) == f"{given.name} {TWO_BAD}"


@pytest.mark.parametrize("endian", ["<", ">"], ids=["little-endian", "big-endian"])
def test_nan_in_an_analyze_pair_is_refused(tmp_path, endian):
    # Analyze 7.5 has no magic; ITK reads it with the same NIfTI library, from the .img at vox_offset.
    array = _array(np.float32, BAD)
    (tmp_path / "old.hdr").write_bytes(_header(array, magic=bytes(4), vox_offset=0.0, endian=endian))
    (tmp_path / "old.img").write_bytes(_voxels(array, endian))
    for given in (tmp_path / "old.hdr", tmp_path / "old.img"):
        _itk_hides(given)
        assert _refusal(given) == f"{given.name} {TWO_BAD}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_at_the_end_of_a_single_file_with_vox_offset_0_is_refused(tmp_path, dtype):
    # nifti1_io reads a single file's voxels from max(vox_offset, 348): here straight after the header.
    array = _array(dtype, {(4, 5, 4): np.nan})  # near the very end of the file
    path = tmp_path / "zero-offset.nii"
    path.write_bytes(_header(array, vox_offset=0.0) + _voxels(array))
    _itk_hides(path)
    assert _refusal(path).startswith(
        "zero-offset.nii holds 1 NaN or infinite voxel (1 NaN) in slice k = 4, the first at voxel I,J,K = 4,5,4; replace it"
    )


@pytest.mark.usefixtures("inflater")
@pytest.mark.parametrize("padded", [False, True], ids=["plain", "last-member-size-matches-the-header"])
def test_nan_in_a_later_gzip_member_is_refused(tmp_path, padded):
    array = _array(np.float32, BAD)
    data = _single_file(array)
    first, rest = data[: 352 + 2 * 42 * 4], data[352 + 2 * 42 * 4 :]  # slices 0 and 1, then 2 to 4
    if padded:  # the last member then records the header's size, so only reading on finds the NaN
        rest += bytes(len(data) - len(rest))
    path = tmp_path / "members.nii.gz"
    path.write_bytes(_members(first, rest))
    _itk_hides(path)
    assert _refusal(path) == f"members.nii.gz {TWO_BAD}"


def test_a_nifti2_file_is_refused_in_one_sentence(tmp_path):
    # SimpleITK 2.5 (ITK 5.4) reads NIfTI with nifti1_io alone: a NIfTI-2 file (540-byte header, magic
    # "n+2" at byte 4) is not read at all, so no NaN can be hidden; the sentence says what to do.
    array = _array(np.float32, BAD)
    header = bytearray(540)
    struct.pack_into("<i", header, 0, 540)
    header[4:12] = b"n+2\x00\r\n\x1a\n"
    struct.pack_into("<hh", header, 12, 16, 32)
    struct.pack_into("<8q", header, 16, 3, 7, 6, 5, 1, 1, 1, 1)
    struct.pack_into("<8d", header, 104, 1.0, 1.5, 1.5, 3.0, 0, 0, 0, 0)
    struct.pack_into("<q", header, 168, 544)
    struct.pack_into("<dd", header, 176, 1.0, 0.0)
    data = bytes(header) + bytes(4) + _voxels(array)
    for path, content in ((tmp_path / "v2.nii", data), (tmp_path / "v2.nii.gz", gzip.compress(data))):
        path.write_bytes(content)
        with pytest.raises(RuntimeError):
            sitk.ReadImage(str(path))
        assert _refusal(path) == (f"{path.name} is a NIfTI-2 file, which SimpleITK cannot read; "
                                  "convert it to NIfTI-1 (.nii or .nii.gz) first.")


def test_a_nan_pair_is_refused_by_the_cli_before_any_upload(tmp_path, reference_server):
    header = tmp_path / "ct.hdr"
    array = np.zeros((16, 20, 24), np.float32)
    array[3, 4, 5] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(array), str(header))
    uploads = reference_server.stats.image_uploads
    run = clara_aws("segment", "--server", reference_server.url, "--model", "phantom_abdomen_seg",
                    tmp_path / "ct.img", "-o", tmp_path / "labels.nii.gz")
    assert_one_line_failure(run, 2)
    assert "ct.img holds 1 NaN or infinite voxel (1 NaN) in slice k = 3, the first at voxel I,J,K = 5,4,3" in run.stderr
    assert reference_server.stats.image_uploads == uploads and not (tmp_path / "labels.nii.gz").exists()


# --- valid files are read exactly -----------------------------------------------------------------


@pytest.mark.usefixtures("inflater")
@pytest.mark.parametrize("layout", ["three-members", "bgzip-end-marker", "header-split"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_a_valid_multi_member_nii_gz_is_read_exactly(tmp_path, layout, dtype):
    array = _array(np.float32).astype(dtype)
    data = _single_file(array)
    pieces = {
        "three-members": [data[:500], data[500:900], data[900:]],
        "bgzip-end-marker": [data, b""],  # bgzip ends every file with an empty member
        "header-split": [data[:100], data[100:]],  # even the header spans two members
    }[layout]
    path = tmp_path / "members.nii.gz"
    path.write_bytes(_members(*pieces))
    assert np.array_equal(read_image_file(path).array, array)
    assert check_nifti_complete(path, **SERVER) is not None


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
@pytest.mark.parametrize("compressed", [False, True], ids=["hdr-img", "hdr.gz-img.gz"])
def test_a_valid_pair_is_read_exactly_from_either_file(tmp_path, dtype, compressed):
    array = _array(np.float32).astype(dtype)
    header = tmp_path / ("ct.hdr.gz" if compressed else "ct.hdr")
    sitk.WriteImage(sitk.GetImageFromArray(array), str(header))
    for given in (header, tmp_path / ("ct.img.gz" if compressed else "ct.img")):
        assert np.array_equal(read_image_file(given).array, array)
        assert check_nifti_complete(given, **SERVER) is not None


def test_a_single_member_file_is_judged_by_its_recorded_size_alone(tmp_path, monkeypatch):
    # The common file's last 4 bytes record its size: no inflating it just to count.
    from ClaraAWSLib.core import nifti_files

    def never(*_):
        raise AssertionError("a complete single-member file was inflated to count its bytes")

    monkeypatch.setattr(nifti_files, "_gzip_data_size", never)
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(_array(np.float32).astype(np.int16)), str(path), True)
    assert check_nifti_complete(path, **SERVER) is not None


@pytest.mark.usefixtures("inflater")
def test_a_stream_holding_more_than_its_voxels_is_inflated_only_a_little_past_them(tmp_path, monkeypatch):
    # ITK reads only the voxels the header promises; counting stops a bounded distance past them.
    from ClaraAWSLib.core import nifti_files

    monkeypatch.setattr(nifti_files, "TAIL_CHECK_BYTES", 4096)
    monkeypatch.setattr(nifti_files, "COUNT_BLOCK_BYTES", 4096)
    inflated = []
    members = nifti_files.gzip_members

    def counted(stream, block_bytes):
        for block in members(stream, block_bytes):
            inflated.append(len(block))
            yield block

    monkeypatch.setattr(nifti_files, "gzip_members", counted)
    array = _array(np.float32).astype(np.int16)
    path = tmp_path / "long.nii.gz"
    path.write_bytes(gzip.compress(_single_file(array) + bytes(8 << 20), mtime=0))
    assert check_nifti_complete(path, **SERVER) is not None
    assert sum(inflated) <= len(_single_file(array)) + 3 * 4096
    assert np.array_equal(read_image_file(path).array, array)


# --- cut files ------------------------------------------------------------------------------------


def test_a_single_file_with_vox_offset_0_cut_by_348_bytes_is_incomplete(tmp_path):
    # Its voxels start at byte 348 (nifti1_io's rule), so the file must hold 348 bytes more than them.
    array = _array(np.float32).astype(np.int16)
    voxels = _voxels(array)
    path = tmp_path / "zero-offset.nii"
    path.write_bytes((_header(array, vox_offset=0.0) + voxels)[: -348])
    expected, present = 348 + len(voxels), len(voxels)
    assert _refusal(path) == (f"zero-offset.nii is incomplete: its header promises {expected} bytes but the file "
                              f"holds only {present}; copy or download it again.")
    assert _refusal(path, **SERVER) == (f"The uploaded image is incomplete: its header promises {expected} "
                                        f"bytes but the file holds only {present}; the upload was cut short: send it again.")


@pytest.mark.usefixtures("inflater")
@pytest.mark.parametrize("cut", [1, 4, 7, 8])
@pytest.mark.parametrize("members", [1, 2])
def test_a_nii_gz_cut_inside_its_gzip_trailer_is_incomplete(tmp_path, cut, members):
    # Every voxel is there and ITK reads them all, but the checksum that proves them whole is not.
    data = _single_file(_array(np.float32).astype(np.int16))
    whole = _members(data) if members == 1 else _members(data[:700], data[700:])
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(whole[:-cut])
    sitk.ReadImage(str(path))
    assert _refusal(path) == "ct.nii.gz is incomplete: its gzip data ends before its closing checksum; copy or download it again."
    assert _refusal(path, **SERVER) == ("The uploaded image is incomplete: its gzip data ends before its closing "
                                        "checksum; the upload was cut short: send it again.")


@pytest.mark.usefixtures("inflater")
def test_a_nii_gz_whose_trailer_does_not_match_is_damaged(tmp_path):
    data = _single_file(_array(np.float32).astype(np.int16))
    damaged = bytearray(gzip.compress(data, mtime=0))
    damaged[-4] ^= 0x01  # the recorded size: zlib checks it, with the CRC, at the member's end
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(bytes(damaged))
    assert _refusal(path) == "ct.nii.gz is a damaged gzip file; copy or download it again."
    assert _refusal(path, **SERVER) == "The uploaded image is a damaged gzip file; the upload was cut short: send it again."


@pytest.mark.parametrize("compressed", [False, True], ids=["hdr-img", "hdr.gz-img.gz"])
def test_a_pair_whose_image_file_is_cut_is_incomplete(tmp_path, compressed):
    array = _array(np.float32).astype(np.int16)
    header = tmp_path / ("ct.hdr.gz" if compressed else "ct.hdr")
    sitk.WriteImage(sitk.GetImageFromArray(array), str(header))
    image = tmp_path / ("ct.img.gz" if compressed else "ct.img")
    voxels = _voxels(array)
    kept = voxels[: len(voxels) // 2]
    image.write_bytes(gzip.compress(kept) if compressed else kept)
    sitk.ReadImage(str(header))  # ITK reads it, the missing half as zeros
    for given in (header, image):
        assert _refusal(given) == (f"{image.name} is incomplete: its header {header.name} promises {len(voxels)} bytes "
                                   f"but the file holds only {len(kept)}; copy or download it again.")
        assert _refusal(given, **SERVER) == (f"The uploaded image is incomplete: its header promises {len(voxels)} bytes "
                                             f"but the file holds only {len(kept)}; the upload was cut short: send it again.")


def test_a_float_file_whose_first_member_fails_its_crc_is_damaged(tmp_path):
    # The last member records the header's size, so the quick check passes; reading the voxels for
    # NaN goes through the first member's trailer, where zlib finds its CRC wrong.
    array = np.random.default_rng(12).normal(0, 100, size=(40, 64, 64)).astype(np.float32)
    data = _single_file(array)
    half = len(data) // 2
    first = bytearray(gzip.compress(data[:half], mtime=0))
    first[-8] ^= 0x01  # the first member's CRC
    second = gzip.compress(data[half:] + bytes(half), mtime=0)
    assert struct.unpack("<I", second[-4:])[0] == len(data) and zlib.crc32(data[:half]) != struct.unpack("<I", first[-8:-4])[0]
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(bytes(first) + second)
    assert not np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), array)  # ITK reads other voxels
    assert _refusal(path) == "ct.nii.gz is a damaged gzip file; copy or download it again."
