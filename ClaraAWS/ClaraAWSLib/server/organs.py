"""A classical organ segmenter for the ClaraAWS synthetic phantom (not a trained network).

Steps: Gaussian smoothing, a Hounsfield window that keeps enhancing soft-tissue organs, connected
components, then each organ is picked by where its component lies in physical LPS space relative to
the patient's body (liver: patient's right; spleen: left, lateral; kidneys: either side of the spine,
posterior) and by its mean intensity. Positions are measured in millimetres of LPS space, never in
voxel indices, so the same rules hold on oblique and anisotropic grids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from .growing import SHELL_OUTER_MM, dilate, fill_holes, keep_seeded_components, sitk_box, surroundings_median

ORGAN_LABELS: List[str] = ["liver", "spleen", "left kidney", "right kidney"]

SMOOTHING_SIGMA_MM = 1.5  # for finding organs: suppresses noise, blurs edges
EDGE_SMOOTHING_SIGMA_MM = 0.75  # for placing their edges
ORGAN_WINDOW_HU = (70.0, 260.0)
BODY_THRESHOLD_HU = -500.0
MIN_ORGAN_FRACTION_OF_BODY = 0.002
MAX_SMOOTHING_VOXELS = 3  # cap the kernel on very fine grids; noise is already low there
EDGE_MARGIN_MM = 4.0  # how far an organ's refined edge may move out of its first component


@dataclass
class Component:
    label: int
    voxels: int
    centroid_lps: np.ndarray
    mean_hu: float
    relative_x: float  # centroid along LPS x, in half-widths of the body; negative = patient's right
    relative_y: float  # along LPS y; positive = posterior
    bounding_box: tuple  # (i, j, k, size_i, size_j, size_k) as ITK reports it


def smooth(image: sitk.Image, sigma_mm: float = SMOOTHING_SIGMA_MM) -> sitk.Image:
    """Float32 Gaussian-smoothed copy; the kernel never exceeds a few voxels per axis."""
    sigmas = [min(sigma_mm, MAX_SMOOTHING_VOXELS * s) for s in image.GetSpacing()]
    return sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), sigmas)


def _voxel_lps(image: sitk.Image, indices_kji: np.ndarray) -> np.ndarray:
    """LPS millimetres of voxels given as rows of NumPy-order indices [k, j, i]."""
    dimension = image.GetDimension()
    direction = np.array(image.GetDirection()).reshape(dimension, dimension)
    matrix = direction @ np.diag(image.GetSpacing())
    return indices_kji[:, ::-1].astype(float) @ matrix.T + np.array(image.GetOrigin())


def _body_frame(smoothed: sitk.Image):
    """Centre and half-widths (LPS x, y) of the patient's body: the largest region above -500 HU."""
    body = sitk.RelabelComponent(sitk.ConnectedComponent(smoothed > BODY_THRESHOLD_HU), sortByObjectSize=True) == 1
    mask = sitk.GetArrayViewFromImage(body)
    # A subsample is plenty for extents and keeps this cheap on 512x512 volumes.
    step = max(1, int(round((mask.size / 2e6) ** (1 / 3))))
    indices = np.argwhere(mask[::step, ::step, ::step]) * step
    if len(indices) == 0:
        return None
    lps = _voxel_lps(smoothed, indices)
    low, high = np.percentile(lps, [0.5, 99.5], axis=0)
    centre = (low + high) / 2.0
    half_width = np.maximum((high - low) / 2.0, 1.0)
    return centre, half_width, int(mask.sum())


def _components(smoothed: sitk.Image, centre: np.ndarray, half_width: np.ndarray, min_voxels: int):
    low, high = ORGAN_WINDOW_HU
    candidates = sitk.BinaryThreshold(smoothed, low, high, 1, 0)
    labelled = sitk.ConnectedComponent(candidates)
    shapes = sitk.LabelShapeStatisticsImageFilter()
    shapes.Execute(labelled)
    intensities = sitk.LabelStatisticsImageFilter()
    intensities.Execute(smoothed, labelled)
    found: List[Component] = []
    for label in shapes.GetLabels():
        voxels = shapes.GetNumberOfPixels(label)
        if voxels < min_voxels:
            continue
        centroid = np.array(shapes.GetCentroid(label))  # physical (LPS) coordinates
        relative = (centroid - centre) / half_width
        found.append(
            Component(
                label,
                voxels,
                centroid,
                intensities.GetMean(label),
                float(relative[0]),
                float(relative[1]),
                shapes.GetBoundingBox(label),
            )
        )
    return labelled, found


