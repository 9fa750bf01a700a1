"""Reading uploaded images and writing result label images, with SimpleITK.

The server reads uploads with SimpleITK on purpose: it checks the ClaraAWS client's own NIfTI encoder
against an independent reader.

An upload must hold its own voxels. ITK follows a header that names another file: a MetaImage
``ElementDataFile = /etc/services`` (or ``../..``, a LIST, a pattern), a NRRD ``data file:``, a NIfTI-1
pair's or an Analyze header's ``.img``. The server would then segment its own files, tell a client
which paths exist, and wait forever on a FIFO while holding the process-wide ITK file lock (every other
upload waiting behind it). ``check_self_contained`` reads a bounded start of the upload and refuses such
headers before ITK opens the file.
"""

from __future__ import annotations

import logging
import re
import struct
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from ..core.inflate import InflateError, gzip_inflater
from ..core.itk_io import ITK_FILE_IO
from ..core.mha_nrrd_files import NRRD_LINE_END, check_payload_complete
from ..core.volume_files import check_nifti_complete, voxel_bytes_of
from .limits import MIN_IMAGE_EDGE_VOXELS
from .problems import InvalidImage, PayloadTooLarge
from .upload import UploadedFile

log = logging.getLogger("ClaraAWSLib.server")

IMAGE_IOS = {".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO", ".nrrd": "NrrdImageIO", ".mha": "MetaImageIO"}
RESULT_PIXEL_TYPES = {"uint8": (np.uint8, sitk.sitkUInt8), "uint16": (np.uint16, sitk.sitkUInt16)}
#: How much of a MetaImage or NRRD upload is read to find the end of its text header (ITK writes a few hundred bytes).
MAX_TEXT_HEADER_BYTES = 64 * 1024
#: How much gzip input may go into inflating a NIfTI header's 348 bytes.
MAX_GZIP_HEADER_INPUT_BYTES = 1 << 20
NIFTI1_HEADER_BYTES = 348
#: What MetaIO takes for "the voxels follow the header in this file".
METAIMAGE_LOCAL = (b"LOCAL", b"Local", b"local")
#: Bytes that have no place in a text header line (a tab is allowed). C reads a key up to a NUL and ends a
#: key, but not a value, at a lone CR: either would let ITK see a line this check does not. Keys must be
#: ASCII too: to the C library, in some locales, a byte above 127 is a space that MetaIO skips.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def read_upload(upload: UploadedFile, max_voxels: Optional[int] = None) -> sitk.Image:
    """The uploaded image, checked for size before its voxels are decoded; messages never show server paths."""
    suffix = upload.suffix
    if suffix not in IMAGE_IOS:
        raise InvalidImage(
            f"The image file name {upload.filename!r} does not end in {', '.join(IMAGE_IOS)}; the name's "
            "suffix tells the server the format."
        )
    if upload.size == 0:
        raise InvalidImage("The uploaded image file is empty (0 bytes), so it holds no image; check the file the client sent.")
    check_self_contained(upload)
    reader = sitk.ImageFileReader()
    reader.SetImageIO(IMAGE_IOS[suffix])
    reader.SetFileName(str(upload.path))
    try:
        with ITK_FILE_IO:
            reader.ReadImageInformation()
        _check_size(reader.GetSize(), max_voxels)
        if IMAGE_IOS[suffix] == "NiftiImageIO":
            # ITK reads the missing end of a cut NIfTI file as zeros, and the model would segment them.
            check_nifti_complete(upload.path, name=f"The uploaded {suffix} image", advice="the upload was cut short: send it again")
        else:  # ITK reads a damaged MetaIO stream with changed voxels, and a gzip NRRD cut in its checksum
            check_payload_complete(upload.path, IMAGE_IOS[suffix], voxel_bytes_of(reader),
                                   name=f"The uploaded {suffix} image", advice="send it again")
        with ITK_FILE_IO:
            image = reader.Execute()
    except InputError as exc:
        raise InvalidImage(str(exc)) from None
    except RuntimeError as exc:
        # ITK's text names the server's temp file: it goes to the server log, not to the client.
        log.info("Could not read an uploaded %s image: %s", suffix, str(exc).strip()[-300:])
        raise InvalidImage(
            f"The uploaded {suffix} image could not be read: it is damaged or not in the format its name says."
        ) from None
    if image.GetDimension() != 3:
        raise InvalidImage(f"The uploaded image has {image.GetDimension()} dimensions; send a 3D volume.")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidImage("The uploaded image has several components per voxel; send a scalar volume.")
    return image


