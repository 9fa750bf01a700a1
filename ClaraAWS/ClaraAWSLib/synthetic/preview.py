"""A PNG preview of a CT with its labels: one axial and one coronal slice, side by side.

Pure NumPy plus SimpleITK's PNG writer, so the demo needs nothing beyond the client's dependencies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple, Union

import numpy as np

from ..core.geometry import Volume
from ..core.itk_io import ITK_FILE_IO

#: Distinct, colour-blind-friendly-ish overlay colours for label values 1, 2, 3, ...
OVERLAY_COLOURS: Tuple[Tuple[int, int, int], ...] = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (153, 153, 153),
)


MIN_PREVIEW_HEIGHT = 384


def overlay_colour(value: int) -> Tuple[int, int, int]:
    return OVERLAY_COLOURS[(int(value) - 1) % len(OVERLAY_COLOURS)]


def write_preview(
    ct: Volume,
    labels: Volume,
    path: Union[str, Path],
    *,
    window: Sequence[float] = (-160.0, 240.0),
    opacity: float = 0.45,
) -> Path:
    """Write ``path`` (PNG): the middle axial (k) and coronal (j) slices with the labels blended in."""
    import SimpleITK as sitk

    if ct.array.shape != labels.array.shape:
        raise ValueError("The preview needs the labels on the CT's grid.")
    k_middle = ct.array.shape[0] // 2
    j_middle = _busiest_index(labels.array, axis=1)
    spacing_i, spacing_j, spacing_k = ct.grid.spacing
    axial = _blend(ct.array[k_middle], labels.array[k_middle], window, opacity)
    coronal = _blend(ct.array[:, j_middle, :], labels.array[:, j_middle, :], window, opacity)
    axial = _stretch_rows(axial, spacing_j / spacing_i)
    coronal = _stretch_rows(coronal, spacing_k / spacing_i)[::-1]  # superior at the top
    height = max(axial.shape[0], coronal.shape[0])
    canvas = np.zeros((height, axial.shape[1] + 8 + coronal.shape[1], 3), np.uint8)
    canvas[: axial.shape[0], : axial.shape[1]] = axial
    canvas[: coronal.shape[0], axial.shape[1] + 8 :] = coronal
    if canvas.shape[0] < MIN_PREVIEW_HEIGHT:  # small phantoms: enlarge so the organs are visible
        factor = -(-MIN_PREVIEW_HEIGHT // canvas.shape[0])
        canvas = canvas.repeat(factor, axis=0).repeat(factor, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with ITK_FILE_IO:
        sitk.WriteImage(sitk.GetImageFromArray(canvas, isVector=True), str(path))
    return path


def _busiest_index(labels: np.ndarray, axis: int) -> int:
    counts = np.count_nonzero(labels, axis=tuple(a for a in range(3) if a != axis))
    return int(np.argmax(counts)) if counts.any() else labels.shape[axis] // 2


def _blend(ct_slice: np.ndarray, label_slice: np.ndarray, window: Sequence[float], opacity: float) -> np.ndarray:
    low, high = window
    grey = np.clip((ct_slice.astype(np.float32) - low) / (high - low), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for value in np.unique(label_slice):
        if value == 0:
            continue
        mask = label_slice == value
        rgb[mask] = (1 - opacity) * rgb[mask] + opacity * np.array(overlay_colour(value), np.float32)
    return rgb.astype(np.uint8)


def _stretch_rows(image: np.ndarray, factor: float) -> np.ndarray:
    """Repeat rows so that a pixel is as tall on screen as it is in millimetres."""
    rows = max(1, int(round(image.shape[0] * factor)))
    source = np.minimum((np.arange(rows) / factor).astype(int), image.shape[0] - 1)
    return image[source]
