"""Single-file NIfTI-1, the upload format every AIAA and MONAI Label server reads: volumes to bytes and back.

Headers are written and read here directly (qform and sform agreeing, no scaling); a header this
module cannot take as it is is left to SimpleITK by the result decoder, so a result means the same
here as in Slicer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import InputError, MalformedResponseError
from .finite import check_finite
from .geometry import LPS_TO_RAS, ImageGrid, Volume
from .gzip_blocks import parallel_gzip


NIFTI_HEADER_SIZE = 348
NIFTI_VOX_OFFSET = 352  # header plus the 4-byte "no extensions" flag
XFORM_SCANNER_ANAT = 1
UNITS_MM = 2

NIFTI_CODE_BY_DTYPE = {
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
DTYPE_BY_NIFTI_CODE = {code: dtype for dtype, code in NIFTI_CODE_BY_DTYPE.items()}


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
    if np.dtype(dtype.str.replace(">", "<")) not in NIFTI_CODE_BY_DTYPE:
        raise InputError(f"Voxels of type {array.dtype} cannot be sent; convert the volume to an integer or float type.")
    array = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    return nifti_header(volume.grid, array.dtype), memoryview(array).cast("B")


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
    struct.pack_into("<hhh", header, 70, NIFTI_CODE_BY_DTYPE[np.dtype(dtype.str.replace(">", "<"))], dtype.itemsize * 8, 0)
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
class NiftiLayout:
    grid: ImageGrid
    dtype: np.dtype
    offset: int

    @property
    def slice_bytes(self) -> int:
        return self.grid.size[0] * self.grid.size[1] * self.dtype.itemsize


def nifti1_layout(raw: bytes) -> Optional[NiftiLayout]:
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
    dtype = DTYPE_BY_NIFTI_CODE.get(code)
    slope, intercept = struct.unpack_from(endian + "ff", raw, 112)
    if dtype is None or not (slope in (0.0, 1.0) and intercept == 0.0):
        return None
    affine = _nifti_affine(raw, endian)
    if affine is None:
        return None
    size = tuple(int(d) for d in dim[1:4])
    offset = int(struct.unpack_from(endian + "f", raw, 108)[0])
    return NiftiLayout(ImageGrid.from_ijk_to_ras(affine, size), dtype.newbyteorder(endian), offset)


def nifti1_volume(raw: bytes, layout: NiftiLayout, slices: int) -> Volume:
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
