"""DICOM series in a folder: find them, and read one into a Volume with its exact geometry.

The grid is computed here from each slice's own tags, not taken from ITK's series reader, which
derives the slice spacing from the first slices and reads a series with a missing slice or uneven
spacing without complaint (only a metadata note). A series that is not one regular grid (missing or
duplicate slices, varying spacing, mixed orientations, gantry tilt) is refused with one sentence: its
voxels sent as a grid would be in the wrong places.

Data safety: the header reads happen in this module only, and what leaves it is voxels and geometry
(``Volume``) or file locations (``DicomSeries``); no patient, study or other tag values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Sequence, Tuple, Union

import numpy as np

from ..core.errors import InputError
from ..core.geometry import ImageGrid, Volume

POSITION, ORIENTATION, PIXEL_SPACING = "0020|0032", "0020|0037", "0028|0030"
ROWS, COLUMNS, FRAMES, SERIES_NUMBER = "0028|0010", "0028|0011", "0028|0008", "0020|0011"
#: Geometry agrees within these (DICOM stores decimal strings of at most 16 characters).
ORIENTATION_TOLERANCE = 1e-4
POSITION_TOLERANCE_MM = 1e-2
#: A gap this many times the usual slice spacing or more is a missing slice, not uneven spacing.
MISSING_SLICE_RATIO = 1.5


@dataclass(frozen=True)
class DicomSeries:
    """One series' files in one folder, and the case id the batch gives it."""

    case_id: str
    folder: Path
    files: Tuple[Path, ...]
    series_uid: str


@dataclass(frozen=True)
class _Slice:
    path: Path
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: Tuple[float, float]
    rows: int
    columns: int
    frames: int


def _numbers(text: str, count: int, what: str, path: Path) -> np.ndarray:
    try:
        values = np.array([float(v) for v in text.replace(" ", "").strip("\\").split("\\")])
    except ValueError:
        values = np.array([])
    if values.size != count or not np.all(np.isfinite(values)):
        raise InputError(f"{path.name} has an unreadable {what} ('{text[:40]}'); the DICOM file is damaged.")
    return values


def _header(path: Path):
    import SimpleITK as sitk

    from ..core.native_stderr import quiet_native_stderr

    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOff()
    try:
        with quiet_native_stderr():
            reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"{path} cannot be read as DICOM; the file is damaged or not DICOM.") from None
    return reader


def _slice(path: Path) -> _Slice:
    reader = _header(path)

    def tag(key: str, what: str) -> str:
        if not reader.HasMetaDataKey(key):
            raise InputError(f"{path.name} has no {what} ({key.replace('|', ',')}), so its place in space is "
                             "unknown: ClaraAWS reads only images with their geometry.")
        return reader.GetMetaData(key)

    spacing = _numbers(tag(PIXEL_SPACING, "pixel spacing"), 2, "pixel spacing", path)
    frames = reader.GetMetaData(FRAMES).strip() if reader.HasMetaDataKey(FRAMES) else "1"
    return _Slice(
        path=path,
        position=_numbers(tag(POSITION, "image position"), 3, "image position", path),
        orientation=_numbers(tag(ORIENTATION, "image orientation"), 6, "image orientation", path),
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        rows=int(tag(ROWS, "row count").strip() or 0),
        columns=int(tag(COLUMNS, "column count").strip() or 0),
        frames=int(frames) if frames.isdigit() else 1,
    )


def _refuse(series: DicomSeries, problem: str) -> InputError:
    return InputError(f"The DICOM series {series.case_id} in {series.folder} {problem}, so it is not one regular "
                      "grid of voxels: fix or re-export the series.")


class MultiFrameSeries(InputError):
    """One enhanced (multi-frame) file: GDCM reads its per-frame geometry itself."""