def _pick(components: Sequence[Component], rule) -> Optional[Component]:
    matching = [c for c in components if rule(c)]
    return max(matching, key=lambda c: c.voxels) if matching else None


ORGAN_RULES = {
    # Portal-venous phantom intensities: liver ~100, spleen ~120, kidneys ~170 HU.
    "liver": lambda c: c.relative_x < -0.05 and 70.0 <= c.mean_hu < 140.0,
    "spleen": lambda c: c.relative_x > 0.3 and c.relative_y > -0.4 and 80.0 <= c.mean_hu < 145.0,
    "left kidney": lambda c: 0.2 < c.relative_x < 0.85 and c.relative_y > 0.1 and 140.0 <= c.mean_hu < 240.0,
    "right kidney": lambda c: -0.85 < c.relative_x < -0.2 and c.relative_y > 0.1 and 140.0 <= c.mean_hu < 240.0,
}


def segment_organs(image: sitk.Image, smoothed: Optional[sitk.Image] = None) -> np.ndarray:
    """Label array ([k, j, i], uint8) on the input's grid; value v is ORGAN_LABELS[v - 1]."""
    if smoothed is None:
        smoothed = smooth(image)
    result = np.zeros(sitk.GetArrayViewFromImage(image).shape, dtype=np.uint8)
    frame = _body_frame(smoothed)
    if frame is None:
        return result
    centre, half_width, body_voxels = frame
    min_voxels = max(20, int(MIN_ORGAN_FRACTION_OF_BODY * body_voxels))
    labelled, components = _components(smoothed, centre, half_width, min_voxels)
    labelled_array = sitk.GetArrayViewFromImage(labelled)
    used: set = set()
    for value, organ in enumerate(ORGAN_LABELS, start=1):
        choice = _pick([c for c in components if c.label not in used], ORGAN_RULES[organ])
        if choice is None:
            continue
        used.add(choice.label)
        box = _box_around(choice.bounding_box, image, EDGE_MARGIN_MM + SHELL_OUTER_MM)
        component = labelled_array[box] == choice.label
        crop = smooth(image[sitk_box(box)], EDGE_SMOOTHING_SIGMA_MM)
        organ = _refine_edges(crop, component)
        result[box][organ & (result[box] == 0)] = value
    return result


def _box_around(bounding_box: Sequence[int], image: sitk.Image, margin_mm: float):
    """NumPy slices of an ITK bounding box (start, size) grown by ``margin_mm`` and clipped to the image."""
    start, size = bounding_box[:3], bounding_box[3:]
    slices = []
    for axis in (2, 1, 0):
        reach = int(np.ceil(margin_mm / image.GetSpacing()[axis])) + 1
        low = max(0, start[axis] - reach)
        high = min(image.GetSize()[axis], start[axis] + size[axis] + reach)
        slices.append(slice(low, high))
    return tuple(slices)


def _refine_edges(smoothed_crop: sitk.Image, component: np.ndarray) -> np.ndarray:
    """Place the organ's edge on a lightly smoothed image, half-way to its surroundings (70 HU at most).

    The heavily smoothed image that separates the organs rounds their edges off; organs bordering fat
    (kidneys in perirenal fat) also deserve a lower threshold than organs bordering soft tissue."""
    values = sitk.GetArrayFromImage(smoothed_crop)
    organ_median = float(np.median(values[component]))
    surroundings = surroundings_median(smoothed_crop, values, component)
    if surroundings is None or surroundings >= organ_median:
        return fill_holes(component)
    low = min(ORGAN_WINDOW_HU[0], (organ_median + surroundings) / 2.0)
    reachable = dilate(component, smoothed_crop, EDGE_MARGIN_MM)
    refined = (values >= low) & (values <= ORGAN_WINDOW_HU[1]) & reachable
    seeds = [tuple(int(v) for v in index[::-1]) for index in np.argwhere(component)[:: max(1, int(component.sum()) // 50)]]
    return fill_holes(keep_seeded_components(refined, seeds) | component)


def organ_summary(labels: np.ndarray) -> Dict[str, int]:
    """Voxel count per organ name, for the response's params."""
    counts = np.bincount(labels.ravel(), minlength=len(ORGAN_LABELS) + 1)
    return {name: int(counts[value]) for value, name in enumerate(ORGAN_LABELS, start=1)}
