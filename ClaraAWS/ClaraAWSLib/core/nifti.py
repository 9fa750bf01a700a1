"""Volumes to upload bytes and back.

The upload format is single-file NIfTI-1 (``.nii.gz``), the format every AIAA server reads. The gzip
stream is built like pigz does it: the voxel bytes are cut into blocks that are deflated at level 1 on
several threads (zlib releases the GIL) and joined into one ordinary gzip member, so any gzip reader
accepts it. Decoding reads NIfTI headers directly and leaves anything unusual (NRRD, scaled data,
disagreeing qform/sform) to SimpleITK, so a result means the same here as in Slicer.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import tempfile
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from .errors import GeometryError, InputError, MalformedResponseError, OutputError, ResultTooLargeError
from .geometry import LPS_TO_RAS, ImageGrid, LabelBox, Volume

NIFTI_HEADER_SIZE = 348
NIFTI_VOX_OFFSET = 352  # header plus the 4-byte "no extensions" flag
XFORM_SCANNER_ANAT = 1
UNITS_MM = 2

_NIFTI_CODE_BY_DTYPE = {
    np.dtype(np.uint8): 2,
    np.dtype(np.int16): 4,
    np.dtype(np.int32): 8,
    np.dtype(np.float32): 16,
    np.dtype(np.float64): 64,
    np.dtype(np.int8): 256,
    np.dtype(np.uint16): 512,
    np.dtype(np.uint32): 768,
    np.dtype(np.int64): 1024,
    np.dtype(np.uint64): 1280,
}
_DTYPE_BY_NIFTI_CODE = {code: dtype for dtype, code in _NIFTI_CODE_BY_DTYPE.items()}

#: Deflate block size per thread; large enough that restarting the dictionary costs < 0.1 % in size.
COMPRESSION_BLOCK_BYTES = 4 * 1024 * 1024

#: A result holds at most this many times the input's voxels: servers answer on the input's grid, a
#: crop of it or a coarser grid, so anything larger is a compression bomb or a broken header.
RESULT_VOXELS_PER_INPUT_VOXEL = 2
#: The bound when the input is not known: a 1024 x 1024 x 1024 volume.
MAX_RESULT_VOXELS = 1 << 30
LARGEST_VOXEL_BYTES = 8
#: Headers, extensions and multipart framing around a result's voxels.
RESULT_OVERHEAD_BYTES = 1 << 20
#: Formats OUTPUT may have: single files, so writing beside the target and renaming is atomic.
OUTPUT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


@dataclass(frozen=True)
class EncodedImage:
    """Upload-ready image bytes; ``suffix`` tells the server the format."""

    data: bytes
    suffix: str
    grid: ImageGrid

    @property
    def size_bytes(self) -> int:
        return len(self.data)


# --- encoding -------------------------------------------------------------------------------


def encode_volume(volume: Volume, *, compress: bool = True, level: int = 1, threads: int = 0) -> EncodedImage:
    """NIfTI-1 bytes of ``volume`` (gzip-compressed unless ``compress`` is False)."""
    header, payload = nifti_pieces(volume)
    if not compress:
        return EncodedImage(header + bytes(payload), ".nii", volume.grid)
    return EncodedImage(parallel_gzip([header, payload], level=level, threads=threads), ".nii.gz", volume.grid)


def nifti_pieces(volume: Volume):
    """(header bytes, voxel bytes as a little-endian memoryview) of ``volume`` as single-file NIfTI-1."""
    check_finite(volume)
    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if np.dtype(dtype.str.replace(">", "<")) not in _NIFTI_CODE_BY_DTYPE:
        raise InputError(f"Voxels of type {array.dtype} cannot be sent; convert the volume to an integer or float type.")
    array = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    return nifti_header(volume.grid, array.dtype), memoryview(array).cast("B")


#: RFC 1952 header: magic, deflate, no flags, no mtime (reproducible bytes), fastest, unknown OS.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"


def deflate_block(block, level: int, last: bool) -> bytes:
    """Raw deflate of one block, ended by a sync flush (or the final block's finish) so blocks can be joined."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15, 8)
    return compressor.compress(block) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def gzip_trailer(crc: int, total: int) -> bytes:
    return struct.pack("<II", crc & 0xFFFFFFFF, total & 0xFFFFFFFF)


def parallel_gzip(pieces, *, level: int = 1, threads: int = 0) -> bytes:
    """One gzip member holding the concatenation of ``pieces``, deflated block-wise on several threads."""
    blocks = list(blocks_of(pieces, COMPRESSION_BLOCK_BYTES))
    workers = threads or min(len(blocks), os.cpu_count() or 1)

    def deflate(index: int) -> bytes:
        return deflate_block(blocks[index], level, index == len(blocks) - 1)

    def checksum() -> int:
        crc = 0
        for block in blocks:
            crc = zlib.crc32(block, crc)
        return crc

    total = sum(len(block) for block in blocks)
    if workers <= 1:
        deflated = [deflate(i) for i in range(len(blocks))]
        crc = checksum()
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            crc_future = pool.submit(checksum)
            deflated = list(pool.map(deflate, range(len(blocks))))
            crc = crc_future.result()
    return b"".join([GZIP_HEADER, *deflated, gzip_trailer(crc, total)])


def blocks_of(pieces, block_size: int):
    """Fixed-size byte blocks over several buffers, copying only where a block spans two of them."""
    pending = b""
    for piece in pieces:
        view = memoryview(piece).cast("B")
        if pending:
            take = block_size - len(pending)
            pending += bytes(view[:take])
            view = view[take:]
            if len(pending) < block_size:
                continue
            yield pending
            pending = b""
        whole = len(view) - len(view) % block_size
        for start in range(0, whole, block_size):
            yield view[start : start + block_size]
        pending = bytes(view[whole:])
    if pending:
        yield pending


def nifti_header(grid: ImageGrid, dtype: np.dtype) -> bytes:
    """A NIfTI-1 header (plus the empty extension flag) with matching qform and sform."""
    dtype = np.dtype(dtype)
    affine = LPS_TO_RAS @ grid.ijk_to_lps()
    rotation = affine[:3, :3] / np.asarray(grid.spacing)
    qfac = 1.0
    if np.linalg.det(rotation) < 0:
        qfac = -1.0
        rotation = rotation.copy()
        rotation[:, 2] *= -1
    quaternion = _rotation_to_quaternion(rotation)

    header = bytearray(NIFTI_HEADER_SIZE + 4)
    struct.pack_into("<i", header, 0, NIFTI_HEADER_SIZE)
    header[38:39] = b"r"
    struct.pack_into("<8h", header, 40, 3, *grid.size, 1, 1, 1, 1)
    struct.pack_into("<hhh", header, 70, _NIFTI_CODE_BY_DTYPE[np.dtype(dtype.str.replace(">", "<"))], dtype.itemsize * 8, 0)
    struct.pack_into("<8f", header, 76, qfac, *grid.spacing, 0.0, 0.0, 0.0, 0.0)
    struct.pack_into("<f", header, 108, float(NIFTI_VOX_OFFSET))
    struct.pack_into("<ff", header, 112, 1.0, 0.0)  # scl_slope, scl_inter: values are stored as they are
    header[123] = UNITS_MM
    struct.pack_into("<hh", header, 252, XFORM_SCANNER_ANAT, XFORM_SCANNER_ANAT)
    struct.pack_into("<3f", header, 256, *quaternion[1:])
    struct.pack_into("<3f", header, 268, *affine[:3, 3])
    struct.pack_into("<12f", header, 280, *affine[:3, :4].flatten())
    header[344:348] = b"n+1\x00"
    return bytes(header)


def _rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (a, b, c, d) with a >= 0 of a proper rotation matrix."""
    m = rotation
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = np.array([0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s])
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = np.array([(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s])
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = np.array([(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s])
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = np.array([(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s])
    q = q / np.linalg.norm(q)
    return -q if q[0] < 0 else q


# --- decoding -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceLimit:
    """Only slices ``k < stop`` of a result on ``grid`` are needed (an interactive edit's box ends there).

    Inflating a gzip stream cannot skip ahead, but it can stop early: a click's result on a large CT is
    mostly zeros after its box, and not inflating them is most of what a click costs the client.
    """

    grid: ImageGrid
    stop: int


def max_result_voxels(input_grid: Optional[ImageGrid]) -> int:
    """How many voxels a result answering an image on ``input_grid`` may have (see RESULT_VOXELS_PER_INPUT_VOXEL)."""
    if input_grid is None:
        return MAX_RESULT_VOXELS
    return RESULT_VOXELS_PER_INPUT_VOXEL * int(np.prod(input_grid.size, dtype=np.int64))


def result_byte_limit(input_grid: Optional[ImageGrid]) -> int:
    """The most bytes a result for ``input_grid`` may take on the wire or inflated."""
    return max_result_voxels(input_grid) * LARGEST_VOXEL_BYTES + RESULT_OVERHEAD_BYTES


def _check_voxel_count(size, max_voxels: int) -> None:
    voxels = int(np.prod([int(v) for v in size], dtype=np.int64))
    if voxels > max_voxels:
        raise ResultTooLargeError(
            f"The server's result claims {list(size)} = {voxels} voxels, more than the {max_voxels} its input can "
            "explain (a compression bomb or a broken header); it was refused and nothing was changed."
        )


def decode_image(
    data: bytes, filename: str = "", *, needed: Optional[SliceLimit] = None, max_voxels: int = MAX_RESULT_VOXELS
) -> Volume:
    """The image in ``data``; NIfTI-1 is read directly, anything else through SimpleITK.

    With ``needed``, a NIfTI result on exactly that grid may be inflated only up to slice
    ``needed.stop``; the slices after it may then read as 0, so only slices before it are to be used.
    A result of more than ``max_voxels`` voxels, or one inflating to more than its header claims, is
    refused before it is inflated (ResultTooLargeError).
    """
    if not data:
        raise MalformedResponseError("The server sent an empty result image; the model produced no output.")
    if data[:2] != b"\x1f\x8b":
        layout = _nifti1_layout(data)
        if layout is None:
            return _decode_with_sitk(data, filename, max_voxels)
        _check_voxel_count(layout.grid.size, max_voxels)
        return _nifti1_volume(data, layout, layout.grid.size[2])
    layout = _nifti1_layout(_gunzip(data, NIFTI_HEADER_SIZE))
    if layout is None:
        byte_limit = max_voxels * LARGEST_VOXEL_BYTES + RESULT_OVERHEAD_BYTES
        raw = _gunzip(data, byte_limit + 1)
        if len(raw) > byte_limit:
            raise ResultTooLargeError(
                f"The server's result inflates to more than {byte_limit / 1e6:.1f} MB, far more than its input can "
                "explain (a compression bomb); it was refused and nothing was changed."
            )
        layout = _nifti1_layout(raw)
        if layout is None:
            return _decode_with_sitk(raw, filename[:-3] if filename.lower().endswith(".gz") else filename, max_voxels)
        _check_voxel_count(layout.grid.size, max_voxels)
        return _nifti1_volume(raw, layout, layout.grid.size[2])
    _check_voxel_count(layout.grid.size, max_voxels)
    slices = layout.grid.size[2]
    if needed is not None and layout.grid.matches(needed.grid):
        slices = max(0, min(int(needed.stop), slices))
    size_bytes = layout.offset + slices * layout.slice_bytes
    if slices < PARTIAL_INFLATE_WORTH * layout.grid.size[2]:
        return _nifti1_volume(_gunzip(data, size_bytes), layout, slices)
    # Inflating a little more into a preallocated buffer is faster than stopping early.
    raw = _gunzip_whole(data, layout.offset + layout.grid.size[2] * layout.slice_bytes)
    return _nifti1_volume(raw, layout, layout.grid.size[2])


#: Stop inflating early only when fewer than this share of the slices is needed (see decode_image).
PARTIAL_INFLATE_WORTH = 0.7


def _gunzip_whole(data: bytes, expected_size: int) -> bytes:
    """Inflate a gzip stream that must hold ``expected_size`` bytes (its header says so), and not much more."""
    raw = _gunzip(data, expected_size + RESULT_OVERHEAD_BYTES + 1)
    if len(raw) > expected_size + RESULT_OVERHEAD_BYTES:
        raise ResultTooLargeError(
            f"The server's result inflates to more than the {expected_size / 1e6:.1f} MB its own header claims "
            "(a compression bomb or a faulty server); it was refused and nothing was changed."
        )
    return raw


def _gunzip(data: bytes, limit: int) -> bytes:
    """Inflate a (possibly multi-member) gzip stream, stopping after ``limit`` bytes."""
    try:
        pieces, total, rest = [], 0, data
        while rest and total < limit:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            piece = inflater.decompress(rest, limit - total)
            pieces.append(piece)
            total += len(piece)
            if not inflater.eof:
                if total < limit and not inflater.unconsumed_tail:
                    raise EOFError("the gzip stream ends before its end marker")
                break
            rest = inflater.unused_data
        return b"".join(pieces)
    except (OSError, EOFError, zlib.error) as error:
        raise MalformedResponseError(
            "The result image is a damaged gzip file; the download was cut short or the server is faulty.",
            details=str(error),
        ) from error


@dataclass(frozen=True)
class _NiftiLayout:
    grid: ImageGrid
    dtype: np.dtype
    offset: int

    @property
    def slice_bytes(self) -> int:
        return self.grid.size[0] * self.grid.size[1] * self.dtype.itemsize


def _nifti1_layout(raw: bytes) -> Optional[_NiftiLayout]:
    """Plain NIfTI-1 with agreeing qform/sform and no scaling; ``None`` means "let SimpleITK decide"."""
    if len(raw) < NIFTI_HEADER_SIZE or raw[344:347] != b"n+1":
        return None
    endian = "<" if struct.unpack_from("<i", raw, 0)[0] == NIFTI_HEADER_SIZE else ">"
    if struct.unpack_from(endian + "i", raw, 0)[0] != NIFTI_HEADER_SIZE:
        return None
    dim = struct.unpack_from(endian + "8h", raw, 40)
    if dim[0] < 3 or any(d > 1 for d in dim[4 : dim[0] + 1]):
        return None
    code = struct.unpack_from(endian + "h", raw, 70)[0]
    dtype = _DTYPE_BY_NIFTI_CODE.get(code)
    slope, intercept = struct.unpack_from(endian + "ff", raw, 112)
    if dtype is None or not (slope in (0.0, 1.0) and intercept == 0.0):
        return None
    affine = _nifti_affine(raw, endian)
    if affine is None:
        return None
    size = tuple(int(d) for d in dim[1:4])
    offset = int(struct.unpack_from(endian + "f", raw, 108)[0])
    return _NiftiLayout(ImageGrid.from_ijk_to_ras(affine, size), dtype.newbyteorder(endian), offset)


def _nifti1_volume(raw: bytes, layout: _NiftiLayout, slices: int) -> Volume:
    """The voxels of the first ``slices`` slices (all of them: the whole image); later slices are 0."""
    size = layout.grid.size
    count = size[0] * size[1] * slices
    if len(raw) < layout.offset + count * layout.dtype.itemsize:
        raise MalformedResponseError(
            "The result image is shorter than its header says; the download was cut short or the server is faulty."
        )
    voxels = np.frombuffer(raw, dtype=layout.dtype, count=count, offset=layout.offset)
    if slices == size[2]:
        array = voxels.reshape(size[::-1])
    else:
        array = np.zeros(size[::-1], dtype=layout.dtype)
        array.reshape(-1)[:count] = voxels
    if layout.dtype.byteorder == ">":
        array = array.astype(layout.dtype.newbyteorder("<"))
    return Volume(array, layout.grid)


def _nifti_affine(raw: bytes, endian: str) -> Optional[np.ndarray]:
    qform_code, sform_code = struct.unpack_from(endian + "hh", raw, 252)
    qform = _qform_affine(raw, endian) if qform_code > 0 else None
    sform = None
    if sform_code > 0:
        sform = np.eye(4)
        sform[:3, :] = np.array(struct.unpack_from(endian + "12f", raw, 280)).reshape(3, 4)
    if qform is not None and sform is not None:
        return sform if np.allclose(qform, sform, atol=1e-4) else None
    return qform if qform is not None else sform


def _qform_affine(raw: bytes, endian: str) -> np.ndarray:
    b, c, d = struct.unpack_from(endian + "3f", raw, 256)
    offset = struct.unpack_from(endian + "3f", raw, 268)
    pixdim = struct.unpack_from(endian + "4f", raw, 76)
    a = np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    rotation = np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - b * b - c * c],
        ]
    )
    qfac = -1.0 if pixdim[0] < 0 else 1.0
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([pixdim[1], pixdim[2], qfac * pixdim[3]])
    affine[:3, 3] = offset
    return affine


def _decode_with_sitk(data: bytes, filename: str, max_voxels: int = MAX_RESULT_VOXELS) -> Volume:
    import SimpleITK as sitk

    suffix = _suffix_of(filename) or _guess_suffix(data)
    with tempfile.TemporaryDirectory(prefix="clara-aws-") as folder:
        path = Path(folder) / f"result{suffix}"
        path.write_bytes(data)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            with quiet_native_stderr() as noise:
                reader.ReadImageInformation()  # the size, before any voxel is inflated
                _check_voxel_count(reader.GetSize(), max_voxels)
                image = reader.Execute()
        except RuntimeError as error:
            raise MalformedResponseError(
                "The server's result is not an image ClaraAWS can read (expected NIfTI or NRRD).",
                details=_last_line(str(error)) or noise.text(),
            ) from error
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    return Volume.from_sitk(image)


def _suffix_of(filename: str) -> str:
    name = filename.lower()
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.endswith(suffix):
            return suffix
    return ""


def _guess_suffix(data: bytes) -> str:
    if data[:4] == b"NRRD":
        return ".nrrd"
    return ".nii.gz" if data[:2] == b"\x1f\x8b" else ".nii"


def as_label_volume(volume: Volume) -> Volume:
    """A server's result as labels: whole, non-negative values in the smallest unsigned type.

    Servers write labels as uint8, int64 or float32 depending on their writer; anything with
    fractional values is a probability map, not labels, and is refused rather than truncated.
    """
    return Volume(as_label_array(volume.array), volume.grid)


def as_label_array(array: np.ndarray) -> np.ndarray:
    """``as_label_volume`` for voxels alone (an edit's labelled box)."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype in (np.uint8, np.uint16):  # already labels; scanning a large volume would cost a click ~20 ms
        return array
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise MalformedResponseError("The server's result holds NaN or infinite values; it is not a label image.")
        rounded = np.rint(array)
        if np.any(np.abs(array - rounded) > 1e-3):
            raise MalformedResponseError(
                "The server's result holds fractional values (a probability map?), not labels; check the model's output writer."
            )
        array = rounded
    if array.size and array.min() < 0:
        raise MalformedResponseError("The server's result holds negative values; it is not a label image.")
    largest = int(array.max()) if array.size else 0
    for dtype in (np.uint8, np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return array.astype(dtype, copy=False)
    raise MalformedResponseError("The server's result holds values too large to be labels; it is not a label image.")


# --- an edit's answer: only its labelled box ---------------------------------------------------------

#: Bytes inflated per step while looking for an answer's labels: small enough to stay in the CPU's cache.
BOX_INFLATE_STEP = 128 * 1024
_ZEROS = bytes(BOX_INFLATE_STEP)


def decode_label_box(data: bytes, filename: str = "", *, needed: Optional[SliceLimit] = None,
                     max_voxels: int = MAX_RESULT_VOXELS) -> LabelBox:
    """The labelled box of a result image, with the checks of ``as_label_volume``.

    A gzip-compressed NIfTI answer is inflated step by step into a small buffer and only the steps that
    hold a label are kept: an answer on a whole CT that labels a few thousand voxels never occupies the
    memory of the CT, and nothing has to scan it again afterwards. Other formats are decoded whole first.
    ``needed`` stops inflating after its slices, as for ``decode_image``.
    """
    if data[:2] == b"\x1f\x8b":
        layout = _nifti1_layout(_gunzip(data, NIFTI_HEADER_SIZE))
        if layout is not None:
            _check_voxel_count(layout.grid.size, max_voxels)
            return _inflate_label_box(data, layout, needed)
    return LabelBox.of_volume(as_label_volume(decode_image(data, filename, needed=needed, max_voxels=max_voxels)))


def _inflate_label_box(data: bytes, layout: _NiftiLayout, needed: Optional[SliceLimit]) -> LabelBox:
    size = layout.grid.size
    slices = size[2]
    if needed is not None and layout.grid.matches(needed.grid):
        slices = max(0, min(int(needed.stop), slices))
    itemsize = layout.dtype.itemsize
    wanted = layout.offset + slices * layout.slice_bytes
    positions, values = [], []
    skip, done, pending = layout.offset, 0, b""  # done: voxels seen so far
    try:
        inflater, rest, inflated = zlib.decompressobj(16 + zlib.MAX_WBITS), data, 0
        while inflated < wanted:
            step = inflater.decompress(rest, min(BOX_INFLATE_STEP, wanted - inflated))
            rest = inflater.unconsumed_tail
            inflated += len(step)
            if not step:
                if inflater.eof and inflater.unused_data:  # a further gzip member
                    inflater, rest = zlib.decompressobj(16 + zlib.MAX_WBITS), inflater.unused_data
                    continue
                break
            if skip:
                taken = min(skip, len(step))
                step, skip = step[taken:], skip - taken
            if pending:
                step, pending = pending + step, b""
            usable = len(step) - len(step) % itemsize
            if usable < len(step):
                step, pending = step[:usable], step[usable:]
            if step != _ZEROS[:len(step)]:  # a memcmp: most of an edit's answer is zeros
                voxels = np.frombuffer(step, dtype=layout.dtype)
                where = np.flatnonzero(voxels)
                positions.append(where + done)
                values.append(voxels[where])
            done += usable // itemsize
    except zlib.error as error:
        raise MalformedResponseError(
            "The result image is a damaged gzip file; the download was cut short or the server is faulty.",
            details=str(error),
        ) from error
    if inflated < wanted:
        raise MalformedResponseError(
            "The result image is shorter than its header says; the download was cut short or the server is faulty."
        )
    grid = layout.grid
    label_dtype = layout.dtype.newbyteorder("<") if layout.dtype.byteorder == ">" else layout.dtype
    if not positions:
        return LabelBox(grid, (0, 0, 0), as_label_array(np.zeros((0, 0, 0), label_dtype)))
    where = np.concatenate(positions)
    found = as_label_array(np.concatenate(values).astype(label_dtype, copy=False))
    plane = size[0] * size[1]
    k, rest_of_plane = np.divmod(where, plane)
    j, i = np.divmod(rest_of_plane, size[0])
    low = (int(i.min()), int(j.min()), int(k.min()))
    shape = (int(k.max()) - low[2] + 1, int(j.max()) - low[1] + 1, int(i.max()) - low[0] + 1)
    box = np.zeros(shape, dtype=found.dtype)
    box[k - low[2], j - low[1], i - low[0]] = found
    return LabelBox(grid, low, box)


# --- checks before sending -----------------------------------------------------------------


def check_finite(volume: Volume, what: str = "The volume") -> None:
    """Refuse NaN or infinite voxels: a model would segment them as whatever they compare as."""
    array = volume.array
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    counter = NonFiniteCount(volume.grid.size)
    counter.add(array.reshape(-1), 0)
    raise InputError(counter.sentence(what))


class NonFiniteCount:
    """NaN and infinite voxels of an image on ``size`` (i, j, k), counted over its voxels in file order."""

    def __init__(self, size) -> None:
        self.size = tuple(int(v) for v in size)
        self.nan = 0
        self.infinite = 0
        self.first: Optional[int] = None
        self.slices: set = set()

    def add(self, values: np.ndarray, start: int) -> None:
        """Count ``values``, the voxels from flat index ``start`` on (i fastest, then j, then k)."""
        bad = ~np.isfinite(values)
        if not bad.any():
            return
        where = np.flatnonzero(bad)
        nan = int(np.count_nonzero(np.isnan(values[where])))
        self.nan += nan
        self.infinite += len(where) - nan
        if self.first is None:
            self.first = start + int(where[0])
        slice_voxels = self.size[0] * self.size[1]
        self.slices.update(np.unique((start + where) // slice_voxels).tolist())

    @property
    def total(self) -> int:
        return self.nan + self.infinite

    def sentence(self, what: str) -> str:
        """One sentence saying how many voxels are not finite and where, for an InputError."""
        plane = self.size[0] * self.size[1]
        first = [self.first % self.size[0], self.first % plane // self.size[0], self.first // plane]
        kinds = ", ".join(part for part in (f"{self.nan} NaN" if self.nan else "",
                                            f"{self.infinite} infinite" if self.infinite else "") if part)
        slices = sorted(self.slices)
        if len(slices) == 1:
            where = f"slice k = {slices[0]}"
        else:
            where = f"{len(slices)} of its {self.size[2]} slices (k = {slices[0]} to {slices[-1]})"
        return (
            f"{what} holds {self.total} NaN or infinite voxel{'s' if self.total != 1 else ''} ({kinds}) in {where}, "
            f"the first at voxel I,J,K = {first[0]},{first[1]},{first[2]}; replace {'them' if self.total != 1 else 'it'} "
            "(e.g. with the background value) before segmenting."
        )


# --- native libraries ------------------------------------------------------------------------


class _CapturedText:
    def __init__(self) -> None:
        self._text = ""

    def text(self) -> str:
        return self._text


_stderr_lock = threading.RLock()


@contextlib.contextmanager
def quiet_native_stderr(captured: Optional[_CapturedText] = None) -> Iterator[_CapturedText]:
    """Keep ITK's and the NIfTI library's own messages (written to file descriptor 2) off the terminal.

    Their text is caught into ``captured`` for an error's details; a failure is reported as one sentence.
    """
    captured = captured if captured is not None else _CapturedText()
    with _stderr_lock:
        try:
            saved = os.dup(2)
        except OSError:  # no standard error at all (a GUI process): nothing to keep quiet
            yield captured
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield captured
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                captured._text = sink.read(4096).decode("utf-8", errors="replace").strip()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- files ----------------------------------------------------------------------------------


def read_image_file(path: Union[str, Path]) -> Volume:
    """Any 3D scalar image SimpleITK reads (NIfTI, NRRD, MHA, a DICOM file, ...), checked to be complete."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise InputError(f"The input file {path} does not exist; check the path.")
    if path.is_dir():
        raise InputError(f"The input {path} is a folder, not an image file; give the path of one image file.")
    try:
        with open(path, "rb") as stream:
            start = stream.read(NIFTI_VOX_OFFSET)
    except PermissionError:
        raise InputError(f"The input file {path} cannot be read: permission denied; check the file's permissions.") from None
    except OSError as error:
        raise InputError(f"The input file {path} cannot be read ({error.strerror or error}); check the file.") from None
    voxels = check_nifti_complete(path, start)
    try:
        with quiet_native_stderr():
            image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(
            f"{path} is not an image SimpleITK can read; use NIfTI, NRRD, MHA or another ITK format.",
            details=_last_line(str(error)),
        ) from error
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise GeometryError(
            f"{path.name} is a {image.GetDimension()}D image; ClaraAWS segments 3D volumes (extract one frame first)."
        )
    if 0 in image.GetSize():
        raise InputError(f"{path.name} has no voxels (size {list(image.GetSize())}); check the file.")
    volume = Volume.from_sitk(image)
    if voxels is not None and voxels.dtype.kind == "f":
        _check_nifti_finite(path, voxels, volume.grid.size)
    check_finite(volume, path.name)
    return volume


def check_nifti_complete(path: Path, start: Optional[bytes] = None, *, name: Optional[str] = None,
                         advice: str = "copy or download it again") -> Optional["_NiftiVoxels"]:
    """A NIfTI-1 file must hold all the voxels its header promises; ITK would read a cut file's missing part as 0.

    ``start`` is the file's first bytes when already read; messages call the file ``name`` (default: its
    file name) and end in ``advice``. Returns where a single-file NIfTI-1's voxels are, None for other formats.
    """
    name = name or path.name
    if start is None:
        with open(path, "rb") as stream:
            start = stream.read(NIFTI_VOX_OFFSET)
    compressed = start[:2] == b"\x1f\x8b"
    if compressed:
        try:
            with open(path, "rb") as stream:
                header = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(stream.read(1 << 16), NIFTI_HEADER_SIZE)
        except zlib.error:
            raise InputError(f"{name} is a damaged gzip file; {advice}.") from None
        if len(header) < NIFTI_HEADER_SIZE and path.name.lower().endswith(".nii.gz"):
            raise InputError(f"{name} is incomplete: it ends inside its NIfTI header; {advice}.")
    else:
        header = start
    if len(header) < NIFTI_HEADER_SIZE or header[344:347] not in (b"n+1", b"ni1"):
        return None  # not single-file NIfTI-1: SimpleITK checks other formats itself
    endian = "<" if struct.unpack_from("<i", header, 0)[0] == NIFTI_HEADER_SIZE else ">"
    dim = struct.unpack_from(endian + "8h", header, 40)
    if not 1 <= dim[0] <= 7:
        raise InputError(f"{name} has a broken NIfTI header (dim[0] = {dim[0]}); the file is damaged.")
    sizes = dim[1 : dim[0] + 1]
    if any(size <= 0 for size in sizes):
        axis = next(n for n, size in enumerate(sizes, start=1) if size <= 0)
        raise InputError(f"{name} has no voxels: its header gives size {sizes[axis - 1]} along axis {axis}; the file is damaged.")
    if header[344:347] == b"ni1":
        return None  # the voxels are in a separate .img file
    bits = struct.unpack_from(endian + "h", header, 72)[0]
    offset = int(struct.unpack_from(endian + "f", header, 108)[0])
    expected = offset + int(np.prod(sizes, dtype=np.int64)) * max(bits, 1) // 8
    present = _inflated_size(path, expected) if compressed else path.stat().st_size
    if present < expected:
        raise InputError(
            f"{name} is incomplete: its header promises {expected} bytes but the file holds only {present}; {advice}."
        )
    code = struct.unpack_from(endian + "h", header, 70)[0]
    dtype = _DTYPE_BY_NIFTI_CODE.get(code)
    return _NiftiVoxels(compressed, offset, dtype.newbyteorder(endian)) if dtype is not None else None


@dataclass(frozen=True)
class _NiftiVoxels:
    compressed: bool
    offset: int
    dtype: np.dtype


#: Bytes inflated per step while scanning a file's voxels.
SCAN_BLOCK_BYTES = 16 << 20


def _check_nifti_finite(path: Path, voxels: _NiftiVoxels, size) -> None:
    """Refuse a float NIfTI-1 file holding NaN or infinite voxels, read from its own bytes.

    ITK's NIfTI reader (nifti_read_buffer in its nifti1_io) silently replaces every non-finite value by 0,
    so the image SimpleITK returns looks clean while the file is not; 0 is a real intensity the model
    would segment as if it had been measured.
    """
    counter = NonFiniteCount(size)
    wanted = int(np.prod(size, dtype=np.int64)) * voxels.dtype.itemsize
    done, pending = 0, b""
    for block in _voxel_bytes(path, voxels, wanted):
        block = pending + block
        usable = len(block) - len(block) % voxels.dtype.itemsize
        counter.add(np.frombuffer(block, dtype=voxels.dtype, count=usable // voxels.dtype.itemsize), done)
        done += usable // voxels.dtype.itemsize
        pending = block[usable:]
    if counter.total:
        raise InputError(counter.sentence(path.name))


def _voxel_bytes(path: Path, voxels: _NiftiVoxels, wanted: int) -> Iterator[bytes]:
    """The ``wanted`` voxel bytes of a NIfTI-1 file after its header, in blocks (the file is known complete)."""
    with open(path, "rb") as stream:
        if not voxels.compressed:
            stream.seek(voxels.offset)
            while wanted > 0:
                block = stream.read(min(SCAN_BLOCK_BYTES, wanted))
                if not block:
                    return
                wanted -= len(block)
                yield block
            return
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        skip = voxels.offset
        while wanted > 0:
            compressed = inflater.unconsumed_tail or stream.read(1 << 20)
            if not compressed:
                return
            block = inflater.decompress(compressed, SCAN_BLOCK_BYTES)
            if skip:
                taken = min(skip, len(block))
                block, skip = block[taken:], skip - taken
            block = block[:wanted]
            wanted -= len(block)
            if block:
                yield block
            if inflater.eof:
                return


def _inflated_size(path: Path, enough: int) -> int:
    """How many bytes a gzip file inflates to, counting up to ``enough`` (never holding them all); a cut stream counts what it had."""
    with open(path, "rb") as stream:
        stream.seek(-4, os.SEEK_END)
        recorded = struct.unpack("<I", stream.read(4))[0]
    if recorded == enough & 0xFFFFFFFF:
        # The trailer of a complete stream records its size; a cut file ends in arbitrary bytes that
        # match by chance once in 2^32, so the slow count below is needed only when this disagrees.
        return enough
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    total = 0
    with open(path, "rb") as stream:
        while total < enough:
            block = inflater.unconsumed_tail or stream.read(1 << 20)
            if not block:
                break
            try:
                total += len(inflater.decompress(block, 16 << 20))
            except zlib.error:
                break  # damaged from here on: what inflated so far is what the file holds
            if inflater.eof:
                break  # further members are rare for images; the first holds the header's data
    return total


def check_output_path(output: Union[str, Path], input_path: Optional[Union[str, Path]] = None) -> Path:
    """OUTPUT as a path that can be written, checked before any upload; one OutputError otherwise."""
    output = Path(output)
    if output.is_dir():
        raise OutputError(f"OUTPUT {output} is a folder; give a file name such as {output / 'labels.nii.gz'}.")
    if os.path.lexists(output) and not output.is_file():
        raise OutputError(f"OUTPUT {output} exists and is not a regular file (a device or a pipe); give a file name such as labels.nii.gz.")
    if _output_suffix(output) is None:
        raise OutputError(
            f"OUTPUT {output.name} has an extension ClaraAWS does not write; end it with {', '.join(OUTPUT_SUFFIXES)}."
        )
    if input_path is not None and _same_file(output, Path(input_path)):
        raise OutputError(f"OUTPUT {output} is the INPUT; writing labels there would destroy the image: choose another file name.")
    folder = output.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"OUTPUT {output} cannot be created: {existing} is a file, not a folder.")
    try:
        probe = tempfile.mkstemp(prefix=".clara-aws-probe-", dir=existing)
        os.close(probe[0])
        os.unlink(probe[1])
    except OSError as error:
        raise OutputError(
            f"OUTPUT {output} cannot be written: the folder {existing} is not writable ({error.strerror or error}); "
            "choose another folder."
        ) from None
    return output


def _output_suffix(path: Path) -> Optional[str]:
    name = path.name.lower()
    return next((suffix for suffix in OUTPUT_SUFFIXES if name.endswith(suffix) and len(name) > len(suffix)), None)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def write_image_file(volume: Volume, path: Union[str, Path]) -> None:
    """Write ``volume`` to ``path`` atomically: beside it, read back and compared, then renamed into place.

    A failure (full disk, a file-size limit, a vanished folder) raises OutputError and leaves any
    previous file at ``path`` exactly as it was.
    """
    import SimpleITK as sitk

    path = check_output_path(path)
    suffix = _output_suffix(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"The folder of {path} cannot be created ({error.strerror or error}); choose another folder.") from None
    partial = path.with_name(f".{path.name[: -len(suffix)]}.{secrets.token_hex(4)}.partial{suffix}")
    kept = "the previous file is unchanged" if path.exists() else "nothing was written"
    noise = _CapturedText()
    try:
        with quiet_native_stderr(noise):
            sitk.WriteImage(volume.to_sitk(), str(partial), useCompression=suffix in (".nii.gz", ".nrrd", ".mha"))
            written = sitk.ReadImage(str(partial))
        if tuple(written.GetSize()) != volume.grid.size or not np.array_equal(sitk.GetArrayViewFromImage(written), volume.array):
            raise OSError("the file read back differs from what was written")
        os.replace(partial, path)
    except (RuntimeError, OSError) as error:
        reason = _write_failure_reason(error, noise.text())
        raise OutputError(f"Could not write {path} ({reason}); {kept}: free some disk space or choose another place.") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()


def _write_failure_reason(error: Exception, native_text: str) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    text = f"{error} {native_text}".lower()
    for marker, reason in (("no space", "the disk is full"), ("file too large", "the file is larger than allowed"),
                           ("permission", "permission denied")):
        if marker in text:
            return reason
    return "the file could not be written completely"