def check_self_contained(upload: UploadedFile) -> None:
    """Refuse (InvalidImage) an upload whose header puts its voxels in another file; reads a bounded start only."""
    image_io = IMAGE_IOS[upload.suffix]
    if image_io == "MetaImageIO":
        _check_metaimage(upload.path)
    elif image_io == "NrrdImageIO":
        _check_nrrd(upload.path)
    else:
        _check_nifti(upload.path, upload.suffix)


def _read_start(path: Path, size: int) -> bytes:
    with open(path, "rb") as stream:
        return stream.read(size)


def _check_metaimage(path: Path) -> None:
    """The header's lines are ``Key = value`` (or ``Key: value``) and the first ElementDataFile, which ends
    the header for MetaIO, must be LOCAL. Keys compare without case: a check that differs from ITK may only
    refuse more."""
    head = _read_start(path, MAX_TEXT_HEADER_BYTES)
    advice = "send a single .mha whose header ends with ElementDataFile = LOCAL, as ITK, SimpleITK and Slicer write it"
    position = 0
    while True:
        end = head.find(b"\n", position)
        if end < 0:
            raise InvalidImage(
                "The uploaded .mha image has no ElementDataFile = LOCAL line ending its header within its first "
                f"{MAX_TEXT_HEADER_BYTES // 1024} KiB, the most of a header this server reads; {advice}, and "
                "without long comments."
            )
        line = head[position:end]
        position = end + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip(b" \t"):
            continue  # MetaIO skips blank lines
        separator = re.search(rb"[=:]", line)
        if _CONTROL_BYTES.search(line) or separator is None or not line[: separator.start()].isascii():
            raise InvalidImage(
                "The uploaded .mha image has a header line before its ElementDataFile line that is not "
                f"'Key = value' text; {advice}."
            )
        if line[: separator.start()].strip(b" \t").lower() != b"elementdatafile":
            continue
        if line[separator.start():].lstrip(b"=: \t").rstrip() in METAIMAGE_LOCAL:
            return
        raise InvalidImage(
            "The uploaded .mha image names a separate data file for its voxels (its ElementDataFile is not LOCAL), "
            f"and the server reads nothing but the upload; {advice}."
        )


def _check_nrrd(path: Path) -> None:
    """No ``data file`` / ``datafile`` field (teem matches field names without case) before the blank line
    that ends the header."""
    head = _read_start(path, MAX_TEXT_HEADER_BYTES)
    advice = "send a single-file .nrrd, its voxels right after its header (not a detached .nhdr)"
    if not head.startswith(b"NRRD000"):
        raise InvalidImage("The uploaded .nrrd image does not start with a NRRD magic line such as NRRD0004; "
                           "it is not in the format its name says.")
    for number, line in enumerate(_terminated_lines(head)):
        if number == 0:
            continue  # the magic line
        if not line:
            return  # the blank line: the voxels follow in this file
        if line.startswith(b"#"):
            continue  # a comment
        name = line.split(b":", 1)[0]
        if not name.isascii() or _CONTROL_BYTES.search(name):
            # Field names are ASCII; another byte might be a letter or a space to the C library's locale.
            raise InvalidImage(
                "The uploaded .nrrd image has a header line whose field name is not plain ASCII text; "
                f"{advice}."
            )
        if re.sub(rb"[\s_-]", b"", name).lower() == b"datafile":
            raise InvalidImage(
                "The uploaded .nrrd image names a separate data file for its voxels (a 'data file' field), "
                f"and the server reads nothing but the upload; {advice}."
            )
    raise InvalidImage(
        "The uploaded .nrrd image's header does not end (with a blank line) within its first "
        f"{MAX_TEXT_HEADER_BYTES // 1024} KiB, the most of a header this server reads; remove long comments from "
        "the header, or send the image as .nii.gz."
    )


