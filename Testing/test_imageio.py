"""Encoding volumes for upload and decoding results: exact voxels, geometry within NIfTI's float32."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk

from ClaraAWSLib.core.errors import GeometryError, InputError, MalformedResponseError
from ClaraAWSLib.core.geometry import ImageGrid, Volume
from ClaraAWSLib.core.imageio import decode_image, encode_volume, parallel_gzip, read_image_file, write_image_file

from conftest import rotation


@pytest.fixture(params=["zlib", "zlib-ng"])
def inflater(request, monkeypatch):
    """Each decoding test once with Python's zlib and once with zlib-ng (core/inflate.py picks the latter
    when installed, as with the pip package; Slicer's Python has only zlib)."""
    from ClaraAWSLib.core import inflate

    if request.param == "zlib":
        monkeypatch.setattr(inflate, "_zlib_ng", None)
    elif inflate._zlib_ng is None:
        pytest.skip("zlib-ng is not installed")
    assert inflate.engine() == request.param
    return request.param

def _grids():
    yield ImageGrid((17, 11, 7), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    yield ImageGrid((17, 11, 7), (0.7, 1.3, 2.9), (-123.456, 78.9, -300.25), rotation(20, 10, 35))
    # Left-handed grids (a flipped axis) need qfac = -1 in the qform.
    yield ImageGrid((9, 12, 5), (0.5, 0.6, 4.0), (10.0, -20.0, 30.0), np.diag([1.0, 1.0, -1.0]) @ rotation(5, 30, -60))
    yield ImageGrid((9, 12, 5), (2.0, 2.0, 2.0), (1.0, 2.0, 3.0), np.diag([-1.0, -1.0, 1.0]))


@pytest.mark.parametrize("grid", list(_grids()), ids=["identity", "oblique", "left-handed", "ras-flip"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.int32])
def test_simpleitk_reads_our_upload_with_the_same_voxels_and_geometry(tmp_path, grid, dtype):
    array = np.random.default_rng(1).integers(-1000, 1000, size=grid.size[::-1]).astype(dtype)
    encoded = encode_volume(Volume(array, grid))
    path = tmp_path / f"upload{encoded.suffix}"
    path.write_bytes(encoded.data)
    image = sitk.ReadImage(str(path))
    assert np.array_equal(sitk.GetArrayFromImage(image), array)
    assert Volume.from_sitk(image).grid.matches(grid)


@pytest.mark.parametrize("grid", list(_grids()), ids=["identity", "oblique", "left-handed", "ras-flip"])
@pytest.mark.usefixtures("inflater")
def test_decoding_what_simpleitk_wrote_matches(tmp_path, grid):
    array = (np.arange(np.prod(grid.size)) % 7).astype(np.uint8).reshape(grid.size[::-1])
    path = tmp_path / "result.nii.gz"
    write_image_file(Volume(array, grid), path)
    decoded = decode_image(path.read_bytes(), path.name)
    assert np.array_equal(decoded.array, array)
    assert decoded.grid.matches(grid)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii", ".mha"])
def test_other_formats_decode_through_simpleitk(tmp_path, oblique_volume, suffix):
    path = tmp_path / f"result{suffix}"
    write_image_file(oblique_volume, path)
    decoded = decode_image(path.read_bytes(), path.name)
    assert np.array_equal(decoded.array, oblique_volume.array)
    assert decoded.grid.matches(oblique_volume.grid)


def test_upload_is_one_ordinary_gzip_member_even_across_many_blocks(monkeypatch):
    import ClaraAWSLib.core.gzip_blocks as gzip_blocks

    monkeypatch.setattr(gzip_blocks, "COMPRESSION_BLOCK_BYTES", 1000)  # many blocks, odd boundaries
    data = np.random.default_rng(0).integers(0, 50, size=123457, dtype=np.uint8).tobytes()
    compressed = parallel_gzip([b"head", data], threads=2)
    assert gzip.decompress(compressed) == b"head" + data
    assert compressed.count(b"\x1f\x8b\x08") >= 1 and compressed[:3] == b"\x1f\x8b\x08"


def test_uncompressed_upload_is_plain_nifti(oblique_volume):
    encoded = encode_volume(oblique_volume, compress=False)
    assert encoded.suffix == ".nii" and encoded.data[344:348] == b"n+1\x00"
    assert decode_image(encoded.data).grid.matches(oblique_volume.grid)


def test_big_endian_and_bool_volumes_are_sent_correctly(oblique_grid):
    array = np.arange(np.prod(oblique_grid.size), dtype=">i2").reshape(oblique_grid.size[::-1])
    assert np.array_equal(decode_image(encode_volume(Volume(array, oblique_grid)).data).array, array)
    mask = array % 3 == 0
    assert np.array_equal(decode_image(encode_volume(Volume(mask, oblique_grid)).data).array, mask.astype(np.uint8))


@pytest.mark.usefixtures("inflater")
def test_damaged_results_raise_one_readable_error():
    with pytest.raises(MalformedResponseError, match="empty"):
        decode_image(b"")
    with pytest.raises(MalformedResponseError, match="gzip"):
        decode_image(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(MalformedResponseError, match="not an image"):
        decode_image(b"hello, I am not an image", "result.nii.gz")


def test_a_4d_or_empty_volume_is_refused(tmp_path):
    with pytest.raises(GeometryError, match="4 dimensions"):
        Volume(np.zeros((2, 3, 4, 5), np.int16), ImageGrid((4, 3, 2), (1, 1, 1), (0, 0, 0)))
    with pytest.raises(GeometryError, match="empty"):
        Volume(np.zeros((0, 3, 4), np.int16), ImageGrid((4, 3, 0), (1, 1, 1), (0, 0, 0)))
    image = sitk.Image([4, 4, 4, 3], sitk.sitkInt16)
    path = tmp_path / "four.nii.gz"
    sitk.WriteImage(image, str(path))
    with pytest.raises(GeometryError, match="4D"):
        read_image_file(path)
    with pytest.raises(InputError, match="does not exist"):
        read_image_file(tmp_path / "missing.nii.gz")


@pytest.mark.parametrize(
    "values, dtype, expected",
    [([0, 1, 2], np.float32, np.uint8), ([0, 1, 300], np.int64, np.uint16), ([0.0, 0.9999999, 2.0000001], np.float64, np.uint8)],
)
def test_results_become_unsigned_labels(values, dtype, expected):
    from ClaraAWSLib.core.imageio import as_label_volume

    grid = ImageGrid((3, 1, 1), (1, 1, 1), (0, 0, 0))
    labels = as_label_volume(Volume(np.array(values, dtype).reshape(1, 1, 3), grid))
    assert labels.array.dtype == expected and labels.array.ravel().tolist() == [int(round(v)) for v in values]


@pytest.mark.parametrize("values", [[0.0, 0.5, 1.0], [0, -1, 2], [0.0, float("nan"), 1.0]])
def test_probability_maps_and_negative_values_are_not_labels(values):
    from ClaraAWSLib.core.imageio import as_label_volume

    grid = ImageGrid((3, 1, 1), (1, 1, 1), (0, 0, 0))
    with pytest.raises(MalformedResponseError, match="not labels|not a label image"):
        as_label_volume(Volume(np.array(values, np.float32).reshape(1, 1, 3), grid))


@pytest.mark.parametrize("stop", [0, 1, 9, 24])
@pytest.mark.usefixtures("inflater")
def test_an_edit_may_inflate_only_the_slices_it_needs(tmp_path, oblique_volume, stop, monkeypatch):
    import ClaraAWSLib.core.gzip_blocks as gzip_blocks
    from ClaraAWSLib.core.imageio import SliceLimit

    monkeypatch.setattr(gzip_blocks, "COMPRESSION_BLOCK_BYTES", 4096)  # several gzip blocks, as on big volumes
    labels = Volume((oblique_volume.array > 100).astype(np.uint8) + 1, oblique_volume.grid)
    for data in (encode_volume(labels).data, _written_by_simpleitk(tmp_path, labels)):
        partial = decode_image(data, "r.nii.gz", needed=SliceLimit(oblique_volume.grid, stop))
        assert partial.grid.matches(oblique_volume.grid)
        assert np.array_equal(partial.array[:stop], labels.array[:stop])


def test_a_result_on_another_grid_is_decoded_whole_even_when_slices_are_limited(oblique_volume):
    from ClaraAWSLib.core.imageio import SliceLimit

    other = ImageGrid(oblique_volume.grid.size, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    labels = Volume(np.ones(oblique_volume.array.shape, np.uint8), other)
    decoded = decode_image(encode_volume(labels).data, needed=SliceLimit(oblique_volume.grid, 3))
    assert decoded.array.all()


def _written_by_simpleitk(tmp_path, volume):
    path = tmp_path / "by_sitk.nii.gz"
    write_image_file(volume, path)
    return path.read_bytes()


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_voxels_in_a_nifti_file_are_counted_from_its_own_bytes(tmp_path, monkeypatch, suffix, dtype):
    # ITK's NIfTI reader returns these voxels as 0, so only the file's bytes can tell; tiny odd-sized scan
    # blocks make voxels straddle block boundaries.
    import ClaraAWSLib.core.volume_files as volume_files

    monkeypatch.setattr(volume_files, "SCAN_BLOCK_BYTES", 13)
    array = np.random.default_rng(4).normal(0, 100, size=(5, 6, 7)).astype(dtype)  # k, j, i
    bad = {(1, 2, 3): np.nan, (1, 5, 6): -np.inf, (4, 0, 0): np.inf, (4, 5, 6): np.nan}
    for (k, j, i), value in bad.items():
        array[k, j, i] = value
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), suffix.endswith(".gz"))
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()  # what ITK makes of it

    with pytest.raises(InputError) as refused:
        read_image_file(path)
    assert str(refused.value).startswith(
        f"ct{suffix} holds 4 NaN or infinite voxels (2 NaN, 2 infinite) in 2 of its 5 slices (k = 1 to 4), "
        "the first at voxel I,J,K = 3,2,1; replace them"
    )

    array[np.isinf(array) | np.isnan(array)] = 0
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), suffix.endswith(".gz"))
    assert np.array_equal(read_image_file(path).array, array)


