"""MetaImage and NRRD files must hold every voxel their header promises, their compressed stream whole.

ITK reads a zlib stream damaged near its end with MetaIO printing "Uncompress failed" and some voxels
changed, and teem reads a gzip NRRD cut inside its closing checksum: a model would segment changed voxels
as if measured. The client refuses such an input and the reference server such an upload, with one sentence,
while every file ITK writes, and a hand-written header with comments and CRLF line ends, still reads.
Damage is made here by editing bytes; which voxels ITK changes is measured here, with SimpleITK.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from server_fixtures import error_of, post_work

from ClaraAWSLib.core.errors import InputError
from ClaraAWSLib.core.volume_files import read_image_file

SEG = "phantom_abdomen_seg"
SIZE = (24, 24, 16)


def ct_array() -> np.ndarray:
    array = np.random.default_rng(5).integers(-300, 300, size=SIZE[::-1]).astype(np.int16)
    array[4:12, 6:18, 6:18] = 60
    return array


def written(tmp_path, name, compressed, array=None):
    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(ct_array() if array is None else array), str(path), compressed)
    return path


def damaged_mha(tmp_path):
    """A compressed .mha with one byte flipped near the end of its zlib stream, which ITK still reads."""
    path = written(tmp_path, "damaged.mha", True)
    data = bytearray(path.read_bytes())
    for back in range(40, 400):  # the first position whose flip ITK reads into changed voxels
        trial = bytearray(data)
        trial[-back] ^= 0xFF
        path.write_bytes(bytes(trial))
        try:
            read = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        except RuntimeError:
            continue
        if read.shape == ct_array().shape and np.count_nonzero(read != ct_array()):
            return path
    pytest.skip("no single flipped byte makes this ITK read changed voxels")


def cut(tmp_path, name, compressed, drop):
    path = written(tmp_path, name, compressed)
    path.write_bytes(path.read_bytes()[:-drop])
    return path


def broken_files(tmp_path):
    """(file, what the sentence must say)."""
    mha_checksum = written(tmp_path, "checksum.mha", True)
    data = bytearray(mha_checksum.read_bytes())
    data[-1] ^= 0x01  # the last byte of the zlib stream's Adler-32
    mha_checksum.write_bytes(bytes(data))
    return [
        (damaged_mha(tmp_path), "is damaged: its compressed voxels do not inflate"),
        (mha_checksum, "is damaged"),
        *[(cut(tmp_path, f"cut{n}.nrrd", True, n), "is incomplete") for n in (1, 4, 9)],
        (cut(tmp_path, "raw.mha", False, 100), f"holds {ct_array().nbytes - 100} bytes of voxels where its header "
                                                f"needs {ct_array().nbytes}"),
        (cut(tmp_path, "raw.nrrd", False, 1), "is incomplete"),
    ]


def test_itk_reads_the_damaged_files_without_a_word(tmp_path):
    """Why the check exists: what ITK itself does with these files."""
    path = damaged_mha(tmp_path)
    assert np.count_nonzero(sitk.GetArrayFromImage(sitk.ReadImage(str(path))) != ct_array()) > 0
    for drop in (1, 4):
        nrrd = cut(tmp_path, f"cut{drop}.nrrd", True, drop)
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(nrrd))), ct_array())


def test_the_client_refuses_a_damaged_or_cut_mha_or_nrrd_in_one_sentence(tmp_path):
    for path, words in broken_files(tmp_path):
        with pytest.raises(InputError) as raised:
            read_image_file(path)
        text = str(raised.value)
        assert words in text and path.name in text and text.count(". ") == 0 and text.endswith("."), text


def test_the_reference_server_answers_400_to_such_an_upload(reference_server, tmp_path):
    for path, words in broken_files(tmp_path):
        message = error_of(post_work(reference_server.url, "segmentation", SEG, path), 400)["message"][0]
        assert words in message and str(tmp_path) not in message, message


@pytest.mark.parametrize("name", ["v.mha", "v.nrrd"])
@pytest.mark.parametrize("compressed", [True, False])
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_every_file_itk_writes_still_reads(tmp_path, name, compressed, dtype):
    array = ct_array().astype(dtype)
    path = written(tmp_path, name, compressed, array)
    assert np.array_equal(read_image_file(path).array, array)


def test_a_hand_written_nrrd_with_comments_and_crlf_and_a_gzip_of_two_members_reads(tmp_path, reference_server):
    import gzip

    array = ct_array()
    raw = array.tobytes()
    header = ("NRRD0004\r\n# made by hand\r\ntype: short\r\ndimension: 3\r\nsizes: 24 24 16\r\nendian: little\r\n"
              "encoding: gzip\r\n\r\n").encode()
    path = tmp_path / "hand.nrrd"
    path.write_bytes(header + gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    assert np.array_equal(read_image_file(path).array, array)
    assert post_work(reference_server.url, "segmentation", SEG, path).status_code == 200


def _mha(path, lines, payload):
    path.write_bytes("\n".join(["ObjectType = Image", "NDims = 3", "DimSize = 24 24 16", "ElementType = MET_SHORT",
                                *lines, "ElementDataFile = LOCAL"]).encode() + b"\n" + payload)
    return path


def test_a_compressed_mha_without_its_compressed_size_is_refused_as_itk_reads_it_wrong(tmp_path):
    """MetaIO takes the whole file, header included, for the stream when CompressedDataSize is missing or 0."""
    import zlib

    stream = zlib.compress(ct_array().tobytes())
    for lines in (["CompressedData = True"], ["CompressedData = True", "CompressedDataSize = 0"]):
        path = _mha(tmp_path / "no_size.mha", lines, stream)
        try:
            wrong = not np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), ct_array())
        except RuntimeError:
            wrong = True
        assert wrong
        with pytest.raises(InputError, match="not how many bytes they take"):
            read_image_file(path)
    # MetaIO reads a boolean from its first letter: "1" and "t" say compressed, as "True" does.
    for flag in ("1", "t", "True"):
        path = _mha(tmp_path / "flag.mha", [f"CompressedData = {flag}", f"CompressedDataSize = {len(stream)}"], stream)
        assert np.array_equal(read_image_file(path).array, ct_array())
    # A CompressedDataSize short of the stream: MetaIO inflates those bytes only.
    path = _mha(tmp_path / "short.mha", ["CompressedData = True", f"CompressedDataSize = {len(stream) - 40}"], stream)
    with pytest.raises(InputError, match="incomplete"):
        read_image_file(path)


def test_nrrd_key_value_pairs_and_zero_skips_do_not_change_what_is_checked(tmp_path):
    import gzip

    stream = gzip.compress(ct_array().tobytes())
    header = ("NRRD0005\ntype: short\ndimension: 3\nsizes: 24 24 16\nendian: little\nencoding: gzip\n"
              "encoding:=raw\nline skip: 0\n\n").encode()
    path = tmp_path / "kv.nrrd"
    path.write_bytes(header + stream)
    assert np.array_equal(read_image_file(path).array, ct_array())
    path.write_bytes(header + stream[:-3])  # cut inside the gzip trailer: teem reads it, the check does not
    with pytest.raises(InputError, match="incomplete"):
        read_image_file(path)


# --- detached headers whose data file is missing -------------------------------------------------------
@pytest.mark.parametrize("header_name", ["scan.nhdr", "scan.mhd"])
def test_a_detached_header_whose_data_file_is_missing_names_it(tmp_path, header_name):
    header = written(tmp_path, header_name, False)  # ITK writes the header and scan.raw (or .zraw) beside it
    data_files = [path for path in tmp_path.iterdir() if path != header]
    assert np.array_equal(read_image_file(header).array, ct_array())  # as written, it reads
    for data_file in data_files:
        data_file.rename(tmp_path / ("moved-" + data_file.name))
    with pytest.raises(InputError) as raised:
        read_image_file(header)
    assert str(raised.value) == (
        f"{header_name} keeps its voxels in a separate file, {data_files[0].name}, which is not there; put that "
        "file beside the header, or give the image as one file (.nii.gz, .nrrd or .mha).")
