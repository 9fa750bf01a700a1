"""Volumes to upload bytes and back.

The upload format is single-file NIfTI-1 (``.nii.gz``), the format every AIAA server reads. The gzip
stream is built like pigz does it: the voxel bytes are cut into blocks that are deflated at level 1 on
several threads (zlib releases the GIL) and joined into one ordinary gzip member, so any gzip reader
accepts it. Decoding reads NIfTI headers directly and leaves anything unusual (NRRD, scaled data,
disagreeing qform/sform) to SimpleITK, so a result means the same here as in Slicer.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .errors import GeometryError, InputError, MalformedResponseError
from .geometry import LPS_TO_RAS, ImageGrid, Volume

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
    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if np.dtype(dtype.str.replace(">", "<")) not in _NIFTI_CODE_BY_DTYPE:
        raise InputError(f"Voxels of type {array.dtype} cannot be sent; convert the volume to an integer or float type.")
    array = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    header = nifti_header(volume.grid, array.dtype)
    payload = memoryview(array).cast("B")
    if not compress:
        return EncodedImage(header + bytes(payload), ".nii", volume.grid)
    return EncodedImage(parallel_gzip([header, payload], level=level, threads=threads), ".nii.gz", volume.grid)


def parallel_gzip(pieces, *, level: int = 1, threads: int = 0) -> bytes:
    """One gzip member holding the concatenation of ``pieces``, deflated block-wise on several threads."""
    blocks = list(_blocks(pieces, COMPRESSION_BLOCK_BYTES))
    workers = threads or min(len(blocks), os.cpu_count() or 1)

    def deflate(index: int) -> bytes:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, 8)
        mode = zlib.Z_FINISH if index == len(blocks) - 1 else zlib.Z_SYNC_FLUSH
        return compressor.compress(blocks[index]) + compressor.flush(mode)

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
    # RFC 1952 header: magic, deflate, no flags, no mtime (reproducible bytes), fastest, unknown OS.
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"
    trailer = struct.pack("<II", crc & 0xFFFFFFFF, total & 0xFFFFFFFF)
    return b"".join([header, *deflated, trailer])


def _blocks(pieces, block_size: int):
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


def decode_image(data: bytes, filename: str = "", *, needed: Optional[SliceLimit] = None) -> Volume:
    """The image in ``data``; NIfTI-1 is read directly, anything else through SimpleITK.

    With ``needed``, a NIfTI result on exactly that grid may be inflated only up to slice
    ``needed.stop``; the slices after it may then read as 0, so only slices before it are to be used.
    """
    if not data:
        raise MalformedResponseError("The server sent an empty result image; the model produced no output.")
    if data[:2] != b"\x1f\x8b":
        layout = _nifti1_layout(data)
        return _nifti1_volume(data, layout, layout.grid.size[2]) if layout else _decode_with_sitk(data, filename)
    layout = _nifti1_layout(_gunzip(data, NIFTI_HEADER_SIZE))
    if layout is None:
        raw = _gunzip(data)
        layout = _nifti1_layout(raw)
        return _nifti1_volume(raw, layout, layout.grid.size[2]) if layout else _decode_with_sitk(data, filename)
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
    """Inflate a gzip stream whose size is known: one preallocated buffer instead of a growing one."""
    try:
        raw = zlib.decompress(data, 16 + zlib.MAX_WBITS, expected_size)
    except zlib.error as error:
        raise MalformedResponseError(
            "The result image is a damaged gzip file; the download was cut short or the server is faulty.",
            details=str(error),
        ) from error
    # zlib stops after the first gzip member; a stream of several members takes the general path.
    return raw if len(raw) >= expected_size else _gunzip(data)


def _gunzip(data: bytes, limit: Optional[int] = None) -> bytes:
    """Inflate a (possibly multi-member) gzip stream, stopping after ``limit`` bytes when given."""
    try:
        if limit is None:
            return gzip.decompress(data)
        pieces, total, rest = [], 0, data
        while rest and total < limit:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            piece = inflater.decompress(rest, limit - total)
            pieces.append(piece)
            total += len(piece)
            if not inflater.eof:
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


def _decode_with_sitk(data: bytes, filename: str) -> Volume:
    import SimpleITK as sitk

    suffix = _suffix_of(filename) or _guess_suffix(data)
    with tempfile.TemporaryDirectory(prefix="clara-aws-") as folder:
        path = Path(folder) / f"result{suffix}"
        path.write_bytes(data)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise MalformedResponseError(
                "The server's result is not an image ClaraAWS can read (expected NIfTI or NRRD).",
                details=str(error).strip().splitlines()[-1] if str(error).strip() else None,
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
    array = volume.array
    if array.dtype == np.bool_:
        return Volume(array.astype(np.uint8), volume.grid)
    if array.dtype in (np.uint8, np.uint16):  # already labels; scanning a large volume would cost a click ~20 ms
        return volume
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
            return Volume(array.astype(dtype, copy=False), volume.grid)
    raise MalformedResponseError("The server's result holds values too large to be labels; it is not a label image.")


# --- files ----------------------------------------------------------------------------------


def read_image_file(path: Union[str, Path]) -> Volume:
    """Any 3D scalar image SimpleITK reads (NIfTI, NRRD, MHA, a DICOM file, ...)."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise InputError(f"The input file {path} does not exist; check the path.")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(
            f"{path} is not an image SimpleITK can read; use NIfTI, NRRD, MHA or another ITK format."
        ) from error
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise GeometryError(
            f"{path.name} is a {image.GetDimension()}D image; ClaraAWS segments 3D volumes (extract one frame first)."
        )
    return Volume.from_sitk(image)


def write_image_file(volume: Volume, path: Union[str, Path]) -> None:
    import SimpleITK as sitk

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(volume.to_sitk(), str(path), useCompression=path.name.endswith((".gz", ".nrrd", ".mha")))
