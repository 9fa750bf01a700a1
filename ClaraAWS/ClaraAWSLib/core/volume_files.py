"""Volumes from and to image files: inputs read through SimpleITK, checked to be complete and finite
(ITK's NIfTI reader hides both; core/nifti_files.py reads such files' bytes), outputs written atomically."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .errors import GeometryError, InputError, OutputError
from .finite import NonFiniteCount, check_finite
from .geometry import Volume
from .native_stderr import CapturedText, last_line, quiet_native_stderr
from .mha_nrrd_files import check_payload_complete, named_data_file
from .nifti import NIFTI_VOX_OFFSET
from .nifti_files import DEFAULT_ADVICE, NiftiVoxels, is_nifti2, locate_voxels, voxel_bytes


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
    if not start:
        raise InputError(f"The input file {path} is empty (0 bytes), so it holds no image; check the file.")
    # Only what ITK's NIfTI reader reads needs its bytes checked; a file no reader takes may still be a
    # cut NIfTI file, which deserves that sentence rather than "cannot read".
    image_io = _image_io(path)
    voxels = check_nifti_complete(path, start) if image_io in ("NiftiImageIO", "") else None
    if image_io in ("MetaImageIO", "NrrdImageIO"):
        _check_payload(path, image_io)
    try:
        with quiet_native_stderr():
            image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        if is_nifti2(path):
            raise InputError(
                f"{path.name} is a NIfTI-2 file, which SimpleITK cannot read; convert it to NIfTI-1 (.nii or .nii.gz) first."
            ) from None
        _check_data_file_there(path, image_io)
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
    if voxels is not None:
        _check_nifti_finite(path, voxels, volume.grid.size)
    check_finite(volume, path.name)
    return volume


def voxel_bytes_of(reader) -> int:
    """Bytes of voxels an ImageFileReader that has read the image information will read."""
    import SimpleITK as sitk

    one = sitk.Image([1, 1], reader.GetPixelID(), reader.GetNumberOfComponents())
    return int(np.prod(reader.GetSize(), dtype=np.int64)) * sitk.GetArrayViewFromImage(one).nbytes


def _check_payload(path: Path, image_io: str) -> None:
    """A .mha or .nrrd must hold every voxel its header promises, its compressed stream whole
    (core/mha_nrrd_files.py); a header ITK cannot read is left to the read that follows."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(image_io)
    try:
        with quiet_native_stderr():
            reader.ReadImageInformation()
    except RuntimeError:
        return
    check_payload_complete(path, image_io, voxel_bytes_of(reader), name=path.name, advice=DEFAULT_ADVICE)


def _image_io(path: Path) -> str:
    """The ImageIO SimpleITK picks for ``path`` ("NiftiImageIO", "MetaImageIO", ...), "" when none reads it."""
    import SimpleITK as sitk

    try:
        with quiet_native_stderr():  # ITK warns while probing an Analyze file
            return sitk.ImageFileReader().GetImageIOFromFileName(str(path))
    except RuntimeError:
        return ""


def check_nifti_complete(path: Path, start: Optional[bytes] = None, *, name: Optional[str] = None,
                         advice: str = DEFAULT_ADVICE) -> Optional[NiftiVoxels]:
    """A NIfTI-1 or Analyze image must hold all the voxels its header promises; ITK would read a cut file's
    missing part as 0.

    ``path`` may be a single file or either file of a .hdr/.img pair; ``start`` is its first bytes when
    already read; messages call the file ``name`` (default: its file name) and end in ``advice``. Returns
    where ITK's NIfTI reader finds the voxels, None for other formats.
    """
    return locate_voxels(Path(path), name=name, advice=advice, start=start)


#: Bytes inflated per step while scanning a file's voxels.
SCAN_BLOCK_BYTES = 16 << 20


def _check_nifti_finite(path: Path, voxels: NiftiVoxels, size) -> None:
    """Refuse a float NIfTI or Analyze image holding NaN or infinite voxels, read from its own bytes.

    ITK's NIfTI reader (nifti_read_buffer in its nifti1_io) silently replaces every non-finite value by 0,
    so the image SimpleITK returns looks clean while the file is not; 0 is a real intensity the model
    would segment as if it had been measured.
    """
    dtype = voxels.dtype
    if dtype is None or dtype.kind != "f":
        return  # nifti_read_buffer zeroes float voxels only
    itemsize = dtype.itemsize
    counter = NonFiniteCount(size)
    wanted = int(np.prod(size, dtype=np.int64)) * itemsize
    done, pending = 0, b""
    for block in voxel_bytes(voxels, wanted, SCAN_BLOCK_BYTES):
        block = pending + block
        usable = len(block) - len(block) % itemsize
        counter.add(np.frombuffer(block, dtype=dtype, count=usable // itemsize), done)
        done += usable // itemsize
        pending = block[usable:]
    if counter.total:
        raise InputError(counter.sentence(path.name))


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
        raise OutputError(f"Could not write {path} ({reason}); {kept}: {write_advice(reason)}.") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()


def write_advice(reason: str) -> str:
    """What to do about a write that failed for ``reason`` (an OSError's strerror, or ours)."""
    reason = reason.lower()
    if any(word in reason for word in ("permission", "not permitted", "read-only")):
        return "make the folder writable or choose another place"
    if any(word in reason for word in ("no space", "disk is full", "quota", "too large", "larger than allowed")):
        return "free some disk space or choose another place"
    return "choose another place"


def _write_failure_reason(error: Exception, native_text: str) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    text = f"{error} {native_text}".lower()
    for marker, reason in (("no space", "the disk is full"), ("file too large", "the file is larger than allowed"),
                           ("permission", "permission denied")):
        if marker in text:
            return reason
    return "the file could not be written completely"


def _check_data_file_there(path: Path, image_io: str) -> None:
    """A .nhdr or .mhd whose data file is missing is told so by name (ITK only says it cannot read the header)."""
    named = named_data_file(path, image_io) if image_io in ("MetaImageIO", "NrrdImageIO") else None
    if named is None or any(mark in named for mark in ("%", "LIST")):
        return  # a list or pattern of files: ITK's own words stand
    data_file = Path(named) if Path(named).is_absolute() else path.parent / named
    if not data_file.is_file():
        raise InputError(f"{path.name} keeps its voxels in a separate file, {named}, which is not there; put that file "
                         "beside the header, or give the image as one file (.nii.gz, .nrrd or .mha).")
