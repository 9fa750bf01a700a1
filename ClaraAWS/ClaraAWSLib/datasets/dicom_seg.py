"""A DICOM Segmentation object from a label volume on a DICOM series' grid (highdicom, an optional extra).

One segment per model label (segment n is ``label_names[n-1]``, whose value in the label volume is the
model's: ``label_values[n-1]``, or n when the model gives no values),
each with its name, a coded category and type (SNOMED CT: organs by their own concept, lesions as
neoplasms, a generic tissue code otherwise; "left"/"right" as a laterality modifier, as DICOM codes
paired organs) and the model as the algorithm. The object references the source series instance by
instance, so viewers place it on the CT it was made from. It copies the source's patient and study
modules, as the standard requires of a SEG: it is an output for the user's own archive, never uploaded.

highdicom and pydicom are imported on first use: nothing of this is needed inside Slicer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.errors import GeometryError, InputError
from ..core.geometry import Volume
from .dicom_series import DicomSeries, MultiFrameSeries, sorted_slices
from .files import replace_atomically
from .report import values_of

SCT = "SCT"
#: (code, meaning) of the segment categories (DICOM CID 7150).
ANATOMICAL_STRUCTURE = ("91723000", "Anatomical Structure")
MORPHOLOGICALLY_ABNORMAL = ("49755003", "Morphologically Abnormal Structure")
TISSUE = ("85756007", "Tissue")
NEOPLASM = ("108369006", "Neoplasm")
#: Laterality modifiers (DICOM CID 244).
LATERALITY = {"left": ("7771000", "Left"), "right": ("24028007", "Right")}
#: SNOMED CT body structures of the labels CT models commonly have (DICOM CID 7151/4031 meanings).
ORGANS: Dict[str, Tuple[str, str]] = {
    "liver": ("10200004", "Liver"),
    "spleen": ("78961009", "Spleen"),
    "kidney": ("64033007", "Kidney"),
    "pancreas": ("15776009", "Pancreas"),
    "gallbladder": ("28231008", "Gallbladder"),
    "stomach": ("69695003", "Stomach"),
    "aorta": ("15825003", "Aorta"),
    "inferior vena cava": ("64131007", "Inferior vena cava"),
    "esophagus": ("32849002", "Esophagus"),
    "heart": ("80891009", "Heart"),
    "lung": ("39607008", "Lung"),
    "brain": ("12738006", "Brain"),
    "prostate": ("41216001", "Prostate"),
    "bladder": ("89837001", "Urinary bladder"),
    "urinary bladder": ("89837001", "Urinary bladder"),
    "adrenal gland": ("23451007", "Adrenal gland"),
    "duodenum": ("38848004", "Duodenum"),
    "colon": ("71854001", "Colon"),
    "small intestine": ("30315005", "Small intestine"),
    "portal vein": ("32764006", "Portal vein"),
    "hepatic vein": ("8993003", "Hepatic vein"),
    "hippocampus": ("5366008", "Hippocampus"),
    "trachea": ("44567001", "Trachea"),
    "vertebra": ("51282000", "Vertebra"),
    "rib": ("113197003", "Rib"),
    "femur": ("71341001", "Femur"),
}
_LESION_WORDS = ("tumor", "tumour", "cancer", "lesion", "neoplasm", "mass", "metastasis")
#: The SEG's own series number: high, so viewers list it after the source series.
SERIES_NUMBER = 900


def segment_codes(label: str) -> Tuple[Tuple[str, str], Tuple[str, str], Optional[Tuple[str, str]]]:
    """(category, type, laterality or None) for a model label name, each as (SCT code, meaning)."""
    words = re.sub(r"[_\-\s]+", " ", label.strip().lower()).split()
    side = next((LATERALITY[w] for w in words if w in LATERALITY), None)
    if side is None and len(words) > 1 and words[-1] in ("l", "r"):  # "kidney_l", a frequent spelling
        side = LATERALITY["left" if words[-1] == "l" else "right"]
        words = words[:-1]
    name = " ".join(w for w in words if w not in LATERALITY)
    if any(word in _LESION_WORDS for word in words):
        return MORPHOLOGICALLY_ABNORMAL, NEOPLASM, None
    if name in ORGANS:
        return ANATOMICAL_STRUCTURE, ORGANS[name], side
    if name.endswith("s") and name[:-1] in ORGANS:  # "kidneys", "lungs"
        return ANATOMICAL_STRUCTURE, ORGANS[name[:-1]], None
    return TISSUE, TISSUE, None


def _modules():
    try:
        import highdicom
        import pydicom
    except ImportError:
        raise InputError("DICOM SEG output needs highdicom and pydicom: install them with "
                         "pip install 'clara-aws[dicom]', or write NIfTI output instead.") from None
    return highdicom, pydicom


def _segment_numbers(labels: Volume, label_names: Sequence[str], label_values: Optional[Sequence[int]]) -> np.ndarray:
    """The label volume with each label's value replaced by its segment number (1..N), 0 elsewhere."""
    array = np.asarray(labels.array)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.array_equal(array, np.round(array)):
            raise InputError("The label volume holds fractional values; a DICOM SEG needs whole label values.")
        array = array.astype(np.int64)
    values = values_of(label_names, label_values)
    low, high = int(array.min()), int(array.max())
    present = np.flatnonzero(np.bincount(array.ravel(), minlength=1)) if 0 <= low and high <= max(values) else []
    unknown = low if low < 0 else high if high > max(values) else \
        next((int(value) for value in present if value and value not in values), None)
    if unknown is not None:
        raise InputError(f"The label volume holds value {unknown}, which none of the model's {len(label_names)} "
                         f"labels has (values {', '.join(map(str, values))}).")
    numbers = np.zeros(max(values) + 1, np.int64)
    numbers[values] = np.arange(1, len(values) + 1)
    return numbers[array].astype(np.uint8 if len(label_names) < 256 else np.uint16)