def sorted_slices(series: DicomSeries) -> Tuple[List[Path], ImageGrid]:
    """The series' files from the first slice to the last along the slice normal, and their grid.

    Raises InputError for anything that is not one regular grid, and MultiFrameSeries for a single
    enhanced (multi-frame) file, whose per-frame geometry :func:`read_series` leaves to GDCM.
    """
    slices = [_slice(path) for path in series.files]
    if len(slices) == 1 and slices[0].frames > 1:
        raise MultiFrameSeries(f"The DICOM series {series.case_id} in {series.folder} is one multi-frame file.")
    if len(slices) < 2:
        raise InputError(f"The DICOM series {series.case_id} in {series.folder} has one slice; ClaraAWS segments "
                         "volumes, so give a series of several slices.")
    first = slices[0]
    if any(np.abs(s.orientation - first.orientation).max() > ORIENTATION_TOLERANCE for s in slices):
        raise _refuse(series, "mixes slices of different orientations")
    if any((s.rows, s.columns) != (first.rows, first.columns) for s in slices):
        raise _refuse(series, "mixes slices of different sizes")
    if any(np.abs(np.subtract(s.pixel_spacing, first.pixel_spacing)).max() > 1e-4 * max(first.pixel_spacing)
           for s in slices):
        raise _refuse(series, "mixes slices of different pixel spacings")
    row, column = first.orientation[:3], first.orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(column) - 1) > 1e-3 or abs(row @ column) > 1e-3:
        raise _refuse(series, "has an image orientation whose axes are not perpendicular unit vectors")
    normal = np.cross(row, column)
    normal /= np.linalg.norm(normal)

    distances = np.array([s.position @ normal for s in slices])
    order = np.argsort(distances, kind="stable")
    slices = [slices[n] for n in order]
    distances = distances[order]
    gaps = np.diff(distances)
    if gaps.min() < POSITION_TOLERANCE_MM:
        raise _refuse(series, "has two slices at the same position")
    # Each slice must sit on the line through the first along the normal; a tilted gantry shears the stack.
    offsets = [s.position - slices[0].position - d * normal for s, d in zip(slices, distances - distances[0])]
    if max(np.linalg.norm(offset) for offset in offsets) > POSITION_TOLERANCE_MM:
        raise _refuse(series, "has slices that are not stacked along their normal (a tilted gantry)")
    spacing = float(np.median(gaps))
    uneven = np.abs(gaps - spacing) > max(POSITION_TOLERANCE_MM, 1e-3 * spacing)
    if uneven.any():
        largest = float(gaps.max())
        if largest >= MISSING_SLICE_RATIO * spacing:
            missing = int(round(float(np.sum(np.round(gaps[uneven] / spacing) - 1))))
            raise _refuse(series, f"lacks about {max(missing, 1)} slice(s): a gap of {largest:.3g} mm where the "
                                  f"others are {spacing:.3g} mm")
        raise _refuse(series, f"has slice spacings that vary from {gaps.min():.3g} to {largest:.3g} mm")
    grid = ImageGrid(
        size=(first.columns, first.rows, len(slices)),
        # PixelSpacing is (between rows, between columns): the j spacing first, then the i spacing.
        spacing=(first.pixel_spacing[1], first.pixel_spacing[0], spacing),
        origin=tuple(slices[0].position),
        direction=np.column_stack([row, column, normal]),
    )
    return [s.path for s in slices], grid


def read_series(series: DicomSeries) -> Volume:
    """The series' voxels (``[k, j, i]``, k along the slice normal) on the grid its tags describe."""
    import SimpleITK as sitk

    from ..core.native_stderr import quiet_native_stderr

    try:
        files, grid = sorted_slices(series)
    except MultiFrameSeries:
        from ..core.volume_files import read_image_file

        return read_image_file(series.files[0])
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(path) for path in files])
    reader.MetaDataDictionaryArrayUpdateOff()  # no tag leaves the reader
    reader.LoadPrivateTagsOff()
    try:
        with quiet_native_stderr():
            image = reader.Execute()
    except RuntimeError:
        raise InputError(f"The voxels of the DICOM series {series.case_id} in {series.folder} cannot be decoded "
                         "(an unsupported compression or a damaged file).") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"The DICOM series {series.case_id} in {series.folder} is in colour; ClaraAWS segments "
                         "greyscale volumes.")
    array = sitk.GetArrayFromImage(image)
    if array.shape != grid.size[::-1]:
        raise _refuse(series, f"decodes to {list(array.shape[::-1])} voxels instead of {list(grid.size)}")
    return Volume(array, grid)


