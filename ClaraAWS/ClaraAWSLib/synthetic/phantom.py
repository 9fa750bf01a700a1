"""A synthetic abdominal CT with ground-truth organ labels, for tests, benchmarks and the demo.

The anatomy is defined in physical LPS millimetres relative to the centre of the image grid, so a grid
with any origin, spacing or (oblique) direction shows the same patient: the liver always lies on the
patient's right (negative LPS x), the spleen on the left and posterior, the kidneys beside the spine.
Lengths below describe a small adult at the reference 240 mm field of view; the anatomy is scaled with
the grid's field of view (in-plane and along k separately) so that small test volumes still contain
every organ.

Intensities are portal-venous Hounsfield units: air -1000, subcutaneous and perirenal fat about -100,
soft tissue 40, liver 100, spleen 120, kidneys 170, aorta 150, vertebral bone 400 with a 700 HU cortex.
The image is blurred slightly (a CT point-spread function) and white Gaussian noise is added,
deterministically for a given seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.errors import InputError
from ..core.geometry import ImageGrid, Volume
from ..core.volume_files import write_image_file

#: Label value v of the truth image is ``PHANTOM_LABELS[v - 1]``.
PHANTOM_LABELS: Tuple[str, ...] = ("liver", "spleen", "left kidney", "right kidney")

#: Hounsfield units of each tissue before blur and noise.
HU = {
    "air": -1000.0,
    "fat": -100.0,
    "perirenal_fat": -80.0,
    "soft_tissue": 40.0,
    "liver": 100.0,
    "spleen": 120.0,
    "kidney": 170.0,
    "aorta": 150.0,
    "cancellous_bone": 400.0,
    "cortical_bone": 700.0,
    "disc": 90.0,
    "csf": 15.0,
}

#: The anatomy below is drawn for this field of view (millimetres, in-plane and along k).
REFERENCE_FOV_MM = 240.0

_SLAB_VOXELS = 1 << 21  # evaluate the anatomy about two million voxels at a time to bound memory


@dataclass
class Phantom:
    ct: Volume  # int16 Hounsfield units
    truth: Volume  # uint8 organ labels; value v is labels[v - 1]
    labels: List[str]

    def label_value(self, name: str) -> int:
        return self.labels.index(name) + 1


def oblique_direction(degrees: Sequence[float] = (10.0, 0.0, 20.0)) -> np.ndarray:
    """Rotation matrix (columns = i, j, k axis directions in LPS) for rotations about x, then y, then z."""
    ax, ay, az = np.radians([float(v) for v in degrees])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


# --- shapes, in reference millimetres relative to the grid centre ----------------------------------
Points = np.ndarray  # (N, 3) float32, reference-frame LPS millimetres
Shape = Callable[[Points], np.ndarray]  # points -> boolean mask


def _rotation_z(degrees: float) -> np.ndarray:
    return oblique_direction((0.0, 0.0, degrees))


def _ellipsoid(centre: Sequence[float], semi_axes: Sequence[float], rotation_z_deg: float = 0.0) -> Shape:
    centre_arr = np.asarray(centre, dtype=np.float32)
    # Rows of the inverse rotation take a point into the ellipsoid's own axes; divide by the semi-axes there.
    to_local = (_rotation_z(rotation_z_deg).T / np.asarray(semi_axes, dtype=float)[:, None]).astype(np.float32)

    # A box around the ellipsoid (whatever its rotation about z) rules most points out cheaply.
    reach = np.array([max(semi_axes[0], semi_axes[1])] * 2 + [semi_axes[2]], dtype=np.float32)
    low, high = centre_arr - reach, centre_arr + reach

    def inside(points: Points) -> np.ndarray:
        result = np.zeros(len(points), dtype=bool)
        near = (points[:, 2] >= low[2]) & (points[:, 2] <= high[2])
        for axis in (0, 1):
            near &= (points[:, axis] >= low[axis]) & (points[:, axis] <= high[axis])
        candidates = np.flatnonzero(near)
        if candidates.size:
            local = (points[candidates] - centre_arr) @ to_local.T
            result[candidates] = np.einsum("ij,ij->i", local, local) <= 1.0
        return result

    return inside


def _elliptic_cylinder(centre_xy: Sequence[float], semi_axes_xy: Sequence[float]) -> Shape:
    cx, cy = (float(v) for v in centre_xy)
    ax, ay = (float(v) for v in semi_axes_xy)

    def inside(points: Points) -> np.ndarray:
        return ((points[:, 0] - cx) / ax) ** 2 + ((points[:, 1] - cy) / ay) ** 2 <= 1.0

    return inside


def _union(*shapes: Shape) -> Shape:
    def inside(points: Points) -> np.ndarray:
        mask = shapes[0](points)
        for shape in shapes[1:]:
            mask |= shape(points)
        return mask

    return inside


_BODY = _elliptic_cylinder((0.0, 0.0), (110.0, 85.0))
_BODY_INNER = _elliptic_cylinder((0.0, 0.0), (101.0, 76.0))  # 9 mm of subcutaneous fat
_LIVER = _union(
    _ellipsoid((-44.0, -14.0, 45.0), (46.0, 47.0, 58.0), rotation_z_deg=10.0),  # right lobe
    _ellipsoid((-4.0, -44.0, 60.0), (30.0, 17.0, 28.0), rotation_z_deg=-15.0),  # left lobe, anterior
)
_SPLEEN = _ellipsoid((62.0, 20.0, 58.0), (15.0, 30.0, 34.0), rotation_z_deg=-30.0)
_LEFT_KIDNEY = _ellipsoid((48.0, 40.0, -32.0), (18.0, 23.0, 42.0), rotation_z_deg=20.0)
_RIGHT_KIDNEY = _ellipsoid((-48.0, 40.0, -38.0), (18.0, 23.0, 42.0), rotation_z_deg=-20.0)
_LEFT_PERIRENAL = _ellipsoid((48.0, 40.0, -32.0), (24.0, 29.0, 49.0), rotation_z_deg=20.0)
_RIGHT_PERIRENAL = _ellipsoid((-48.0, 40.0, -38.0), (24.0, 29.0, 49.0), rotation_z_deg=-20.0)
_AORTA = _elliptic_cylinder((12.0, 22.0), (8.0, 8.0))
_VERTEBRAL_BODY = _elliptic_cylinder((0.0, 50.0), (17.0, 15.0))
_VERTEBRAL_CANCELLOUS = _elliptic_cylinder((0.0, 50.0), (14.5, 12.5))
_CANAL = _elliptic_cylinder((0.0, 73.0), (7.0, 6.0))
_ARCH = _elliptic_cylinder((0.0, 73.0), (11.0, 10.0))
_BOWEL_GAS = _union(
    _ellipsoid((38.0, -52.0, 10.0), (12.0, 9.0, 14.0)),
    _ellipsoid((-8.0, -60.0, -40.0), (10.0, 8.0, 11.0)),
    _ellipsoid((45.0, -30.0, -60.0), (9.0, 8.0, 16.0)),
)
_DISC_PERIOD_MM = 32.0
_DISC_THICKNESS_MM = 7.0


def _paint_slab(points: Points) -> Tuple[np.ndarray, np.ndarray]:
    """Hounsfield units (float32) and truth labels (uint8) at reference-frame points."""
    hu = np.full(len(points), HU["air"], dtype=np.float32)
    truth = np.zeros(len(points), dtype=np.uint8)
    body = _BODY(points)
    if not body.any():
        return hu, truth
    # Evaluate only points inside the body; everything else stays air.
    inner_points = points[body]
    values = np.full(len(inner_points), HU["fat"], dtype=np.float32)
    labels = np.zeros(len(inner_points), dtype=np.uint8)
    values[_BODY_INNER(inner_points)] = HU["soft_tissue"]
    values[_LEFT_PERIRENAL(inner_points) | _RIGHT_PERIRENAL(inner_points)] = HU["perirenal_fat"]
    organs = (
        (_LIVER, HU["liver"], 1),
        (_SPLEEN, HU["spleen"], 2),
        (_LEFT_KIDNEY, HU["kidney"], 3),
        (_RIGHT_KIDNEY, HU["kidney"], 4),
    )
    for shape, value, label in organs:
        mask = shape(inner_points)
        values[mask] = value
        labels[mask] = label
    values[_AORTA(inner_points)] = HU["aorta"]
    # Vertebrae: cortical shell, cancellous core, intervertebral discs at a fixed period along z.
    vertebra = _VERTEBRAL_BODY(inner_points)
    values[vertebra] = HU["cortical_bone"]
    values[vertebra & _VERTEBRAL_CANCELLOUS(inner_points)] = HU["cancellous_bone"]
    z_phase = np.mod(inner_points[:, 2], _DISC_PERIOD_MM)
    values[vertebra & (z_phase < _DISC_THICKNESS_MM)] = HU["disc"]
    arch = _ARCH(inner_points) & ~vertebra
    values[arch] = HU["cortical_bone"]
    values[_CANAL(inner_points)] = HU["csf"]
    gas = _BOWEL_GAS(inner_points)
    values[gas] = HU["air"]
    labels[gas] = 0
    hu[body] = values
    truth[body] = labels
    return hu, truth


def _grid_for(
    size: Sequence[int],
    spacing: Sequence[float],
    origin: Optional[Sequence[float]],
    direction: Optional[np.ndarray],
) -> ImageGrid:
    direction_arr = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    size_arr = np.asarray(size, dtype=int)
    spacing_arr = np.asarray(spacing, dtype=float)
    if origin is None:
        # Centre the grid on the LPS origin.
        origin = -(direction_arr @ (spacing_arr * (size_arr - 1) / 2.0))
    return ImageGrid(tuple(size_arr), tuple(spacing_arr), tuple(float(v) for v in origin), direction_arr)


def _anatomy_scale(grid: ImageGrid) -> np.ndarray:
    """Factors that fit the reference anatomy into this grid's field of view."""
    extent = np.asarray(grid.size, dtype=float) * np.asarray(grid.spacing)
    in_plane = min(extent[0], extent[1]) / REFERENCE_FOV_MM
    along_k = extent[2] / REFERENCE_FOV_MM
    return np.array([in_plane, in_plane, along_k], dtype=np.float32)