def _terminated_lines(data: bytes) -> Iterator[bytes]:
    """The lines of ``data`` that end in CR, LF or CRLF; a last line without its end (cut by the bound) is left out."""
    start = 0
    for match in NRRD_LINE_END.finditer(data):
        if match.group() == b"\r" and match.end() == len(data):
            return  # maybe the first half of a CRLF beyond the bound
        yield data[start : match.start()]
        start = match.end()


def _check_nifti(path: Path, suffix: str) -> None:
    """Only single-file NIfTI-1 (magic "n+1"): a pair's header ("ni1") and an Analyze header (no magic) make
    ITK read a .img beside the upload. (This ITK does not read NIfTI-2, "n+2", at all.)"""
    header = _nifti_header(path, suffix)
    if len(header) < NIFTI1_HEADER_BYTES:
        raise InvalidImage(f"The uploaded {suffix} image could not be read: it ends inside its NIfTI header, so it was "
                           "cut short or is not NIfTI.")
    sizes = {struct.unpack_from(order + "i", header, 0)[0] for order in "<>"}
    if 348 in sizes and header[344:348] == b"n+1\x00":
        return
    if 540 in sizes:
        raise InvalidImage(f"The uploaded {suffix} image is NIfTI-2, which this server does not read; "
                           "save it as NIfTI-1 (.nii.gz).")
    raise InvalidImage(
        f"The uploaded {suffix} image is not a single-file NIfTI-1 image (magic n+1): a NIfTI header/image pair or an "
        "Analyze header keeps its voxels in another file, which the server never reads; save it as a single .nii.gz."
    )


def _nifti_header(path: Path, suffix: str) -> bytes:
    """The first 348 bytes ITK reads: inflated for a gzip .nii.gz (ITK reads any other file as it is)."""
    start = _read_start(path, NIFTI1_HEADER_BYTES)
    if suffix != ".nii.gz" or start[:2] != b"\x1f\x8b":
        return start
    header = b""
    inflater = gzip_inflater()
    taken = 0
    try:
        with open(path, "rb") as stream:
            while len(header) < NIFTI1_HEADER_BYTES and taken < MAX_GZIP_HEADER_INPUT_BYTES:
                block = inflater.unconsumed_tail or stream.read(64 * 1024)
                if not block:
                    break
                if not inflater.unconsumed_tail:
                    taken += len(block)
                header += inflater.decompress(block, NIFTI1_HEADER_BYTES - len(header))
                if inflater.eof:  # a further gzip member goes on where this one ended
                    rest = inflater.unused_data
                    inflater = gzip_inflater()
                    if rest:
                        header += inflater.decompress(rest, NIFTI1_HEADER_BYTES - len(header))
    except InflateError:
        raise InvalidImage(
            f"The uploaded {suffix} image could not be read: it is a damaged gzip file; send it again."
        ) from None
    return header


def _check_size(size, max_voxels: Optional[int]) -> None:
    size = [int(v) for v in size]
    voxels = int(np.prod(size, dtype=np.int64))
    if max_voxels is not None and voxels > max_voxels:
        raise PayloadTooLarge(
            f"The uploaded image has {voxels} voxels (size {size}), more than this server's limit of {max_voxels}; "
            "send a smaller image or raise the server's --max-image-mvoxels."
        )
    if len(size) >= 3 and min(size[:3]) < MIN_IMAGE_EDGE_VOXELS:
        raise InvalidImage(
            f"The uploaded image (size {size}) is too small for this server's models: they need at least "
            f"{MIN_IMAGE_EDGE_VOXELS} voxels along every axis."
        )


def write_labels(labels: np.ndarray, reference: sitk.Image, path: Path, dtype: str, compress: bool) -> None:
    """Write ``labels`` ([k, j, i]) with exactly the reference image's origin, spacing and direction."""
    numpy_type, _ = RESULT_PIXEL_TYPES[dtype]
    if labels.shape != tuple(reversed(reference.GetSize())):
        raise RuntimeError(f"model returned labels of shape {labels.shape} for an image of size {reference.GetSize()}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels, dtype=numpy_type))
    image.CopyInformation(reference)
    with ITK_FILE_IO:
        sitk.WriteImage(image, str(path), compress)
