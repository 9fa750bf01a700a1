"""Write DICOM CT series with pydicom, geometry computed here from a grid (not by the code under test).

Each slice k of a grid with axes (columns of ``direction``) u, v, w, spacing (si, sj, sk) and origin o is
written with ImagePositionPatient o + k*sk*w, ImageOrientationPatient (u, v) and PixelSpacing (sj, si),
as PS3.3 C.7.6.2 defines them. Patient and study tags carry recognisable values so tests can check that
none of them leaves the reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import numpy as np

PATIENT_NAME = "Doe^Jane^Secret"
PATIENT_ID = "PID-7734-SECRET"


def _ds(values: Iterable[float]) -> List[str]:
    # DS values may hold 16 characters: 10 significant digits keep sub-micrometre geometry.
    return [f"{float(v):.10g}" for v in values]


def slice_position(grid, k: int) -> np.ndarray:
    direction = np.asarray(grid.direction)
    return np.asarray(grid.origin) + k * grid.spacing[2] * direction[:, 2]


def write_series(
    folder: Path,
    array: np.ndarray,
    grid,
    *,
    series_number: int = 1,
    series_uid: Optional[str] = None,
    study_uid: Optional[str] = None,
    frame_uid: Optional[str] = None,
    names: Optional[Sequence[str]] = None,
    skip: Iterable[int] = (),
    position_offsets: Optional[dict] = None,
    orientation_override: Optional[dict] = None,
) -> List[Path]:
    """Write ``array`` (``[k, j, i]``, int16) as one CT series on ``grid``; returns the written paths.

    ``names`` gives each slice's file name (default: a shuffled order, so readers must sort by position);
    ``skip`` leaves slices out; ``position_offsets[k]`` moves slice k (mm, LPS); ``orientation_override[k]``
    gives slice k another ImageOrientationPatient.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    direction = np.asarray(grid.direction)
    count = array.shape[0]
    rng = np.random.default_rng(count * 31 + series_number)
    default_names = [f"S{series_number}-IM{n:04d}.dcm" for n in rng.permutation(count)]
    paths = []
    for k in range(count):
        if k in set(skip):
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / (names[k] if names else default_names[k])
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = PATIENT_NAME, PATIENT_ID, "19700101", "F"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", "ACC-SECRET"
        ds.ReferringPhysicianName, ds.Modality, ds.Manufacturer = "Who^Doctor", "CT", "ClaraAWS tests"
        ds.SeriesNumber, ds.InstanceNumber = series_number, k + 1
        ds.PositionReferenceIndicator = ""
        position = slice_position(grid, k) + np.asarray((position_offsets or {}).get(k, (0.0, 0.0, 0.0)))
        ds.ImagePositionPatient = _ds(position)
        orientation = (orientation_override or {}).get(k, list(direction[:, 0]) + list(direction[:, 1]))
        ds.ImageOrientationPatient = _ds(orientation)
        ds.PixelSpacing = _ds([grid.spacing[1], grid.spacing[0]])
        ds.SliceThickness = f"{grid.spacing[2]:.10g}"
        ds.Rows, ds.Columns = array.shape[1], array.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PixelData = np.ascontiguousarray(array[k].astype("<i2")).tobytes()
        pydicom.dcmwrite(str(path), ds, enforce_file_format=True) if _pydicom3() else ds.save_as(str(path), write_like_original=False)
        paths.append(path)
    return paths


def _pydicom3() -> bool:
    import pydicom

    return int(pydicom.__version__.split(".")[0]) >= 3
