"""Segmentation layouts users really have, and exact fingerprints of segments, for the scene-safety tests.

Everything here is computed with Slicer's own API or plain NumPy, never with the ClaraAWS code under
test: user segments are painted with ``SetBinaryLabelmapToSegment``, fingerprints read the raw layer
voxels, and expected results map voxel centres between lattices with explicit matrices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

import slicer_scene as ss

BINARY = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
SURFACE = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()

SHARED_LAYOUTS = ("shared_first", "shared_middle", "shared_last")
GRID_LAYOUTS = ("finer", "coarser", "shifted")
LAYOUTS = ("own_layers",) + SHARED_LAYOUTS + GRID_LAYOUTS + ("other_transform", "closed_surface")


def matrix_of(vtk_matrix_object) -> np.ndarray:
    return np.array([[vtk_matrix_object.GetElement(r, c) for c in range(4)] for r in range(4)])


def layer_matrix(image) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return matrix_of(matrix)


def layer_positions(image, label: int) -> np.ndarray:
    """(N, 3) lattice coordinates i, j, k of the voxels equal to ``label``, sorted."""
    extent = image.GetExtent()
    if extent[0] > extent[1] or image.GetPointData().GetScalars() is None:
        return np.zeros((0, 3), np.int64)
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape)
    k, j, i = np.nonzero(values == label)
    positions = np.stack([i + extent[0], j + extent[2], k + extent[4]], axis=1)
    return positions[np.lexsort(positions.T[::-1])]


@dataclass
class Fingerprint:
    name: str
    color: Tuple[float, ...]
    lattice: np.ndarray
    positions: np.ndarray

    def __eq__(self, other) -> bool:
        return (self.name == other.name and np.allclose(self.color, other.color)
                and (len(self.positions) == 0 or np.allclose(self.lattice, other.lattice, atol=1e-9))
                and np.array_equal(self.positions, other.positions))


def fingerprint(segmentation, segment_id: str) -> Fingerprint:
    """Name, colour and exact voxels of a segment on its own layer's lattice (padding of the layer does not count)."""
    segment = segmentation.GetSegment(segment_id)
    image = segment.GetRepresentation(BINARY)
    return Fingerprint(segment.GetName(), tuple(segment.GetColor()), layer_matrix(image),
                       layer_positions(image, segment.GetLabelValue()))


def fingerprints(segmentation, ids) -> Dict[str, Fingerprint]:
    return {segment_id: fingerprint(segmentation, segment_id) for segment_id in ids}


def as_labelmaps(segmentation_node) -> slicer.vtkSegmentation:
    """A copy of the segmentation converted to binary labelmaps, the way Slicer converts it."""
    copy = slicer.vtkSegmentation()
    copy.DeepCopy(segmentation_node.GetSegmentation())
    if copy.GetSourceRepresentationName() != BINARY:
        copy.CreateRepresentation(BINARY, True)
    return copy


@dataclass
class Layout:
    name: str
    node: object  # vtkMRMLSegmentationNode
    target_id: str
    neighbour_ids: List[str]
    lattice: np.ndarray  # the lattice user segments were painted on (segmentation frame)


def _serialized_geometry(image_to_frame: np.ndarray, dimensions) -> str:
    image = vtk.vtkImageData()
    image.SetDimensions(*dimensions)
    return slicer.vtkSegmentationConverter.SerializeImageGeometry(ss.vtk_matrix(image_to_frame), image)


def _lattice_for(layout: str, volume_frame: np.ndarray, size) -> Tuple[np.ndarray, Tuple[int, int, int]]:
    scale = {"finer": 0.5, "coarser": 2.0}.get(layout, 1.0)
    lattice = volume_frame.copy()
    lattice[:3, :3] = volume_frame[:3, :3] * scale
    dims = tuple(int(np.ceil(n / scale)) for n in size)
    if layout == "shifted":
        lattice[:3, 3] = volume_frame[:3, 3] + volume_frame[:3, :3] @ np.array([0.3, -0.3, 0.3])
    elif scale < 1.0:
        # Voxel faces of both lattices meet at the volume's first corner, as Slicer's oversampling does.
        lattice[:3, 3] = volume_frame[:3, :3] @ (np.full(3, -0.5) + 0.5 * scale) + volume_frame[:3, 3]
    # (coarser: every other voxel centre of the volume is a centre of the lattice, so no voxel is a tie)
    return lattice, dims


def on_lattice(mask_on_volume: np.ndarray, volume_frame: np.ndarray, lattice: np.ndarray, dims) -> np.ndarray:
    """A volume-grid mask sampled (nearest neighbour) at the centres of a lattice's voxels 0..dims-1."""
    k, j, i = np.indices(tuple(reversed(dims)))
    points = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    volume_index = np.floor((np.linalg.inv(volume_frame) @ lattice @ points)[:3] + 0.5).astype(int)
    shape = mask_on_volume.shape
    inside = ((volume_index >= 0) & (volume_index < np.array([shape[2], shape[1], shape[0]])[:, None])).all(axis=0)
    values = np.zeros(i.size, bool)
    values[inside] = mask_on_volume[volume_index[2, inside], volume_index[1, inside], volume_index[0, inside]]
    return values.reshape(tuple(reversed(dims)))


