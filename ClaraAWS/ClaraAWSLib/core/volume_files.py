"""Volumes from and to image files: inputs read through SimpleITK, checked to be complete and finite
(ITK's NIfTI reader hides both), outputs written atomically."""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from .errors import GeometryError, InputError, OutputError
from .finite import NonFiniteCount, check_finite
from .geometry import Volume
from .inflate import InflateError, gzip_inflater
from .native_stderr import CapturedText, last_line, quiet_native_stderr
from .nifti import DTYPE_BY_NIFTI_CODE, NIFTI_HEADER_SIZE, NIFTI_VOX_OFFSET


#: Formats OUTPUT may have: single files, so writing beside the target and renaming is atomic.
OUTPUT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


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
            details=last_line(str(error)),
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
                header = gzip_inflater().decompress(stream.read(1 << 16), NIFTI_HEADER_SIZE)
        except InflateError:
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
    dtype = DTYPE_BY_NIFTI_CODE.get(code)
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
        inflater = gzip_inflater()
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
    inflater = gzip_inflater()
    total = 0
    with open(path, "rb") as stream:
        while total < enough:
            block = inflater.unconsumed_tail or stream.read(1 << 20)
            if not block:
                break
            try:
                total += len(inflater.decompress(block, 16 << 20))
            except InflateError:
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
    noise = CapturedText()
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
