"""Sending only the body: the bounding box of the voxels above an intensity threshold, with a margin.

A CT's air around the patient is a third to a half of its voxels; a model for organs inside the body
does not need it. ``body_box`` finds the box of voxels above ``threshold`` (HU for CT), grown by
``margin_mm`` on every side; ``crop_volume`` cuts it out with its own grid (same spacing and axes, the
origin moved to the box's first voxel), so the result the server sends for the box is placed back at
its voxel offset exactly (``geometry.place_in_grid``), without resampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .errors import InputError
from .geometry import Volume, sub_grid

Box = Tuple[Tuple[int, int, int], Tuple[int, int, int]]  # (start, size) in (i, j, k)


@dataclass(frozen=True)
class BodyCrop:
    """A per-model setting: send only voxels within ``margin_mm`` of those above ``threshold``."""

    threshold: float = -500.0  # HU: between air (-1000) and fat (-100)
    margin_mm: float = 10.0

    def __post_init__(self) -> None:
        if not math.isfinite(float(self.threshold)):
            raise InputError(f"The body-crop threshold {self.threshold!r} is not a number; give e.g. -500 (HU).")
        if not math.isfinite(float(self.margin_mm)) or float(self.margin_mm) < 0:
            raise InputError(f"The body-crop margin {self.margin_mm!r} must be 0 or more millimetres; give e.g. 10.")


def body_box(volume: Volume, crop: BodyCrop) -> Optional[Box]:
    """(start, size) of the body's box with the margin, clipped to the volume; None when nothing is above the threshold."""
    above = volume.array > crop.threshold
    ranges = []
    for axis_kji in (2, 1, 0):  # i, j, k
        others = tuple(a for a in range(3) if a != axis_kji)
        present = np.flatnonzero(above.any(axis=others))
        if present.size == 0:
            return None
        ranges.append((int(present[0]), int(present[-1])))
    start, size = [], []
    for axis, (low, high) in enumerate(ranges):
        margin = int(math.ceil(crop.margin_mm / volume.grid.spacing[axis] - 1e-9))
        first, last = max(0, low - margin), min(volume.grid.size[axis] - 1, high + margin)
        start.append(first)
        size.append(last - first + 1)
    return tuple(start), tuple(size)


def crop_volume(volume: Volume, box: Box) -> Volume:
    """The voxels of ``box`` as a volume on their own grid (a copy)."""
    (i0, j0, k0), (si, sj, sk) = box
    array = np.ascontiguousarray(volume.array[k0 : k0 + sk, j0 : j0 + sj, i0 : i0 + si])
    return Volume(array, sub_grid(volume.grid, box[0], box[1]))