def build(harness, volume_node, layout: str, target_mask, neighbour_masks, names=("liver", "lesion", "vessel"),
          other_transform=None) -> Layout:
    """A segmentation with the target and its neighbours arranged as ``layout`` says (masks on the volume grid)."""
    transform = other_transform if layout == "other_transform" else volume_node.GetParentTransformNode()
    node = ss.new_segmentation(harness, volume_node, transform_node=transform)
    segmentation = node.GetSegmentation()
    volume_frame = ss.volume_frame(volume_node, node)
    size = volume_node.GetImageData().GetDimensions()
    lattice, dims = volume_frame, size
    if layout in GRID_LAYOUTS:
        lattice, dims = _lattice_for(layout, volume_frame, size)
        segmentation.SetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), _serialized_geometry(lattice, dims))
    masks = [target_mask] + list(neighbour_masks)
    colors = [(0.8, 0.5, 0.4), (0.2, 0.7, 0.3), (0.3, 0.3, 0.9)]
    order = list(range(len(masks)))
    if layout == "shared_middle":
        order = [1, 0, 2]
    elif layout == "shared_last":
        order = [1, 2, 0]
    ids: Dict[int, str] = {}
    for index in order:
        ids[index] = segmentation.AddEmptySegment("", names[index], list(colors[index]))
        mask = masks[index] if layout not in GRID_LAYOUTS else on_lattice(masks[index], volume_frame, lattice, dims)
        if mask.any():
            ss.paint_segment(node, ids[index], mask, lattice)
    if layout in SHARED_LAYOUTS or layout in GRID_LAYOUTS:
        segmentation.CollapseBinaryLabelmaps(True)  # one layer, values 1, 2, 3 as Slicer keeps them
        assert segmentation.GetNumberOfLayers() == 1
    if layout == "closed_surface":
        node.CreateClosedSurfaceRepresentation()
        node.SetSourceRepresentationToClosedSurface()
        assert segmentation.GetSourceRepresentationName() == SURFACE
    return Layout(layout, node, ids[0], [ids[n] for n in range(1, len(masks))], lattice)


def expected_target(before: Fingerprint, result_on_volume: np.ndarray, region_on_volume: np.ndarray,
                    volume_frame: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """Sorted lattice positions the target should hold: the result inside the region, its old voxels elsewhere."""
    to_volume = np.linalg.inv(volume_frame) @ lattice
    shape = result_on_volume.shape
    # Every lattice voxel whose centre can fall inside the volume, plus the target's old voxels.
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, shape[2] - 0.5) for j in (-0.5, shape[1] - 0.5)
                        for k in (-0.5, shape[0] - 0.5)]).T
    hull = np.linalg.inv(to_volume) @ corners
    low, high = np.floor(hull[:3].min(axis=1)).astype(int) - 1, np.ceil(hull[:3].max(axis=1)).astype(int) + 1
    i, j, k = np.meshgrid(*[np.arange(low[a], high[a] + 1) for a in range(3)], indexing="ij")
    points = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1)
    index = np.floor((to_volume @ np.c_[points, np.ones(len(points))].T)[:3] + 0.5).astype(int).T
    inside = ((index >= 0) & (index < np.array([shape[2], shape[1], shape[0]]))).all(axis=1)
    in_region = np.zeros(len(points), bool)
    member = np.zeros(len(points), bool)
    rows = index[inside]
    in_region[inside] = region_on_volume[rows[:, 2], rows[:, 1], rows[:, 0]]
    member[inside] = result_on_volume[rows[:, 2], rows[:, 1], rows[:, 0]]
    old_dense = np.zeros(tuple(high - low + 1), bool)  # indexed [i, j, k] like ``points``
    in_hull = ((before.positions >= low) & (before.positions <= high)).all(axis=1)
    shifted = before.positions[in_hull] - low
    old_dense[shifted[:, 0], shifted[:, 1], shifted[:, 2]] = True
    keep_old = old_dense.ravel() & ~in_region
    chosen = np.concatenate([points[(in_region & member) | keep_old], before.positions[~in_hull]])
    return chosen[np.lexsort(chosen.T[::-1])]


def region_mask(shape, crop: Optional[list], slice_k: Optional[int] = None) -> np.ndarray:
    """The volume-grid region an edit may change: the crop box (inclusive ends) or everything; one slice for 2D."""
    mask = np.zeros(shape, bool)
    if crop is None:
        mask[...] = True
    else:
        (i0, i1), (j0, j1), (k0, k1) = crop
        mask[max(k0, 0):k1 + 1, max(j0, 0):j1 + 1, max(i0, 0):i1 + 1] = True
    if slice_k is not None:
        only = np.zeros(shape, bool)
        only[slice_k] = True
        mask &= only
    return mask
