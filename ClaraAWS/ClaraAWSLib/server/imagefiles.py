"""Reading uploaded images and writing result label images, with SimpleITK.

The server reads uploads with SimpleITK on purpose: it checks the ClaraAWS client's own NIfTI encoder
against an independent reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .problems import InvalidImage
from .upload import UploadedFile

IMAGE_IOS = {".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO", ".nrrd": "NrrdImageIO", ".mha": "MetaImageIO"}
RESULT_PIXEL_TYPES = {"uint8": (np.uint8, sitk.sitkUInt8), "uint16": (np.uint16, sitk.sitkUInt16)}


def read_upload(upload: UploadedFile) -> sitk.Image:
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
        image = reader.Execute()
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise InvalidImage(f"The uploaded {suffix} image could not be read ({first_line[:200]}).") from None
    if image.GetDimension() != 3:
        raise InvalidImage(f"The uploaded image has {image.GetDimension()} dimensions; send a 3D volume.")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidImage("The uploaded image has several components per voxel; send a scalar volume.")
    return image


def write_labels(labels: np.ndarray, reference: sitk.Image, path: Path, dtype: str, compress: bool) -> None:
    """Write ``labels`` ([k, j, i]) with exactly the reference image's origin, spacing and direction."""
    numpy_type, _ = RESULT_PIXEL_TYPES[dtype]
    if labels.shape != tuple(reversed(reference.GetSize())):
        raise RuntimeError(f"model returned labels of shape {labels.shape} for an image of size {reference.GetSize()}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels, dtype=numpy_type))
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path), compress)
