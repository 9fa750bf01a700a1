"""Reading uploaded images and writing result label images, with SimpleITK.

The server reads uploads with SimpleITK on purpose: it checks the ClaraAWS client's own NIfTI encoder
against an independent reader.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from ..core.itk_io import ITK_FILE_IO
from ..core.volume_files import check_nifti_complete
from .limits import MIN_IMAGE_EDGE_VOXELS
from .problems import InvalidImage, PayloadTooLarge
from .upload import UploadedFile

log = logging.getLogger("ClaraAWSLib.server")

IMAGE_IOS = {".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO", ".nrrd": "NrrdImageIO", ".mha": "MetaImageIO"}
RESULT_PIXEL_TYPES = {"uint8": (np.uint8, sitk.sitkUInt8), "uint16": (np.uint16, sitk.sitkUInt16)}


def read_upload(upload: UploadedFile, max_voxels: Optional[int] = None) -> sitk.Image:
    """The uploaded image, checked for size before its voxels are decoded; messages never show server paths."""
    suffix = upload.suffix
    if suffix not in IMAGE_IOS:
        raise InvalidImage(
            f"The image file name {upload.filename!r} does not end in {', '.join(IMAGE_IOS)}; the name's "
            "suffix tells the server the format."
        )
    if upload.size == 0:
        raise InvalidImage("The uploaded image file is empty.")
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
