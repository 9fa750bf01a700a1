"""Classical region growing shared by the reference server's models.

Everything here works on 2D or 3D SimpleITK images and on NumPy masks of the same grid in NumPy order
([k, j, i] or [j, i]). Seeds and clicks are ITK indices ((i, j, k) or (i, j)).

The idea: an object's edge lies half-way between its own typical intensity and that of its
surroundings. A window around the seed intensity finds the object roughly; the median of a shell just
outside that rough region estimates the surroundings; the final window stops half-way to them. That
keeps edges in place whether an organ borders soft tissue or fat.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

Index = Tuple[int, ...]
Box = Tuple[slice, ...]  # NumPy-order slices

SEED_RADIUS_MM = 3.0  # neighbourhood used to measure a seed's intensity
MIN_HALF_WINDOW_HU = 15.0
SHELL_INNER_MM = 2.0
SHELL_OUTER_MM = 5.0


def numpy_index(index: Sequence[int]) -> Tuple[int, ...]:
    return tuple(int(v) for v in reversed(index))


def sitk_box(box: Box) -> Box:
    """NumPy-order slices as SimpleITK slicing wants them (ITK order)."""
    return tuple(reversed(box))


def padded_box(mask: np.ndarray, spacing: Sequence[float], margin_mm: float) -> Optional[Box]:
    """NumPy slices around the non-zero voxels of ``mask``, grown by ``margin_mm``, clipped to the array."""
    if not mask.any():
        return None
    slices = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other_axes))
        reach = int(math.ceil(margin_mm / spacing[mask.ndim - 1 - axis])) + 1
        slices.append(slice(max(0, int(present[0]) - reach), min(mask.shape[axis], int(present[-1]) + reach + 1)))
    return tuple(slices)


def radius_voxels(image: sitk.Image, millimetres: float) -> List[int]:
    """Kernel radius per ITK axis that spans ``millimetres`` (at least one voxel)."""
    return [max(1, int(math.ceil(millimetres / s))) for s in image.GetSpacing()]


def dilate(mask: np.ndarray, reference: sitk.Image, millimetres: float) -> np.ndarray:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(reference.GetSpacing())
    dilated = sitk.BinaryDilate(image, radius_voxels(reference, millimetres), sitk.sitkBall)
    return sitk.GetArrayFromImage(dilated) > 0


def fill_holes(mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return mask
    return sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(mask.astype(np.uint8)))) > 0


def seed_statistics(values: np.ndarray, seeds: Sequence[Index], spacing: Sequence[float]) -> Tuple[float, float]:
    """Median and robust spread of the intensities within a few millimetres of the seeds."""
    samples = []
    for seed in seeds:
        window = []
        for axis, position in enumerate(numpy_index(seed)):
            reach = max(1, int(round(SEED_RADIUS_MM / spacing[len(seed) - 1 - axis])))
            window.append(slice(max(0, position - reach), position + reach + 1))
        samples.append(values[tuple(window)].ravel())
    pooled = np.concatenate(samples)
    median = float(np.median(pooled))
    spread = float(1.4826 * np.median(np.abs(pooled - median)))
    return median, spread


def surroundings_median(image: sitk.Image, values: np.ndarray, region: np.ndarray) -> Optional[float]:
    """Median intensity of a shell a few millimetres outside ``region`` (None when there is no shell)."""
    box = padded_box(region, image.GetSpacing(), SHELL_OUTER_MM)
    if box is None:
        return None
    crop = image[sitk_box(box)]
    near = region[box]
    shell = dilate(near, crop, SHELL_OUTER_MM) & ~dilate(near, crop, SHELL_INNER_MM)
    if not shell.any():
        return None
    return float(np.median(values[box][shell]))


def window_towards(median: float, surroundings: Optional[float], half: float) -> Tuple[float, float]:
    """Stop half-way to the surroundings on their side; reach half as far on the other side."""
    if surroundings is None:
        return median - half, median + half
    contrast = abs(median - surroundings) / 2.0
    if contrast <= half:
        return median - half, median + half
    far = max(half, contrast / 2.0)
    if surroundings < median:
        return median - contrast, median + far
    return median - far, median + contrast


def _connected(image: sitk.Image, seeds: Sequence[Index], low: float, high: float) -> np.ndarray:
    seed_list = [tuple(int(v) for v in s) for s in seeds]
    grown = sitk.ConnectedThreshold(image, seedList=seed_list, lower=float(low), upper=float(high))
    return sitk.GetArrayFromImage(grown) > 0


def contrast_window(image: sitk.Image, values: np.ndarray, seeds: Sequence[Index]) -> Tuple[float, float]:
    """Intensity window for growing from ``seeds`` (see the module docstring)."""
    median, spread = seed_statistics(values, seeds, image.GetSpacing())
    half = max(3.0 * spread, MIN_HALF_WINDOW_HU)
    rough = _connected(image, seeds, median - half, median + half)
    surroundings = surroundings_median(image, values, rough)
    return window_towards(median, surroundings, half)


def grow_region(image: sitk.Image, seeds: Sequence[Index], allowed: Optional[np.ndarray] = None) -> np.ndarray:
    """Mask of the region connected to ``seeds`` within the contrast window (and within ``allowed``)."""
    values = sitk.GetArrayFromImage(image)
    usable = [s for s in seeds if allowed is None or allowed[numpy_index(s)]]
    if not usable:
        return np.zeros(values.shape, dtype=bool)
    low, high = contrast_window(image, values, usable)
    candidate = (values >= low) & (values <= high)
    if allowed is not None:
        candidate &= allowed
    return fill_holes(keep_seeded_components(candidate, usable))


def keep_seeded_components(mask: np.ndarray, seeds: Sequence[Index]) -> np.ndarray:
    """The connected components of ``mask`` that contain at least one seed."""
    if not mask.any():
        return mask
    labelled = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8))))
    keep = {int(labelled[numpy_index(s)]) for s in seeds} - {0}
    if not keep:
        return np.zeros_like(mask)
    return np.isin(labelled, sorted(keep))


def closer_to_foreground(
    shape: Sequence[int],
    spacing: Sequence[float],
    foreground: Sequence[Index],
    background: Sequence[Index],
) -> np.ndarray:
    """Mask of voxels physically nearer to some foreground click than to every background click."""

    def squared_distance_to(points: Sequence[Index]) -> np.ndarray:
        marks = np.zeros(shape, dtype=np.uint8)
        for point in points:
            marks[numpy_index(point)] = 1
        image = sitk.GetImageFromArray(marks)
        image.SetSpacing(tuple(float(s) for s in spacing))
        distance = sitk.SignedMaurerDistanceMap(
            image, insideIsPositive=False, squaredDistance=True, useImageSpacing=True
        )
        return sitk.GetArrayFromImage(distance)

    return squared_distance_to(foreground) < squared_distance_to(background)


def bounding_box(mask: np.ndarray) -> Optional[List[List[int]]]:
    """Inclusive ITK-order box [[i0, i1], [j0, j1], ...] of a NumPy-order mask, or None when empty."""
    if not mask.any():
        return None
    box = []
    for axis in reversed(range(mask.ndim)):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other_axes))
        box.append([int(present[0]), int(present[-1])])
    return box


def extreme_points(mask: np.ndarray) -> List[List[int]]:
    """The voxels of ``mask`` with the lowest and highest index along each ITK axis (ITK order)."""
    if not mask.any():
        return []
    coordinates = np.argwhere(mask)  # NumPy order
    points = []
    for axis in reversed(range(mask.ndim)):
        for pick in (np.argmin, np.argmax):
            points.append([int(v) for v in coordinates[pick(coordinates[:, axis])][::-1]])
    return points