def make_phantom(
    size: Sequence[int] = (160, 160, 80),
    spacing: Sequence[float] = (1.5, 1.5, 3.0),
    origin: Optional[Sequence[float]] = None,
    direction: Optional[np.ndarray] = None,
    noise_hu: float = 12.0,
    seed: int = 0,
    blur_voxels: float = 0.6,
) -> Phantom:
    """Build the phantom on the grid given by ``size``/``spacing``/``origin``/``direction`` (ITK terms).

    ``origin=None`` centres the grid on LPS (0, 0, 0). ``blur_voxels`` is the Gaussian point-spread width
    in voxels (0 disables it).
    """
    if len(tuple(size)) != 3 or min(int(v) for v in size) < 1:
        raise InputError(f"The phantom size {list(size)} must be three positive voxel counts (i, j, k).")
    if noise_hu < 0 or blur_voxels < 0:
        raise InputError("The phantom's noise_hu and blur_voxels must not be negative.")
    grid = _grid_for(size, spacing, origin, direction)
    ni, nj, nk = grid.size
    centre = np.asarray(grid.ijk_to_lps()[:3, :3] @ ((np.asarray(grid.size) - 1) / 2.0) + grid.origin)
    index_to_reference = (grid.direction @ np.diag(grid.spacing)) / _anatomy_scale(grid)[:, None]
    centre_reference = (centre - np.asarray(grid.origin)) / _anatomy_scale(grid)

    hu = np.empty((nk, nj, ni), dtype=np.float32)
    truth = np.empty((nk, nj, ni), dtype=np.uint8)
    jj, ii = np.meshgrid(np.arange(nj, dtype=np.float32), np.arange(ni, dtype=np.float32), indexing="ij")
    plane = np.stack([ii.ravel(), jj.ravel(), np.zeros(ii.size, dtype=np.float32)], axis=1)
    # Reference-frame position of every voxel of slice k=0; slice k adds k times the k column.
    plane_reference = (plane @ index_to_reference.T.astype(np.float32)) - centre_reference.astype(np.float32)
    k_step = index_to_reference[:, 2].astype(np.float32)
    slices_per_slab = max(1, _SLAB_VOXELS // max(1, ni * nj))
    for k0 in range(0, nk, slices_per_slab):
        k1 = min(nk, k0 + slices_per_slab)
        ks = np.arange(k0, k1, dtype=np.float32)
        points = (plane_reference[None, :, :] + ks[:, None, None] * k_step[None, None, :]).reshape(-1, 3)
        slab_hu, slab_truth = _paint_slab(points)
        hu[k0:k1] = slab_hu.reshape(k1 - k0, nj, ni)
        truth[k0:k1] = slab_truth.reshape(k1 - k0, nj, ni)

    if blur_voxels > 0:
        hu = _blur(hu, grid, blur_voxels)
    if noise_hu > 0:
        rng = np.random.default_rng(seed)
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(noise_hu)
    ct = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return Phantom(ct=Volume(ct, grid), truth=Volume(truth, grid), labels=list(PHANTOM_LABELS))


def _blur(hu: np.ndarray, grid: ImageGrid, blur_voxels: float) -> np.ndarray:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(grid.spacing)
    variances = [(blur_voxels * s) ** 2 for s in grid.spacing]
    # A small discrete kernel is exact enough for a sub-voxel blur and twice as fast as the recursive filter.
    kernel_width = 2 * int(np.ceil(3 * blur_voxels)) + 1
    return sitk.GetArrayFromImage(sitk.DiscreteGaussian(image, variances, kernel_width, 0.01, True))


def write_phantom(
    out_dir: Union[str, os.PathLike],
    *,
    prefix: str = "phantom",
    **kwargs,
) -> Tuple[Path, Path]:
    """Write ``<prefix>_ct.nii.gz`` and ``<prefix>_truth.nii.gz`` into ``out_dir``; kwargs go to make_phantom."""
    directory = Path(out_dir)
    phantom = make_phantom(**kwargs)
    ct_path = directory / f"{prefix}_ct.nii.gz"
    truth_path = directory / f"{prefix}_truth.nii.gz"
    write_image_file(phantom.ct, ct_path)
    write_image_file(phantom.truth, truth_path)
    return ct_path, truth_path