def _series_in(folder: Path) -> List[Tuple[str, Tuple[Path, ...]]]:
    """(series UID, files) of every series whose files lie directly in ``folder``."""
    import SimpleITK as sitk

    from ..core.native_stderr import quiet_native_stderr

    with quiet_native_stderr():
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        found = [(uid, tuple(Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)))
                 for uid in uids]
    return [(uid, files) for uid, files in found if files]


def _series_number(files: Sequence[Path]) -> float:
    reader = _header(files[0])
    text = reader.GetMetaData(SERIES_NUMBER).strip() if reader.HasMetaDataKey(SERIES_NUMBER) else ""
    try:
        return float(text)
    except ValueError:
        return float("inf")


def _visible_folders(root: Path, exclude: Iterable[Path]) -> Iterable[Path]:
    excluded = {Path(p).resolve() for p in exclude}
    for folder, subfolders, _ in os.walk(root):
        # Hidden folders hold no cases (ours: partial outputs); excluded ones are e.g. the output folder.
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")
                               and (Path(folder) / d).resolve() not in excluded)
        yield Path(folder)


def find_series(root: Union[str, Path], *, exclude: Iterable[Path] = (),
                skip: Callable[[Path], bool] = lambda path: False) -> List[DicomSeries]:
    """Every DICOM series under ``root`` (recursively), each named by its folder: ``name``, then ``name_2``,
    ``name_3``... when a folder holds several (in series-number order). Ids are unique in a folder only;
    :class:`inputs.CaseIds` makes them unique in a whole batch. A series whose files ``skip`` all (a batch's
    own DICOM SEG outputs) is none."""
    found: List[DicomSeries] = []
    for folder in _visible_folders(Path(root), exclude):
        series = [(uid, files) for uid, files in _series_in(folder) if not all(skip(f) for f in files)]
        series.sort(key=lambda item: (_series_number(item[1]), item[0]))
        name = folder.resolve().name or "dicom"
        for n, (uid, files) in enumerate(series, start=1):
            found.append(DicomSeries(case_id=name if n == 1 else f"{name}_{n}", folder=folder, files=files,
                                     series_uid=uid))
    return found


def read_dicom_folder(folder: Union[str, Path]) -> Volume:
    """The one DICOM series under ``folder``; InputError when it holds none or several."""
    folder = Path(folder)
    series = find_series(folder)
    if not series:
        raise InputError(f"The folder {folder} holds no DICOM series; give an image file or a folder of DICOM slices.")
    if len(series) > 1:
        raise InputError(f"The folder {folder} holds {len(series)} DICOM series ({_where(series, folder)}); move "
                         "each series' files to a folder of its own, or run 'clara-aws batch', which segments each.")
    return read_series(series[0])


def _where(series: Sequence[DicomSeries], root: Path) -> str:
    """E.g. ``series 2 and series 5 in the folder itself, series 1 in ct/arterial``: what tells them apart."""
    by_folder: dict = {}
    for item in series:
        number = _series_number(item.files)
        by_folder.setdefault(item.folder, []).append(f"series {number:g}" if np.isfinite(number) else "one unnumbered")
    parts = [f"{' and '.join(numbers)} in {'the folder itself' if place == root else place.relative_to(root)}"
             for place, numbers in list(by_folder.items())[:4]]
    return ", ".join(parts) + (", ..." if len(by_folder) > 4 else "")


def read_input(path: Union[str, Path]) -> Volume:
    """INPUT of any command: an image file SimpleITK reads, or a folder holding one DICOM series."""
    from ..core.volume_files import read_image_file

    path = Path(path)
    return read_dicom_folder(path) if path.is_dir() else read_image_file(path)


__all__ = ["DicomSeries", "find_series", "read_dicom_folder", "read_input", "read_series", "sorted_slices"]