def build_dicom_seg(labels: Volume, series: DicomSeries, label_names: Sequence[str], *, model_name: str,
                    model_version: str = "1", label_values: Optional[Sequence[int]] = None):
    """The highdicom Segmentation of ``labels`` (on ``series``' grid) referencing ``series``."""
    highdicom, pydicom = _modules()
    from pydicom.uid import generate_uid

    from .. import __version__

    if not label_names:
        raise InputError("The model names no labels, so the DICOM SEG would have no segment.")
    try:
        files, grid = sorted_slices(series)
    except MultiFrameSeries:
        raise InputError(f"The DICOM series {series.case_id} is one multi-frame file; ClaraAWS writes DICOM SEG "
                         "for series of single-slice files only, so write NIfTI output for it.") from None
    if not labels.grid.matches(grid):
        raise GeometryError(f"The labels ({labels.grid.describe()}) are not on the grid of the DICOM series "
                            f"{series.case_id} ({grid.describe()}): place them on the series' grid first.")
    pixels = _segment_numbers(labels, label_names, label_values)
    sources = [pydicom.dcmread(str(path), stop_before_pixels=True) for path in files]
    algorithm = highdicom.AlgorithmIdentificationSequence(
        name=model_name or "unknown model", version=model_version or "1",
        family=highdicom.sr.CodedConcept("123110", "DCM", "Artificial Intelligence"),
    )
    descriptions = []
    for number, label in enumerate(label_names, start=1):
        category, kind, side = segment_codes(label)
        description = highdicom.seg.SegmentDescription(
            segment_number=number,
            segment_label=str(label)[:64],
            segmented_property_category=highdicom.sr.CodedConcept(category[0], SCT, category[1]),
            segmented_property_type=highdicom.sr.CodedConcept(kind[0], SCT, kind[1]),
            algorithm_type="AUTOMATIC",
            algorithm_identification=algorithm,
        )
        if side is not None:
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                highdicom.sr.CodedConcept(side[0], SCT, side[1])]
        descriptions.append(description)
    return highdicom.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,  # [k, j, i] = frames in source order, rows, columns
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="ClaraAWS",
        manufacturer_model_name=str(model_name or "unknown model")[:64],
        software_versions=__version__,
        device_serial_number="none",
        content_description=f"AI segmentation by {model_name}"[:64],
    )


def write_dicom_seg(labels: Volume, series: DicomSeries, label_names: Sequence[str], output: Union[str, Path], *,
                    model_name: str, model_version: str = "1", label_values: Optional[Sequence[int]] = None) -> Path:
    """Write the DICOM SEG atomically (beside ``output``, read back, then renamed); returns ``output``."""
    segmentation = build_dicom_seg(labels, series, label_names, model_name=model_name, model_version=model_version,
                                   label_values=label_values)
    _, pydicom = _modules()

    def save(partial: Path) -> None:
        segmentation.save_as(str(partial))
        if pydicom.dcmread(str(partial), stop_before_pixels=True).SOPInstanceUID != segmentation.SOPInstanceUID:
            raise OSError("the file read back is another object")

    return replace_atomically(Path(output), save, "DICOM SEG")


def read_dicom_seg(path: Union[str, Path], series: DicomSeries, label_names: Sequence[str],
                   label_values: Optional[Sequence[int]] = None) -> Volume:
    """The labels of a DICOM SEG this module wrote for ``series``, back on the series' grid with the model's
    label values (segment n is label n); InputError when it is not a SEG of that series with one segment per label."""
    highdicom, pydicom = _modules()
    files, grid = sorted_slices(series)
    uids = [pydicom.dcmread(str(file), stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID
            for file in files]
    try:
        segmentation = highdicom.seg.segread(str(path))
        if len(segmentation.SegmentSequence) != len(label_names):
            raise ValueError(f"{len(segmentation.SegmentSequence)} segments for {len(label_names)} labels")
        pixels = segmentation.get_pixels_by_source_instance(uids, combine_segments=True,
                                                            assert_missing_frames_are_empty=True)
    except (OSError, ValueError, KeyError, AttributeError) as error:
        raise InputError(f"The DICOM SEG {path} is not the labels of series {series.case_id} ({error}).") from None
    values = np.array([0] + values_of(label_names, label_values))
    dtype = np.uint8 if values.max() < 256 else np.uint16
    return Volume(np.ascontiguousarray(values[np.asarray(pixels, np.int64)], dtype=dtype), grid)


__all__: List[str] = ["build_dicom_seg", "read_dicom_seg", "segment_codes", "write_dicom_seg"]