def _box_of(array: np.ndarray):
    """(start i, j, k), box of the non-zero voxels of a [k, j, i] array, computed here with argwhere."""
    where = np.argwhere(array)
    low, high = where.min(axis=0), where.max(axis=0) + 1
    return (int(low[2]), int(low[1]), int(low[0])), array[low[0]:high[0], low[1]:high[1], low[2]:high[2]]


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.float32, np.int64])
@pytest.mark.usefixtures("inflater")
def test_an_edits_answer_decodes_to_its_labelled_box(tmp_path, oblique_grid, monkeypatch, dtype):
    import ClaraAWSLib.core.result_images as result_images
    from ClaraAWSLib.core.imageio import decode_label_box

    monkeypatch.setattr(result_images, "BOX_INFLATE_STEP", 1000)  # steps that split voxels and slices
    monkeypatch.setattr(result_images, "_ZEROS", bytes(1000))
    array = np.zeros(oblique_grid.size[::-1], np.uint8)
    array[7:12, 3:9, 30:41] = 2
    array[9, 20, 5] = 1  # a second island widens the box
    labels = Volume(array.astype(dtype), oblique_grid)
    start, box = _box_of(array)
    for data in (encode_volume(labels).data, _written_by_simpleitk(tmp_path, labels)):
        decoded = decode_label_box(data, "r.nii.gz")
        assert decoded.grid.matches(oblique_grid) and decoded.start == start
        assert decoded.array.dtype in (np.uint8, np.uint16) and np.array_equal(decoded.array, box)
    # Two gzip members, as some writers produce, and a cut stream.
    data = encode_volume(labels).data
    raw = gzip.decompress(data)
    two = gzip.compress(raw[:5000]) + gzip.compress(raw[5000:])
    assert np.array_equal(decode_label_box(two).array, box)
    with pytest.raises(MalformedResponseError, match="shorter than its header|damaged gzip"):
        decode_label_box(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # a byte damaged on the way: the stream or its checksum fails
    with pytest.raises(MalformedResponseError, match="damaged gzip|shorter than its header"):
        decode_label_box(bytes(flipped))


@pytest.mark.parametrize("step", [7, 1000, 64 * 1024])
@pytest.mark.usefixtures("inflater")
def test_label_boxes_of_random_answers_match_argwhere(oblique_grid, monkeypatch, step):
    """Islands anywhere, the grid's first and last voxels included, through steps that split them."""
    import ClaraAWSLib.core.result_images as result_images
    from ClaraAWSLib.core.imageio import decode_label_box

    monkeypatch.setattr(result_images, "BOX_INFLATE_STEP", step)
    monkeypatch.setattr(result_images, "_ZEROS", bytes(step))
    rng = np.random.default_rng(step)
    shape = oblique_grid.size[::-1]
    for trial in range(12):
        array = np.zeros(shape, np.uint16 if trial % 3 == 0 else np.uint8)
        for _ in range(rng.integers(1, 4)):
            low = [int(rng.integers(0, n)) for n in shape]
            high = [min(n, a + int(rng.integers(1, 6))) for n, a in zip(shape, low)]
            array[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = rng.integers(1, 4)
        if trial == 0:
            array[0, 0, 0] = 1
        if trial == 1:
            array[-1, -1, -1] = 3
        start, box = _box_of(array)
        decoded = decode_label_box(encode_volume(Volume(array, oblique_grid)).data)
        assert decoded.start == start and np.array_equal(decoded.array, box), trial


@pytest.mark.usefixtures("inflater")
def test_an_edits_answer_box_respects_the_slice_limit_and_the_label_rules(oblique_grid):
    from ClaraAWSLib.core.imageio import SliceLimit, decode_label_box

    array = np.zeros(oblique_grid.size[::-1], np.float32)
    array[2:4, 5:7, 8:10] = 1
    array[20, 5, 8] = 1  # beyond the slices the edit needs
    decoded = decode_label_box(encode_volume(Volume(array, oblique_grid)).data, needed=SliceLimit(oblique_grid, 10))
    assert decoded.start == (8, 5, 2) and decoded.array.shape == (2, 2, 2) and decoded.array.all()
    assert decode_label_box(encode_volume(Volume(np.zeros_like(array), oblique_grid)).data).is_empty
    for value, words in ((0.5, "fractional"), (-1.0, "negative")):
        array[3, 6, 9] = value
        with pytest.raises(MalformedResponseError, match=words):
            decode_label_box(encode_volume(Volume(array, oblique_grid)).data)
